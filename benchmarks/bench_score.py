"""Time `aqa score` on a 4-second 854x480 H.264 dive, stage by stage, and the bank's saving.

Run from the repository root::

    .venv/bin/python benchmarks/bench_score.py [--model DIR] [--repeats 5]

Measures, in one process and one run (so the ratios compare like with like on a shared machine):

- model load (config, weights, bank), once;
- ``Scorer.score`` split into decode / features / voting (median of ``--repeats``);
- the reference protocol's cost for the same query: CoRe's test loop decodes and runs the backbone on
  each of the M exemplars again for every query; we read exemplar features from the bank. The ratio
  (reference / ours) is what the feature bank saves;
- the whole ``aqa score`` command as a user runs it (a fresh process: imports + load + score).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.pretrained import DEMO_MODEL_DIR
from models.scorer import QueryLabels, Scorer
from training.synth.generate import render_dive_video
from video.decode import decode_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL_DIR)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        video = render_dive_video(Path(tmp) / "dive_4s_480p.mp4", seconds=4.0, width=854, height=480, seed=11)
        t = time.perf_counter()
        scorer = Scorer.from_dir(args.model)
        load = time.perf_counter() - t
        labels = QueryLabels(difficulty=3.0)
        scorer.score(video, labels)  # warm-up
        stages: dict[str, list[float]] = {"decode": [], "features": [], "voting": [], "total": []}
        reference: list[float] = []
        for _ in range(args.repeats):
            result = scorer.score(video, labels)
            for stage, values in stages.items():
                values.append(result.timings[stage])
            # The reference test loop: the query's features plus, for each exemplar, decode + backbone again.
            t = time.perf_counter()
            scorer.score(video, labels)
            for _ in result.votes:
                scorer.extract_features(decode_video(video, scorer.preprocessing))
            reference.append(time.perf_counter() - t)

        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "aqa.cli", "score", str(video), "--model", str(args.model),
                        "--difficulty", "3.0"], check=True, capture_output=True)
        cli = time.perf_counter() - t

    median = {stage: statistics.median(values) for stage, values in stages.items()}
    numbers = {
        "video": "4 s, 854x480, 25 fps, H.264 (synthetic dive)",
        "model": scorer.config.model_id, "profile_input": scorer.preprocessing.to_dict(),
        "model_load_s": round(load, 3),
        **{f"{stage}_s": round(value, 3) for stage, value in median.items()},
        "reference_protocol_s": round(statistics.median(reference), 3),
        "bank_speedup": round(statistics.median(reference) / median["total"], 1),
        "exemplars": len(result.votes),
        "aqa_score_command_s": round(cli, 2),
        "repeats": args.repeats,
    }
    for key, value in numbers.items():
        print(f"{key:24} {value}")
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
