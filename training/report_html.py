"""A self-contained HTML report of an evaluation: the numbers and the plots a person looks at.

One file, no external resources: plots are PNGs drawn with matplotlib and inlined as base64. From an
evaluation's JSON form (``evaluation.json``, :class:`training.evaluate.Evaluation`):

- the metrics: Spearman's rho and relative L2 (x100, on the set's own min-max range) on the final score
  and on execution (final / difficulty), the difficulty-only baseline, 90% interval coverage;
- predicted against true, final score and execution;
- the error by difficulty degree (predicted - true final score);
- interval coverage (share of true scores inside the 90% interval), for the whole set and per degree;
- vote spread against absolute error (does a wide spread of the exemplars' votes warn of a large error?);
- TPT's temporal parts for a few dives, when the predictions carry them;
- the fault read-out on synthetic sets.

``python -m training.report_html EVALUATION_JSON [--out REPORT_HTML]`` rebuilds a report from a saved
evaluation (``aqa train`` and ``aqa eval --out`` write one beside their ``evaluation.json``).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from training.metrics import spearman

REPORT_HTML = "report.html"
TARGET_COVERAGE = 0.9
TPT_DIVES_SHOWN = 6
MAX_DIFFICULTY_GROUPS = 15

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; color: #1d2733; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; } th, td { padding: 4px 10px; border-bottom: 1px solid #d5dbe3; }
th { text-align: left; background: #f1f4f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0.5em 0 1.5em; } figcaption, .note { color: #4a5868; font-size: 0.92em; max-width: 80ch; }
img { max-width: 100%; height: auto; }
"""


def write_html_report(evaluation: dict[str, Any], path: Path, title: str) -> Path:
    """Write the report of ``evaluation`` (the JSON form of an Evaluation) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(evaluation, title), encoding="utf-8")
    return path


def render_report(evaluation: dict[str, Any], title: str) -> str:
    rows = evaluation["predictions"]
    if not rows:
        raise ValueError("the evaluation has no predictions to report on")
    table = PredictionTable(rows)
    sections = [
        f"<h1>{_e(title)}</h1>",
        (f"<p class=note>{len(rows)} dives the model never saw. Spearman's rho ranks: 1 = the model orders the dives "
        "exactly as the judges did. Relative L2 (x100) measures the size of the errors: the mean squared error over "
        "the square of the set's score range, times 100 (0 = exact). Execution is the final score divided by the "
        "difficulty degree: difficulty alone already ranks final scores well (the difficulty-only row), execution "
        "is what the model must read from the video.</p>"),
        _metrics_table(evaluation),
        _figure(lambda: _scatter_plot(table, evaluation), "Predicted against true. The dashed line is a perfect "
                "prediction."),
    ]
    if table.has_difficulty:
        sections += [
            "<h2>Error by difficulty degree</h2>",
            _figure(lambda: _error_by_difficulty_plot(table), "Predicted minus true final score per difficulty "
                    "degree (boxes: quartiles; whiskers: 1.5 x the quartile range; n = dives)."),
        ]
    sections += [
        "<h2>Interval coverage</h2>",
        f"<p>{table.coverage:.1%} of the true scores lie inside their 90% interval (target {TARGET_COVERAGE:.0%}).</p>",
    ]
    if table.has_difficulty:
        sections += [_figure(lambda: _coverage_plot(table), "Share of true scores inside the 90% interval per "
                             "difficulty degree; the dashed line is the 90% target, the dotted one the whole set."),
                     _coverage_table(table)]
    rho = spearman(table.spread, np.abs(table.error)) if len(rows) > 2 and np.ptp(table.spread) > 0 else float("nan")
    sections += [
        "<h2>Vote spread and error</h2>",
        (f"<p>Spearman's rho between the spread of the exemplars' votes and the absolute error: {_f(rho, 3)}. "
        "A positive value means a wide spread warns of a larger error.</p>"),
        _figure(lambda: _spread_plot(table), "Each dot is a dive; the line is the mean absolute error per fifth of "
                "the dives ordered by spread."),
    ]
    with_parts = [row for row in rows if row.get("tpt_parts")][:TPT_DIVES_SHOWN]
    if with_parts:
        sections += [
            "<h2>TPT's temporal parts</h2>",
            _figure(lambda: _tpt_parts_plot(with_parts), "Where each of TPT's learned parts attends, for the first "
                    f"{len(with_parts)} dives: the central span holding most of the part's attention, over the frames "
                    "the model read (0 = first sampled frame, 1 = last); the tick marks its centre."),
        ]
    readout = evaluation.get("synthetic_readout")
    if readout:
        sections.append(_readout_table(readout))
    body = "\n".join(sections)
    return (f"<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{STYLE}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


class PredictionTable:
    """The per-dive predictions as arrays; execution where every dive has its difficulty degree."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.true = np.array([r["true_final"] for r in rows], float)
        self.pred = np.array([r["pred_final"] for r in rows], float)
        self.error = self.pred - self.true
        self.low = np.array([r["interval_low"] for r in rows], float)
        self.high = np.array([r["interval_high"] for r in rows], float)
        self.inside = (self.low <= self.true) & (self.true <= self.high)
        self.coverage = float(self.inside.mean())
        self.spread = np.array([r.get("vote_spread") or 0.0 for r in rows], float)
        self.has_difficulty = all(r.get("difficulty") for r in rows)
        if self.has_difficulty:
            self.difficulty = np.array([r["difficulty"] for r in rows], float)
            used = np.array([r.get("difficulty_used") or r["difficulty"] for r in rows], float)
            self.true_execution = self.true / self.difficulty
            self.pred_execution = self.pred / used
            self.groups = difficulty_groups(self.difficulty)


def difficulty_groups(difficulty: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(label, mask) per difficulty degree (to 0.1), or per 0.5-wide range when there are too many degrees."""
    degrees = np.round(difficulty, 1)
    values = np.unique(degrees)
    if len(values) <= MAX_DIFFICULTY_GROUPS:
        return [(f"{v:.1f}", degrees == v) for v in values]
    edges = np.arange(np.floor(degrees.min() * 2) / 2, degrees.max() + 0.5, 0.5)
    groups = []
    for low in edges:
        mask = (degrees >= low) & (degrees < low + 0.5)
        if mask.any():
            groups.append((f"{low:.1f}-{low + 0.5:.1f}", mask))
    return groups


def _metrics_table(evaluation: dict[str, Any]) -> str:
    final, execution = evaluation["final"], evaluation.get("execution")
    rows = [("final score", final)] + ([("execution (final / difficulty)", execution)] if execution else [])
    lines = ["<table><tr><th>target</th><th>Spearman's rho</th><th>relative L2 x100</th></tr>"]
    for name, metrics in rows:
        lines.append(f"<tr><td>{name}</td><td class=num>{_f(metrics['spearman'], 3)}</td>"
                     f"<td class=num>{_f(metrics['relative_l2_x100'], 2)}</td></tr>")
    if evaluation.get("difficulty_only_spearman") is not None:
        lines.append(f"<tr><td>difficulty only (baseline)</td><td class=num>"
                     f"{_f(evaluation['difficulty_only_spearman'], 3)}</td><td></td></tr>")
    lines.append(f"<tr><td>90% interval coverage</td><td class=num colspan=2>"
                 f"{_f(evaluation['interval_coverage'], 3)}</td></tr></table>")
    return "\n".join(lines)


def _coverage_table(table: PredictionTable) -> str:
    lines = ["<table><tr><th>difficulty</th><th>dives</th><th>coverage</th><th>mean |error|</th></tr>"]
    for label, mask in table.groups:
        lines.append(f"<tr><td>{label}</td><td class=num>{int(mask.sum())}</td>"
                     f"<td class=num>{table.inside[mask].mean():.2f}</td>"
                     f"<td class=num>{np.abs(table.error[mask]).mean():.2f}</td></tr>")
    lines.append(f"<tr><th>all</th><th class=num>{len(table.true)}</th><th class=num>{table.coverage:.2f}</th>"
                 f"<th class=num>{np.abs(table.error).mean():.2f}</th></tr></table>")
    return "\n".join(lines)


def _readout_table(readout: dict[str, Any]) -> str:
    ceiling = readout.get("ceiling") or {}
    faults = readout.get("fault_coefficients") or {}
    lines = ["<h2>What it reads of the synthetic faults</h2>",
             ("<p class=note>How much of each fault's deduction the predicted score follows (1 = the full point, "
             "0 = unseen), +- one standard error; the ceiling is the rho of the noise-free panel mean against the "
             "judges' labels.</p><table><tr><th>fault</th><th>points per point</th></tr>")]
    for name, value in faults.items():
        if isinstance(value, dict):
            text = f"{_f(value.get('coefficient'), 2)} +- {_f(value.get('standard_error'), 2)}"
        else:
            text = _f(value, 2)
        lines.append(f"<tr><td>{_e(name.replace('_', ' '))}</td><td class=num>{text}</td></tr>")
    for name, value in ceiling.items():
        lines.append(f"<tr><td>ceiling: {_e(name.replace('_', ' '))}</td><td class=num>{_f(value, 3)}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _scatter_plot(table: PredictionTable, evaluation: dict[str, Any]):
    panels = [("final score", table.true, table.pred, evaluation["final"])]
    if table.has_difficulty and evaluation.get("execution"):
        panels.append(("execution (final / difficulty)", table.true_execution, table.pred_execution,
                       evaluation["execution"]))
    fig, axes = _plt().subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    for ax, (name, true, pred, metrics) in zip(axes[0], panels):
        ax.scatter(true, pred, s=9, alpha=0.5, color="#2f6db5")
        limits = [min(true.min(), pred.min()), max(true.max(), pred.max())]
        ax.plot(limits, limits, "k--", lw=1)
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.set_title(f"{name}\nrho = {metrics['spearman']:.3f}, relative L2 x100 = {metrics['relative_l2_x100']:.2f}")
    return fig


def _error_by_difficulty_plot(table: PredictionTable):
    labels = [label for label, _ in table.groups]
    errors = [table.error[mask] for _, mask in table.groups]
    fig, ax = _plt().subplots(figsize=(max(6.0, 0.6 * len(labels) + 2), 4.5))
    ax.boxplot(errors, tick_labels=labels, showfliers=False)
    ax.axhline(0, color="k", lw=0.8, ls="--")
    for x, values in enumerate(errors, start=1):
        ax.text(x, ax.get_ylim()[1], f"n={len(values)}", ha="center", va="bottom", fontsize=7)
    ax.set_xlabel("difficulty degree")
    ax.set_ylabel("predicted - true final score")
    fig.tight_layout()
    return fig


def _coverage_plot(table: PredictionTable):
    labels = [label for label, _ in table.groups]
    coverage = [table.inside[mask].mean() for _, mask in table.groups]
    fig, ax = _plt().subplots(figsize=(max(6.0, 0.6 * len(labels) + 2), 4))
    bars = ax.bar(labels, coverage, color="#5b9bd5")
    for bar, (_, mask) in zip(bars, table.groups):
        ax.text(bar.get_x() + bar.get_width() / 2, 0.03, f"n={int(mask.sum())}", ha="center", fontsize=8,
                color="white")
    ax.axhline(TARGET_COVERAGE, color="k", ls="--", lw=1, label="90% target")
    ax.axhline(table.coverage, color="#c0392b", ls=":", lw=1.5, label=f"whole set {table.coverage:.2f}")
    ax.set_ylim(0, 1.2)
    ax.set_xlabel("difficulty degree")
    ax.set_ylabel("share inside the 90% interval")
    ax.legend(loc="upper left", ncol=2)
    fig.tight_layout()
    return fig


def _spread_plot(table: PredictionTable):
    absolute = np.abs(table.error)
    fig, ax = _plt().subplots(figsize=(6, 4.5))
    ax.scatter(table.spread, absolute, s=9, alpha=0.5, color="#2f6db5")
    order = np.argsort(table.spread)
    fifths = [part for part in np.array_split(order, 5) if len(part)]
    ax.plot([table.spread[p].mean() for p in fifths], [absolute[p].mean() for p in fifths], "o-", color="#c0392b",
            label="mean per fifth")
    ax.set_xlabel("spread of the exemplars' votes (standard deviation, score points)")
    ax.set_ylabel("|predicted - true| final score")
    ax.legend()
    fig.tight_layout()
    return fig


def _tpt_parts_plot(rows: list[dict[str, Any]]):
    plt = _plt()
    colours = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(rows) + 1.4))
    num_parts = max(len(row["tpt_parts"]) for row in rows)
    for y, row in enumerate(rows):
        parts = row["tpt_parts"]
        for k, part in enumerate(parts):
            low, high = part["span"]
            offset = (k - (len(parts) - 1) / 2) * 0.8 / max(len(parts), 1)
            ax.plot([low, high], [y + offset] * 2, lw=5, solid_capstyle="butt", color=colours[k % len(colours)],
                    label=f"part {part['part'] + 1}" if y == 0 else None)
            ax.plot([part["centre"]] * 2, [y + offset - 0.06, y + offset + 0.06], color="k", lw=1)
    ax.set_yticks(range(len(rows)), [Path(str(row["key"])).name for row in rows])
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("position in the frames the model read")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=min(num_parts, 8), fontsize=8)
    fig.tight_layout()
    return fig


def _figure(draw: Callable[[], Any], caption: str) -> str:
    plt = _plt()
    fig = draw()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f"<figure><img src='data:image/png;base64,{data}' alt='{_e(caption)}'>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _f(value: float | None, digits: int) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the HTML report of a saved evaluation.json.")
    parser.add_argument("evaluation", type=Path, help="an evaluation.json written by aqa train or aqa eval --out")
    parser.add_argument("--out", type=Path, help=f"where to write it (default: {REPORT_HTML} beside the JSON)")
    parser.add_argument("--title", help="the report's title (default: the folder's name)")
    args = parser.parse_args(argv)
    evaluation = json.loads(args.evaluation.read_text())
    out = args.out or args.evaluation.with_name(REPORT_HTML)
    title = args.title or f"Evaluation: {args.evaluation.resolve().parent.parent.name}"
    print(write_html_report(evaluation, out, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
