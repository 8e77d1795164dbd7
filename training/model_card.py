"""The model card: which data, configuration and code made a model directory, and how well it scores.

Written as ``model_card.json`` (for tools: the API's ``GET /v1/model-card`` serves it) and
``MODEL_CARD.md`` (for people), always from the same dictionary.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from models.model_dir import MODEL_CARD_JSON, MODEL_CARD_MD


def git_commit() -> str:
    """The current commit of the code, with ``-dirty`` when the work tree has changes."""
    try:
        root = Path(__file__).resolve().parents[1]
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def read_card(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MODEL_CARD_JSON
    return json.loads(path.read_text()) if path.is_file() else {}


def write_card(model_dir: Path, card: dict[str, Any]) -> None:
    (model_dir / MODEL_CARD_JSON).write_text(json.dumps(card, indent=2) + "\n")
    (model_dir / MODEL_CARD_MD).write_text(render_markdown(card))


def _metrics_rows(name: str, evaluation: dict[str, Any]) -> list[str]:
    final, execution = evaluation["final"], evaluation.get("execution") or {}
    return [
        (f"| {name} | {evaluation['num_dives']} | {final['spearman']:.4f} | {final['relative_l2_x100']:.3f} | "
        f"{execution.get('spearman', float('nan')):.4f} | {execution.get('relative_l2_x100', float('nan')):.3f} | "
        f"{(evaluation.get('difficulty_only_spearman') or float('nan')):.4f} | "
        f"{evaluation['interval_coverage']:.3f} |")
    ]


def _readout_rows(card: dict[str, Any]) -> list[str]:
    """The fault read-out table of the evaluations on synthetic sets (:mod:`training.synth.readout`)."""
    readouts = {name: e["synthetic_readout"] for name, e in card.get("evaluations", {}).items()
                if e.get("synthetic_readout")}
    if not readouts:
        return []
    faults = list(next(iter(readouts.values()))["fault_coefficients"])
    lines = ["## What it reads of synthetic dives", "",
             ("How much of each fault's deduction the predicted score follows (1 = the full point, 0 = unseen; "
              "least squares, +- one standard error), and the ceiling: the rho of the noise-free panel mean "
              "against the judges' labels."), "",
             f"| evaluation | ceiling final rho | ceiling execution rho | {' | '.join(faults)} |",
             "|---|---|---|" + "---|" * len(faults)]
    for name, readout in readouts.items():
        coefficients = [f"{c['coefficient']:.2f} +- {c['standard_error']:.2f}"
                        for c in readout["fault_coefficients"].values()]
        lines.append(f"| {name} | {readout['ceiling']['final_spearman']:.3f} | "
                     f"{readout['ceiling']['execution_spearman']:.3f} | {' | '.join(coefficients)} |")
    return lines + [""]


def _familiarity_lines(card: dict[str, Any]) -> list[str]:
    """The familiarity check (``exemplar_bank/familiarity.py``): its rule, the training formats, what it measured."""
    familiarity = card.get("familiarity")
    if not familiarity:
        return []
    lines = ["## Familiarity: does a video look like the training dives?", ""]
    if "not_calibrated" in familiarity:
        return lines + [f"Not calibrated ({familiarity['not_calibrated']}): results carry no familiarity.", ""]
    lines += [(f"A video is flagged `in_distribution: false` when the {familiarity['measure']} lies above the "
              f"{familiarity['flag_above_percentile']:g}th percentile of its calibration ({familiarity['calibration']}), "
              "or when its format lies outside the training videos'; its interval then widens to the central 90% "
              "of the bank's scores at its difficulty."), ""]
    inputs = familiarity.get("training_inputs")
    if inputs:
        def span(key: str, digits: int) -> str:
            low, high = f"{inputs[key]['low']:.{digits}f}", f"{inputs[key]['high']:.{digits}f}"
            return low if low == high else f"{low}-{high}"

        lines += [(f"Training videos ({inputs['num_videos']:,}): {span('duration_seconds', 1)} s, {span('fps', 0)} fps, "
                   f"{span('width', 0)} x {span('height', 0)} px, aspect {span('aspect', 2)}."), ""]
    measured = familiarity.get("measured") or {}
    if measured.get("table"):
        lines += [f"Measured by `{measured['command']}` on {measured['date']}:", "", measured["table"], ""]
        if measured.get("extra"):
            lines += [f"--extra {measured['extra']}.", ""]
    return lines


def render_markdown(card: dict[str, Any]) -> str:
    lines = [f"# Model card: {card['model_id']} {card['version']}", "", card.get("summary", ""), ""]
    lines += ["## Quality (data the model never saw)", "",
              ("| evaluation | dives | final rho | final R-l2 x100 | execution rho | execution R-l2 x100 | "
              "difficulty-only rho | 90% interval coverage |"),
              "|---|---|---|---|---|---|---|---|"]
    for name, evaluation in card.get("evaluations", {}).items():
        lines += _metrics_rows(name, evaluation)
    lines += ["", ("Execution = final score / difficulty. The difficulty-only column ranks dives by their "
              "difficulty degree alone: the baseline a final-score rho must beat. R-l2 x100 is the papers' "
              "convention: mean ((predicted - true) / (max - min of the evaluated dives' true scores))^2 x 100, "
              "for final and for execution scores alike; the JSON card also holds `relative_l2_x100_label_range`, "
              "the same errors relative to the whole label range (0 to the highest final score, 0-30 for "
              "execution), which reads smaller and is not comparable with published numbers."), ""]
    lines += _readout_rows(card)
    lines += _familiarity_lines(card)
    lines += ["## Data", "", "```json", json.dumps(card.get("data", {}), indent=2), "```", ""]
    lines += ["## Training", "", "```json", json.dumps(card.get("training", {}), indent=2), "```", ""]
    lines += ["## Code", "", f"git commit: `{card.get('git_commit', 'unknown')}`", ""]
    if card.get("limits"):
        lines += ["## Limits", ""] + [f"- {limit}" for limit in card["limits"]] + [""]
    return "\n".join(lines)
