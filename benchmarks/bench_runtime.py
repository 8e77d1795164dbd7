"""Backbone feature extraction in torch vs onnxruntime, side by side in one process.

Exports the model's backbone to ONNX in a temporary copy of the model directory (the model itself is
left as it is), then extracts the per-clip features of one decoded dive with each runtime, alternating
the two so both see the same machine load. Reports median (min) seconds per video, the ratio
torch / onnx, and the largest feature difference. Run from the repository root::

    .venv/bin/python benchmarks/bench_runtime.py [--model DIR] [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.feature_extractor import FeatureExtractor
from models.pretrained import DEMO_MODEL_DIR
from training.export_onnx import export_onnx
from training.synth.generate import render_dive_video
from video.decode import decode_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEMO_MODEL_DIR)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of both runtimes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        shutil.copytree(args.model, model_dir, ignore=shutil.ignore_patterns("bank", "report"))
        t = time.perf_counter()
        record = export_onnx(model_dir)
        export_seconds = time.perf_counter() - t
        extractors = {
            "torch": FeatureExtractor.from_model_dir(model_dir),
            "onnx": FeatureExtractor.from_model_dir(model_dir, runtime="onnx", onnx_threads=args.threads),
        }
        video = render_dive_video(Path(tmp) / "dive.mp4", seconds=4.0, width=854, height=480, seed=11)
        decoded = decode_video(video, extractors["torch"].preprocessing)
        features = {name: extractor(decoded) for name, extractor in extractors.items()}  # warm-up
        times: dict[str, list[float]] = {name: [] for name in extractors}
        for _ in range(args.repeats):
            for name, extractor in extractors.items():
                t = time.perf_counter()
                extractor(decoded)
                times[name].append(time.perf_counter() - t)

    clips = extractors["torch"].clips
    print(f"model {args.model}: clips {clips.num_clips} x {clips.length} frames, crop "
          f"{extractors['torch'].preprocessing.crop}, {args.threads} threads, {args.repeats} alternating runs")
    print(f"export: {export_seconds:.1f} s, opset {record.opset}, parity max abs diff "
          f"{record.validation.max_abs_diff:.2g} (features up to {record.validation.max_abs_feature:.3g})")
    for name, values in times.items():
        print(f"{name:>5}: {statistics.median(values):.3f} s per video (min {min(values):.3f})")
    ratio = statistics.median(times["torch"]) / statistics.median(times["onnx"])
    difference = (features["torch"] - features["onnx"]).abs().max().item()
    print(f"torch / onnx time ratio: {ratio:.2f}; max |feature difference| on the dive: {difference:.2g}")


if __name__ == "__main__":
    main()
