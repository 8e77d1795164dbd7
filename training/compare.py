"""Compare several model directories on the same labelled dives: one table, one plot.

Every model scores every record of the dataset (its own backbone's features, from the feature cache;
a record never votes for itself), and the table reports the field's metrics on the final score AND on
execution (final / difficulty), as ``training.evaluate`` computes them. Inference time is measured in
the same run, on the same first ``timed_videos`` records for every model: decode + backbone + head per
video (``Scorer.score``'s stages). The models take turns video by video after one untimed warm-up round,
so machine load and warm-up affect them alike; the table gives the median seconds per video.

Writes ``comparison.md`` (the table), ``comparison.json`` (rows + settings), ``comparison.png`` (bars) and
each model's ``<label>/evaluation.json`` + ``scatter.png`` to the output folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.scorer import QueryLabels, Scorer
from training.datasets.records import DiveRecord
from training.evaluate import Evaluation, evaluate_scorer
from training.feature_cache import FeatureCache, decode_record
from training.pipeline import load_dataset

COMPARISON_MD = "comparison.md"
COMPARISON_JSON = "comparison.json"
COMPARISON_PNG = "comparison.png"


@dataclass
class ComparisonRow:
    """One model's results on the shared records."""

    model: str
    model_dir: str
    model_id: str
    head: str
    num_dives: int
    final_spearman: float
    final_relative_l2_x100: float
    execution_spearman: float | None
    execution_relative_l2_x100: float | None
    seconds_per_video: float
    timed_videos: int


def compare_models(model_dirs: list[Path], dataset: Path, cache_dir: Path, out: Path, use_difficulty: bool = True,
                   timed_videos: int = 10, progress: bool = True) -> list[ComparisonRow]:
    """Evaluate each model on ``dataset`` and write the comparison to ``out``; see the module docstring."""
    if not model_dirs:
        raise ValueError("compare_models needs at least one model directory")
    if timed_videos < 1:
        raise ValueError(f"timed_videos must be >= 1, got {timed_videos}")
    records = load_dataset(dataset)
    labels = _labels(model_dirs)
    scorers = [Scorer.from_dir(model_dir) for model_dir in model_dirs]
    evaluations = []
    for label, scorer in zip(labels, scorers):
        cache = FeatureCache(cache_dir, scorer.fingerprint, scorer.preprocessing, scorer.extract_features)
        evaluation = evaluate_scorer(scorer, records, cache.get_many(records, progress=progress),
                                     scorer.config.labels.final_score_range, use_difficulty=use_difficulty)
        evaluation.write(Path(out) / label, f"{scorer.config.model_id} on {Path(dataset).name}")
        evaluations.append(evaluation)
    timed = records[:timed_videos]
    seconds = _seconds_per_video(scorers, timed, use_difficulty)
    rows = [_row(*row, len(timed)) for row in zip(labels, model_dirs, scorers, evaluations, seconds)]
    write_comparison(rows, Path(out), {"dataset": str(dataset), "use_difficulty": use_difficulty})
    return rows


def _labels(model_dirs: list[Path]) -> list[str]:
    """Folder names, made unique with a numeric suffix."""
    labels: list[str] = []
    for path in model_dirs:
        name, n = Path(path).name or "model", 2
        label = name
        while label in labels:
            label, n = f"{name}-{n}", n + 1
        labels.append(label)
    return labels


def _seconds_per_video(scorers: list[Scorer], records: list[DiveRecord], use_difficulty: bool) -> list[float]:
    """Median wall time of decode + features + head per record for each scorer, the scorers taking turns."""
    def seconds(scorer: Scorer, record: DiveRecord) -> float:
        started = time.perf_counter()
        labels = QueryLabels(difficulty=record.difficulty if use_difficulty else None,
                             action_class=record.action_class)
        features = scorer.extract_features(decode_record(record, scorer.preprocessing))
        scorer.score_features(features, labels, exclude_ids=frozenset({record.key}))
        return time.perf_counter() - started

    for scorer in scorers:
        seconds(scorer, records[0])  # warm-up
    times = [[seconds(scorer, record) for scorer in scorers] for record in records]
    return [float(t) for t in np.median(np.array(times), axis=0)]


def _row(label: str, model_dir: Path, scorer: Scorer, evaluation: Evaluation, seconds: float,
         timed: int) -> ComparisonRow:
    execution = evaluation.execution or {}
    return ComparisonRow(
        model=label, model_dir=str(model_dir), model_id=scorer.config.model_id, head=scorer.config.head,
        num_dives=evaluation.num_dives, final_spearman=evaluation.final["spearman"],
        final_relative_l2_x100=evaluation.final["relative_l2_x100"],
        execution_spearman=execution.get("spearman"), execution_relative_l2_x100=execution.get("relative_l2_x100"),
        seconds_per_video=seconds, timed_videos=timed,
    )


def write_comparison(rows: list[ComparisonRow], out: Path, settings: dict[str, Any]) -> None:
    """``comparison.md``, ``comparison.json`` and ``comparison.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / COMPARISON_JSON).write_text(json.dumps({**settings, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    (out / COMPARISON_MD).write_text(markdown_table(rows, settings) + "\n")
    plot_comparison(rows, out / COMPARISON_PNG)


def markdown_table(rows: list[ComparisonRow], settings: dict[str, Any]) -> str:
    def number(value: float | None, digits: int) -> str:
        return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"

    difficulty = "given" if settings["use_difficulty"] else "estimated"
    lines = [
        (f"Dataset: `{settings['dataset']}` ({rows[0].num_dives} dives; true difficulty {difficulty}). R-l2 x 100; "
         f"seconds per video = decode + backbone + head, median over the first {rows[0].timed_videos} dives."),
        "",
        "| model | head | Spearman (final) | R-l2 (final) | Spearman (execution) | R-l2 (execution) | s / video |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.head} | {number(r.final_spearman, 4)} | {number(r.final_relative_l2_x100, 3)} | "
            f"{number(r.execution_spearman, 4)} | {number(r.execution_relative_l2_x100, 3)} | "
            f"{number(r.seconds_per_video, 3)} |"
        )
    return "\n".join(lines)


def plot_comparison(rows: list[ComparisonRow], path: Path) -> None:
    """Three bar panels: Spearman (final, execution), R-l2 x 100 (final, execution), seconds per video."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def values(name: str) -> np.ndarray:
        return np.array([np.nan if getattr(r, name) is None else getattr(r, name) for r in rows], float)

    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, 3, figsize=(5 + 2.2 * len(rows), 4.5))
    for ax, metric, title in ((axes[0], "spearman", "Spearman rho"), (axes[1], "relative_l2_x100", "R-l2 x 100")):
        ax.bar(x - 0.2, values(f"final_{metric}"), 0.4, label="final score")
        ax.bar(x + 0.2, values(f"execution_{metric}"), 0.4, label="execution")
        ax.set_title(title)
        ax.legend(fontsize=8)
    axes[2].bar(x, values("seconds_per_video"), 0.5, color="grey")
    axes[2].set_title("seconds per video")
    for ax in axes:
        ax.set_xticks(x, [f"{r.model}\n({r.head})" for r in rows], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
