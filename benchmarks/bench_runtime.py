"""Backbone feature extraction in every runtime, side by side in one process, with a pause between runtimes.

Exports the model's backbone to ONNX in a temporary copy of the model directory (the model itself is left as
it is; ``--compiled`` also builds the AOTInductor package there, a minute or more), then extracts the per-clip
features of one decoded dive with: the training form of the I3D (what served before the inference form), the
served eager form, ONNX Runtime and, if built, the compiled package. The runtimes take turns, and each timed
call follows a 0.3 s pause: ONNX Runtime's and oneDNN's thread pools keep spinning for a while after a call
returns, and without the pause the runtime timed next pays for them (an earlier version of this script timed
torch right after onnxruntime and so reported onnxruntime 1.5 x faster on the demo; with the pause torch was
the faster). Reports min and median seconds per video, ratios and the largest feature difference::

    .venv/bin/python benchmarks/bench_runtime.py [--model DIR] [--repeats 7] [--compiled]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch
from common import side_by_side

from models.backbone_runtime import load_backbone
from models.feature_extractor import FeatureExtractor
from models.model_dir import ModelConfig
from models.pretrained import DEMO_MODEL_DIR
from training.export_onnx import export_onnx
from training.synth.generate import render_dive_video
from video.decode import decode_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEMO_MODEL_DIR)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compiled", action="store_true", help="also build and time the AOTInductor package")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        shutil.copytree(args.model, model_dir, ignore=shutil.ignore_patterns("bank", "report", "runtime.json*"))
        record = export_onnx(model_dir)
        if args.compiled:
            from training.runtimes import build_and_measure

            build_and_measure(model_dir)
        reference = FeatureExtractor.from_model_dir(model_dir, runtime="torch")
        backbones = {"training_form": reference.backbone, "torch": reference.engine}
        for runtime in ("onnx", "compiled") if args.compiled else ("onnx",):
            backbones[runtime] = load_backbone(runtime, model_dir, ModelConfig.load(model_dir), reference.backbone)
        video = render_dive_video(Path(tmp) / "dive.mp4", seconds=4.0, width=854, height=480, seed=11)
        decoded = decode_video(video, reference.preprocessing)
        clips = reference.preprocessing.normalize(decoded.frames[None])

        def features(backbone) -> torch.Tensor:
            with torch.inference_mode():
                return backbone.extract_clip_features(clips, reference.clips)

        outputs = {name: features(backbone) for name, backbone in backbones.items()}
        timings = side_by_side({name: (lambda b=b: features(b)) for name, b in backbones.items()}, args.repeats)

    print(f"model {args.model}: clips {reference.clips.num_clips} x {reference.clips.length} frames"
          f"{' + mirror' if reference.clips.mirror else ''}, crop {reference.preprocessing.crop}, "
          f"{torch.get_num_threads()} torch threads, {args.repeats} rounds, 0.3 s pause before each timed call")
    print(f"ONNX export parity: max abs diff {record.validation.max_abs_diff:.2g}")
    for name, timing in timings.items():
        difference = (outputs[name] - outputs["training_form"]).abs().max().item()
        print(f"{name:>13}: {timing['median_s'] * 1e3:8.1f} ms per video (min {timing['min_s'] * 1e3:.1f}); "
              f"training form / this: {timings['training_form']['median_s'] / timing['median_s']:.2f} (median), "
              f"max |feature difference| {difference:.2g}")


if __name__ == "__main__":
    main()
