"""The fast-path table (issue 22): each stage against its baseline, side by side in one run.

Rows (each a function returning a dict of numbers; ``run_all.py`` writes them to RESULTS.md and JSON):

- ``full_i3d``: the Kinetics-size I3D (width 1.0, CoRe's 10 clips x 16 x 224 x 224 per video) in the reference
  piergiaj eager form (``tests/reference_i3d.py``: F.pad copies, BatchNorm, ReLU, contiguous layout), the
  training form before this work (``I3D``, channels-last), the served form (``I3D.fused``), ONNX Runtime and,
  with ``--compiled``, the AOTInductor package; plus the GFLOP/s of one Conv3d alone (the network's costliest,
  Conv3d_2c_3x3: 64 -> 192 channels, 3x3x3, on the 10 clips' 8 x 56 x 56 maps), the peak to compare with.
- ``demo_backbone``: the demo model's backbone per video (one 32-frame 64 x 64 clip and its mirror image) in
  every runtime, and the runtime the product's own measurement (``aqa runtime``) chose.
- ``decode``: a 30 s 1280 x 720 25 fps H.264 dive decoded with the demo's preprocessing (motion window): one
  pass, the former two passes, and the ffmpeg CLI decoding, scaling and converting to RGB the same frames.
- ``batch``: 50 synthetic dives (``aqa synth`` defaults) scored by the demo model: decode alone, compute alone
  (features + voting of the decoded videos, in the pipeline's batches), serial (decode then score, video by
  video) and pipelined (``Scorer.score_stream``, what ``aqa batch`` runs).
- ``selection``: exemplar selection in the demo's bank of 9,000, the former per-row loop against the index.
- ``gpu_on_paper``: the full I3D's FLOPs per video over published GPU throughputs, and NVDEC's decode rate.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from common import MEDIA_DIR, REPO, ratio, side_by_side

from exemplar_bank.bank import ExemplarBank
from exemplar_bank.selection import ExemplarIndex
from models.clips import ClipProtocol
from models.i3d import I3D
from models.pretrained import DEMO_MODEL_DIR
from tests.i3d_layout import reference_layout
from tests.reference_i3d import piergiaj_mixed_5c, random_checkpoint
from tests.test_selection_index import loop_selection

# Published peak throughputs, for the on-paper GPU column (dense, no sparsity).
GPUS = {
    "NVIDIA T4": {"fp32_tflops": 8.1, "fp16_tensor_tflops": 65.0, "nvdec_1080p30_streams": 38,
                  "source": "NVIDIA T4 datasheet (8.1 TFLOPS FP32, 65 TFLOPS FP16 mixed precision; "
                            "'decodes up to 38 full-HD video streams')"},
    "NVIDIA A100": {"fp32_tflops": 19.5, "tf32_tensor_tflops": 156.0, "fp16_tensor_tflops": 312.0,
                    "source": "NVIDIA A100 datasheet (19.5 TFLOPS FP32, 156 TF32, 312 FP16 tensor, dense)"},
}


def conv_flops(model: torch.nn.Module, example: torch.Tensor) -> float:
    """2 x multiply-adds of every Conv3d for ``example`` (shapes from a forward on the meta device)."""
    total = 0.0

    def count(module: torch.nn.Conv3d, _: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += 2.0 * math.prod(module.weight.shape[1:]) * output.numel()

    meta = model.to("meta")
    hooks = [m.register_forward_hook(count) for m in meta.modules() if isinstance(m, torch.nn.Conv3d)]
    with torch.no_grad():
        meta.forward_features(example.to("meta"))
    for hook in hooks:
        hook.remove()
    return total


def full_i3d(repeats: int, with_onnx: bool, with_compiled: bool, work: Path) -> dict[str, Any]:
    clips = ClipProtocol.core_mtl()
    video = torch.rand((1, 3, 103, 224, 224), generator=torch.Generator().manual_seed(0)) * 2 - 1
    flops = conv_flops(I3D(), clips.split(video)) / 1e9
    state = random_checkpoint(reference_layout(), seed=3)
    backbone = I3D()
    backbone.load_state_dict(state)
    backbone.eval()
    fused = backbone.fused()

    def reference() -> torch.Tensor:
        return piergiaj_mixed_5c(state, clips.split(video)).mean(dim=(2, 3, 4))

    contenders = {
        "reference_piergiaj_eager": reference,
        "training_form_before": lambda: backbone.extract_clip_features(video, clips),
        "served_torch_eager": lambda: fused.extract_clip_features(video, clips),
    }
    if with_onnx:
        from models.onnx_backbone import OnnxBackbone, create_session
        from training.export_onnx import export_backbone

        onnx_path = work / "i3d_full.onnx"
        if not onnx_path.is_file():
            export_backbone(backbone, (3, 16, 224, 224), onnx_path)
        onnx = OnnxBackbone(create_session(onnx_path, "cpu"), (3, 16, 224, 224), 1024)
        contenders["onnxruntime"] = lambda: onnx.extract_clip_features(video, clips)
    if with_compiled:
        from models.compiled_backbone import CompiledBackbone, build_package

        package = work / "i3d_full.pt2"
        if not package.is_file():
            build_package(backbone, (3, 16, 224, 224), package)
        compiled = CompiledBackbone(package, 3, 1024)
        contenders["compiled_aotinductor"] = lambda: compiled.extract_clip_features(video, clips)

    # One Conv3d alone: Conv3d_2c_3x3's geometry for the 10 clips (the network's costliest layer).
    maps = torch.rand((10, 64, 8, 56, 56)).contiguous(memory_format=torch.channels_last_3d)
    weight, bias = torch.randn(192, 64, 3, 3, 3) * 0.05, torch.zeros(192)
    conv_gflop = 2 * 64 * 27 * 10 * 192 * 8 * 56 * 56 / 1e9
    contenders["one_conv3d_aten"] = lambda: F.conv3d(maps, weight, bias, padding=1)
    contenders["one_conv3d_onednn"] = lambda: torch.ops.mkldnn._convolution_pointwise(
        maps, weight, bias, [1, 1, 1], [1, 1, 1], [1, 1, 1], 1, "none", [], "")

    with torch.inference_mode():
        expected = reference()
        served = fused.extract_clip_features(video, clips)[0]
        difference = float((served - expected).abs().max())
        timings = side_by_side(contenders, repeats)
    conv_peak = max(conv_gflop / timings[name]["min_s"] for name in ("one_conv3d_aten", "one_conv3d_onednn"))
    conv_peak_median = max(conv_gflop / timings[name]["median_s"] for name in ("one_conv3d_aten", "one_conv3d_onednn"))
    networks = [name for name in timings if not name.startswith("one_conv3d")]
    as_published = _reference_in_own_process(repeats)
    return {
        "reference_in_own_process_default_allocator": as_published,
        "served_vs_reference_in_own_process": ratio(as_published, timings["served_torch_eager"]),
        "gflop_per_video": round(flops, 1), "conv3d_gflop": round(conv_gflop, 2), "timings": timings,
        "gflops": {name: {"min": flops / timings[name]["min_s"], "median": flops / timings[name]["median_s"]}
                   for name in networks},
        "conv3d_peak_gflops": {"min": conv_peak, "median": conv_peak_median},
        "fraction_of_conv3d_peak": {name: {"min": flops / timings[name]["min_s"] / conv_peak,
                                           "median": flops / timings[name]["median_s"] / conv_peak_median}
                                    for name in networks},
        "speedup_vs_reference": {name: ratio(timings["reference_piergiaj_eager"], timings[name]) for name in networks},
        "served_vs_reference_max_abs_diff": difference,
    }


_REFERENCE_CHILD = """
import json, statistics, sys, time
import torch
sys.path.insert(0, {repo!r})
from models.clips import ClipProtocol
from tests.i3d_layout import reference_layout
from tests.reference_i3d import piergiaj_mixed_5c, random_checkpoint
state = random_checkpoint(reference_layout(), seed=3)
clips = ClipProtocol.core_mtl().split(torch.rand((1, 3, 103, 224, 224), generator=torch.Generator().manual_seed(0)) * 2 - 1)
seconds = []
with torch.inference_mode():
    piergiaj_mixed_5c(state, clips)
    for _ in range({repeats}):
        time.sleep(0.3)
        start = time.perf_counter()
        piergiaj_mixed_5c(state, clips).mean(dim=(2, 3, 4))
        seconds.append(time.perf_counter() - start)
print(json.dumps({{"min_s": min(seconds), "median_s": statistics.median(seconds), "repeats": {repeats}}}))
"""


def _reference_in_own_process(repeats: int) -> dict[str, float]:
    """The reference as published code runs: its own process, glibc's default allocator (measured after the
    side-by-side rounds, not interleaved with them)."""
    import json
    import sys

    child = subprocess.run([sys.executable, "-c", _REFERENCE_CHILD.format(repo=str(REPO), repeats=repeats)],
                           capture_output=True, text=True, check=True)
    return json.loads(child.stdout.strip().splitlines()[-1])


def demo_backbone(repeats: int, with_compiled: bool, work: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    from models.backbone_runtime import load_backbone
    from models.model_dir import ModelConfig
    from models.onnx_backbone import OnnxBackboneError, check_export
    from training.export_onnx import export_onnx
    from training.runtimes import build_and_measure

    model_dir = bench_model_dir(work)
    config = ModelConfig.load(model_dir)
    if with_compiled:
        record, problems = build_and_measure(model_dir)
    else:
        record, problems = None, []
        try:
            check_export(model_dir, config)
        except OnnxBackboneError:
            export_onnx(model_dir)
    backbone = I3D(width=config.backbone.width, padding=config.backbone.padding)
    backbone.load_state_dict(load_file(str(model_dir / "backbone.safetensors")))
    backbone.eval()
    clips = config.clip_protocol
    video = torch.rand((1, 3, 32, 64, 64), generator=torch.Generator().manual_seed(0)) * 2 - 1
    runtimes = {"training_form_before": backbone}
    for name in ("torch", "onnx") + (("compiled",) if with_compiled else ()):
        runtimes[name] = load_backbone(name, model_dir, config, backbone)
    contenders = {name: (lambda b=b: b.extract_clip_features(video, clips)) for name, b in runtimes.items()}
    with torch.inference_mode():
        timings = side_by_side(contenders, repeats)
    fastest = min((n for n in timings if n != "training_form_before"), key=lambda n: timings[n]["median_s"])
    return {
        "timings": timings, "fastest_in_this_run": fastest,
        "speedup_vs_before": {name: ratio(timings["training_form_before"], timings[name]) for name in timings},
        "product_measurement": None if record is None else {
            "chosen": record.chosen, "timings": {k: v.model_dump() for k, v in record.timings.items()},
            "problems": problems},
    }


def bench_model_dir(work: Path) -> Path:
    """A copy of the demo model for the benchmarks to build runtimes in (the bundled one stays as it is)."""
    model_dir = work / "demo-model"
    if not model_dir.is_dir():
        shutil.copytree(DEMO_MODEL_DIR, model_dir, ignore=shutil.ignore_patterns("report", "runtime.json*", "compiled",
                                                                               "backbone.onnx*"))
    return model_dir


def _decode_video_file() -> Path:
    from training.synth.generate import render_dive_video

    path = MEDIA_DIR / "dive_30s_720p.mp4"
    if not path.is_file():
        MEDIA_DIR.mkdir(parents=True, exist_ok=True)
        render_dive_video(path, seconds=30.0, width=1280, height=720, fps=25, seed=11)
    return path


def decode(repeats: int) -> dict[str, Any]:
    import video.decode as decoding
    from models.model_dir import ModelConfig
    from video.probe import probe_video

    path = _decode_video_file()
    preprocessing = ModelConfig.load(DEMO_MODEL_DIR).preprocessing_obj
    frames = probe_video(path, count_frames=True).frame_count
    budget = decoding.ONE_PASS_BYTES

    def two_passes() -> None:
        decoding.ONE_PASS_BYTES = 0  # the former way: a thumbnail pass, then a pass for the samples
        try:
            decoding.decode_video(path, preprocessing)
        finally:
            decoding.ONE_PASS_BYTES = budget

    def ffmpeg_cli() -> None:
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vf",
                        f"scale=-2:{preprocessing.resize}:flags=bilinear", "-pix_fmt", "rgb24", "-f", "rawvideo",
                        "-y", "/dev/null"], check=True)

    contenders = {"one_pass": lambda: decoding.decode_video(path, preprocessing), "two_passes_before": two_passes}
    if shutil.which("ffmpeg"):
        contenders["ffmpeg_cli_decode_scale_rgb"] = ffmpeg_cli
    timings = side_by_side(contenders, repeats)
    fps = {name: {"min_s": frames / t["min_s"], "median_s": frames / t["median_s"]} for name, t in timings.items()}
    result = {"video": f"{path.name}: 30 s, 1280x720, 25 fps, H.264", "frames": frames, "timings": timings,
              "fps": {n: {"best": v["min_s"], "median": v["median_s"]} for n, v in fps.items()},
              "one_pass_vs_two_passes": ratio(timings["two_passes_before"], timings["one_pass"])}
    if "ffmpeg_cli_decode_scale_rgb" in timings:
        result["one_pass_vs_ffmpeg_cli"] = ratio(timings["ffmpeg_cli_decode_scale_rgb"], timings["one_pass"])
    return result


def batch(repeats: int, work: Path) -> dict[str, Any]:
    from models.scorer import DecodedQuery, QueryLabels, Scorer, ScoreRequest
    from training.synth.generate import generate_dataset

    folder = MEDIA_DIR / "batch50"
    if not (folder / "labels.csv").is_file():
        generate_dataset(folder, n=50, seed=7, progress=False)
    videos = sorted((folder / "videos").glob("*.mp4"))
    scorer = Scorer.from_dir(bench_model_dir(work))
    requests = [ScoreRequest(path, QueryLabels()) for path in videos]
    decoded: list[DecodedQuery] = [scorer.decode(path) for path in videos]

    def compute() -> None:
        for first in range(0, len(decoded), 8):
            scorer.score_decoded(decoded[first:first + 8])

    contenders = {
        "decode_alone": lambda: [scorer.decode(path) for path in videos],
        "compute_alone": compute,
        "serial_before": lambda: [scorer.score(path) for path in videos],
        "pipelined": lambda: list(scorer.score_stream(requests)),
    }
    timings = side_by_side(contenders, repeats, warmup=0)
    cores = {name: _cores_used(contenders[name]) for name in ("decode_alone", "compute_alone", "pipelined")}
    bound = {stat: max(timings["decode_alone"][stat], timings["compute_alone"][stat]) for stat in ("min_s", "median_s")}
    serial = [scorer.score(path).score for path in videos]
    piped = [outcome.score for _, outcome in scorer.score_stream(requests)]
    return {
        "videos": f"{len(videos)} synthetic dives, 320x240, 25 fps (aqa synth defaults, seed 7)",
        "runtime": scorer.extractor.runtime, "timings": timings, "cores_used_once_after": cores,
        "pipelined_over_max_decode_compute": {"min": timings["pipelined"]["min_s"] / bound["min_s"],
                                               "median": timings["pipelined"]["median_s"] / bound["median_s"]},
        "serial_over_pipelined": ratio(timings["serial_before"], timings["pipelined"]),
        "max_abs_score_difference_pipelined_vs_serial": float(np.max(np.abs(np.subtract(serial, piped)))),
    }


def _cores_used(function: Any) -> float:
    """CPU seconds of this process over wall seconds, for one call: how much of the machine a stage keeps busy."""
    import resource

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    time.sleep(0.3)
    cpu0, wall0 = cpu(), time.perf_counter()
    function()
    return (cpu() - cpu0) / (time.perf_counter() - wall0)


def selection(repeats: int, queries: int = 200) -> dict[str, Any]:
    bank = ExemplarBank.load(DEMO_MODEL_DIR / "bank")
    index = ExemplarIndex(bank)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, len(bank), queries)
    noise = torch.from_numpy(rng.standard_normal((queries, bank.pooled_features.shape[1]))).float()
    features = bank.pooled_features[rows] + 0.05 * noise
    labels = [(bank.exemplars[r].difficulty, bank.exemplars[r].action_class) for r in rows]

    def loop_given() -> None:
        for q, (d, c) in zip(features, labels):
            loop_selection(bank, q, 10, d, c)

    def index_given() -> None:
        for q, (d, c) in zip(features, labels):
            index.select(index.distances(q), 10, d, c)

    def loop_estimated() -> None:  # before: the nearest 10 for the difficulty, then the selection, two loops
        for q, (_, c) in zip(features, labels):
            nearest = loop_selection(bank, q, 10)
            loop_selection(bank, q, 10, bank.exemplars[nearest.indices[0]].difficulty, c)

    def index_estimated() -> None:  # now: one distance product serves both
        for q, (_, c) in zip(features, labels):
            distances = index.distances(q)
            nearest = index.select(distances, 10)
            index.select(distances, 10, bank.exemplars[nearest.indices[0]].difficulty, c)

    contenders = {"loop_difficulty_given": loop_given, "index_difficulty_given": index_given,
                  "loop_difficulty_estimated": loop_estimated, "index_difficulty_estimated": index_estimated}
    timings = side_by_side(contenders, repeats)
    per_query_ms = {name: {"min": t["min_s"] / queries * 1e3, "median": t["median_s"] / queries * 1e3}
                    for name, t in timings.items()}
    return {"bank": len(bank), "queries": queries, "per_query_ms": per_query_ms,
            "speedup_given": ratio(timings["loop_difficulty_given"], timings["index_difficulty_given"]),
            "speedup_estimated": ratio(timings["loop_difficulty_estimated"], timings["index_difficulty_estimated"])}


def gpu_on_paper(gflop_per_video: float, decode_frames: int) -> dict[str, Any]:
    """Lower bounds: FLOPs / peak throughput (real kernels reach a fraction of it), NVDEC frames / rate."""
    rows = {}
    for name, gpu in GPUS.items():
        rows[name] = {
            key.replace("_tflops", "_ms_per_video_at_peak"): gflop_per_video / (value * 1e3) * 1e3
            for key, value in gpu.items() if key.endswith("_tflops")
        }
        if "nvdec_1080p30_streams" in gpu:
            fps_1080p = gpu["nvdec_1080p30_streams"] * 30
            fps_720p = fps_1080p * (1920 * 1080) / (1280 * 720)  # by pixel rate
            rows[name]["nvdec_720p_fps_by_pixel_rate"] = fps_720p
            rows[name]["nvdec_seconds_for_the_30s_720p_video"] = decode_frames / fps_720p
        rows[name]["source"] = gpu["source"]
    return rows


def repo_relative(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def timestamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")
