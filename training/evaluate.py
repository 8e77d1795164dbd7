"""Evaluate a scorer on labelled dives it never saw: the field's metrics on final score AND execution.

Difficulty alone ranks final scores well, so a final-score Spearman alone flatters a model; every
evaluation also reports execution (final / difficulty) metrics and the difficulty-only baseline.

Relative L2 (``relative_l2_x100``) is the papers' convention: errors relative to the evaluated set's own
range of true scores (of final scores, and of execution scores for execution), x 100
(:func:`training.metrics.relative_l2_test_range`). ``relative_l2_x100_label_range`` is the figure this
project reported before: errors relative to the whole label range (0 to the dataset's highest final score;
0-30 for execution), which is wider than a test set's range and so reads smaller; it is not comparable with
published numbers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.clips import ClipProtocol
from models.scorer import QueryLabels, Scorer
from training.datasets.records import DiveRecord
from training.metrics import (
    fisher_z_average,
    per_class_spearman,
    relative_l2,
    relative_l2_test_range,
    spearman,
)
from training.report_html import REPORT_HTML, write_html_report
from training.synth.readout import MIN_DIVES, fault_readout, read_factors

EXECUTION_LABEL_RANGE = (0.0, 30.0)  # three judges of 0..10


@dataclass
class Evaluation:
    num_dives: int
    final: dict[str, float]
    execution: dict[str, float] | None
    difficulty_only_spearman: float | None
    fisher_z_spearman: float | None
    per_class_spearman: dict[str, float]
    interval_coverage: float
    predictions: list[dict[str, Any]] = field(repr=False)
    synthetic_readout: dict[str, Any] | None = None
    """On a synthetic set (``aqa synth``): ceiling and fault read-out, :mod:`training.synth.readout`."""
    familiarity: dict[str, Any] | None = None
    """For a model with a familiarity check: the share of dives flagged unfamiliar and the interval coverage of
    the flagged and the other dives (features only: the input-range checks need the files)."""

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("predictions")
        return data

    def write(self, folder: Path, title: str) -> None:
        """``evaluation.json`` (metrics + per-dive predictions), ``scatter.png`` and ``report.html`` (every plot,
        self-contained: :mod:`training.report_html`)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "evaluation.json").write_text(json.dumps(asdict(self), indent=2) + "\n")
        plot_scatter(self, folder / "scatter.png", title)
        write_html_report(asdict(self), folder / REPORT_HTML, title)


def evaluate_scorer(scorer: Scorer, records: list[DiveRecord], clip_features: torch.Tensor,
                    score_range: tuple[float, float], use_difficulty: bool = True) -> Evaluation:
    """Score each record from its cached per-clip features; the record itself never votes for itself."""
    rows = []
    for record, features in zip(records, clip_features):
        labels = QueryLabels(difficulty=record.difficulty if use_difficulty else None,
                             action_class=record.action_class)
        result = scorer.score_features(features, labels, exclude_ids=frozenset({record.key}))
        row = {
            "key": record.key, "true_final": record.final_score, "pred_final": result.score,
            "difficulty": record.difficulty, "difficulty_used": result.difficulty,
            "action_class": record.action_class, "interval_low": result.interval.low,
            "interval_high": result.interval.high, "vote_spread": result.vote_spread,
            "in_distribution": None if result.familiarity is None else result.familiarity.in_distribution,
        }
        if "parts" in result.evidence:
            row["tpt_parts"] = tpt_parts_in_frames(result.evidence["parts"], scorer.extractor.clips)
        rows.append(row)
    return summarize(rows, score_range)


def tpt_parts_in_frames(parts: list[dict[str, Any]], clips: ClipProtocol) -> list[dict[str, Any]]:
    """TPT's part evidence (clip indices) as positions in the frames the clips read: 0 = the first, 1 = the last."""
    last_frame = max(clips.frames_needed - 1, 1)
    mid = [start + (clips.length - 1) / 2 for start in clips.starts]

    def position(frame: float) -> float:
        return round(float(frame) / last_frame, 4)

    return [
        {"part": part["part"], "centre": position(np.interp(part["centre_clip"], np.arange(len(mid)), mid)),
         "span": [position(clips.starts[part["span_clips"][0]]),
                  position(clips.starts[part["span_clips"][1]] + clips.length - 1)]}
        for part in parts
    ]


def add_synthetic_readout(evaluation: Evaluation, dataset: Path) -> Evaluation:
    """Attach the fault read-out when ``dataset`` (a labels CSV or its folder) is a synthetic set with
    its ``factors.csv`` and the evaluation has execution metrics on enough dives; returns ``evaluation``."""
    folder = Path(dataset) if Path(dataset).is_dir() else Path(dataset).parent
    factors = read_factors(folder)
    if factors is not None and evaluation.execution is not None and evaluation.num_dives >= MIN_DIVES:
        evaluation.synthetic_readout = fault_readout(evaluation.predictions, factors)
    return evaluation


def summarize(rows: list[dict[str, Any]], score_range: tuple[float, float]) -> Evaluation:
    true = np.array([r["true_final"] for r in rows], float)
    pred = np.array([r["pred_final"] for r in rows], float)
    final = _metrics(pred, true, score_range)
    execution = difficulty_only = None
    if all(r["difficulty"] for r in rows):
        difficulty = np.array([r["difficulty"] for r in rows], float)
        used = np.array([r["difficulty_used"] or np.nan for r in rows], float)
        true_exec, pred_exec = true / difficulty, pred / np.where(np.isnan(used), difficulty, used)
        execution = _metrics(pred_exec, true_exec, EXECUTION_LABEL_RANGE)
        difficulty_only = spearman(difficulty, true)
    classes = [r["action_class"] for r in rows]
    per_class = per_class_spearman(pred, true, classes) if any(classes) else {}
    inside = np.array([r["interval_low"] <= r["true_final"] <= r["interval_high"] for r in rows])
    return Evaluation(
        num_dives=len(rows), final=final, execution=execution, difficulty_only_spearman=difficulty_only,
        fisher_z_spearman=fisher_z_average(list(per_class.values())) if per_class else None,
        per_class_spearman=per_class, interval_coverage=float(np.mean(inside)), predictions=rows,
        familiarity=familiarity_rates(rows, inside),
    )


def familiarity_rates(rows: list[dict[str, Any]], inside: np.ndarray) -> dict[str, Any] | None:
    """Flag rate and interval coverage split by the flag (None when the model has no familiarity check)."""
    if any(r.get("in_distribution") is None for r in rows):
        return None
    familiar = np.array([r["in_distribution"] for r in rows], bool)

    def coverage(mask: np.ndarray) -> float | None:
        return float(inside[mask].mean()) if mask.any() else None

    return {"flagged": int((~familiar).sum()), "flag_rate": float((~familiar).mean()),
            "coverage_unflagged": coverage(familiar), "coverage_flagged": coverage(~familiar)}


def _metrics(predicted: np.ndarray, true: np.ndarray, label_range: tuple[float, float]) -> dict[str, float]:
    return {"spearman": spearman(predicted, true),
            "relative_l2_x100": 100 * relative_l2_test_range(predicted, true),
            "relative_l2_x100_label_range": 100 * relative_l2(predicted, true, *label_range)}


def plot_scatter(evaluation: Evaluation, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = evaluation.predictions
    true = np.array([r["true_final"] for r in rows])
    pred = np.array([r["pred_final"] for r in rows])
    panels = [("final score", true, pred, evaluation.final)]
    if evaluation.execution is not None:
        difficulty = np.array([r["difficulty"] for r in rows])
        used = np.array([r["difficulty_used"] or d for r, d in zip(rows, difficulty)])
        panels.append(("execution (final / difficulty)", true / difficulty, pred / used, evaluation.execution))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5))
    for ax, (name, t, p, metrics) in zip(np.atleast_1d(axes), panels):
        ax.scatter(t, p, s=10, alpha=0.6)
        lims = [min(t.min(), p.min()), max(t.max(), p.max())]
        ax.plot(lims, lims, "k--", lw=1)
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.set_title(f"{name}: rho={metrics['spearman']:.3f}, R-l2x100={metrics['relative_l2_x100']:.2f}")
    fig.suptitle(f"{title} (n={len(rows)})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
