"""Which runtime runs a model's backbone on this machine, chosen by timing them: ``MODEL_DIR/runtime.json``.

Every runtime computes the same features (to float32 rounding; the fingerprint names the weights):

- ``torch``: :class:`~models.i3d.FusedI3D` in eager PyTorch (oneDNN convolutions on the CPU);
- ``compiled``: the same graph compiled ahead of time by AOTInductor (:mod:`models.compiled_backbone`);
- ``onnx``: ``backbone.onnx`` in ONNX Runtime (:mod:`models.onnx_backbone`).

Which is fastest depends on the model's size and the machine (on the 2-core machine the issue was filed
from, ONNX Runtime was 1.2 x faster than eager torch on the full I3D and 1.4 x slower on the demo's), so
it is measured, not assumed: one video's clips through each runtime that is built, the runtimes taking
turns with a pause before every timed call (the thread pools of one runtime spin for a while after it
returns and would slow the next one down), ``REPEATS`` times; the least median wins. The record keeps
the timings, the machine (CPU model and instruction sets, ``ONEDNN_MAX_CPU_ISA``, threads, device), the
torch and ONNX Runtime versions and the model (weights, clip shape, the runtimes that were built). A
process with ``runtime="auto"`` uses the recorded choice while all of that matches, and measures again
(and rewrites the record) when anything differs. Measuring builds nothing: ``aqa runtime MODEL_DIR``
builds the ONNX export and the compiled package first, then measures all three.
"""

from __future__ import annotations

import fcntl
import logging
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

import torch
from pydantic import BaseModel, ValidationError

from models.clips import ClipProtocol
from models.compiled_backbone import CompiledBackbone, CompiledBackboneError, package_path
from models.file_hash import file_sha256
from models.i3d import I3D
from models.machine import cpu_description
from models.model_dir import BACKBONE_WEIGHTS, ModelConfig, write_atomically
from models.onnx_backbone import OnnxBackbone, OnnxBackboneError, check_export, clip_shape_of

log = logging.getLogger(__name__)

Runtime = Literal["torch", "compiled", "onnx"]
RuntimeSetting = Literal["auto", "torch", "compiled", "onnx"]
RUNTIMES: tuple[Runtime, ...] = ("torch", "compiled", "onnx")
RUNTIME_SETTINGS: tuple[str, ...] = ("auto", *RUNTIMES)
RUNTIME_RECORD = "runtime.json"
REPEATS = 5
PAUSE_SECONDS = 0.3
PARITY_TOLERANCE = 1e-4


class Backbone(Protocol):
    """What every runtime offers: per-clip features of a batch of videos (see ``I3D.extract_clip_features``)."""

    def extract_clip_features(self, video: torch.Tensor, clips: ClipProtocol, batch_size: int | None = None,
                              check_range: bool = True) -> torch.Tensor: ...


class RuntimeEnvironment(BaseModel):
    """What a timing depends on besides the model."""

    cpu: str
    cpu_flags: list[str]
    cpu_flags_sha256: str
    logical_cpus: int
    onednn_max_cpu_isa: str | None
    torch_threads: int
    onnx_threads: int
    device: str
    torch: str
    onnxruntime: str | None


class ModelKey(BaseModel):
    weights_sha256: str
    clip_shape: tuple[int, int, int, int]
    clips_per_video: int
    built: list[Runtime]


class RuntimeTiming(BaseModel):
    median_s: float
    min_s: float
    repeats: int
    load_s: float
    max_rel_diff: float  # from the torch runtime's features: max |difference| / max(1, max |feature|)


class RuntimeRecord(BaseModel):
    format_version: Literal[1] = 1
    chosen: Runtime
    timings: dict[str, RuntimeTiming]
    not_built: dict[str, str]
    environment: RuntimeEnvironment
    model: ModelKey
    pause_s: float
    measured_at: str

    def save(self, model_dir: Path) -> None:
        write_atomically(Path(model_dir) / RUNTIME_RECORD, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, model_dir: Path) -> RuntimeRecord | None:
        path = Path(model_dir) / RUNTIME_RECORD
        try:
            return cls.model_validate_json(path.read_text())
        except (OSError, ValidationError, ValueError):
            return None


@dataclass
class RuntimeChoice:
    """The runtime to use, its loaded backbone, and the record that chose it."""

    runtime: Runtime
    backbone: Backbone
    record: RuntimeRecord


def current_environment(device: str, onnx_threads: int) -> RuntimeEnvironment:
    cpu = cpu_description()
    try:
        import onnxruntime

        onnxruntime_version: str | None = onnxruntime.__version__
    except ImportError:
        onnxruntime_version = None
    return RuntimeEnvironment(
        cpu=cpu.model, cpu_flags=list(cpu.flags_summary), cpu_flags_sha256=cpu.flags_sha256,
        logical_cpus=cpu.logical_cpus, onednn_max_cpu_isa=os.environ.get("ONEDNN_MAX_CPU_ISA"),
        torch_threads=torch.get_num_threads(), onnx_threads=onnx_threads, device=str(torch.device(device)),
        torch=torch.__version__, onnxruntime=onnxruntime_version,
    )


def load_backbone(runtime: Runtime, model_dir: Path, config: ModelConfig, backbone: I3D, device: str = "cpu",
                  onnx_threads: int = 0) -> Backbone:
    """``backbone`` (loaded weights) in ``runtime``; the compiled package and the ONNX export must be built."""
    if runtime == "torch":
        return backbone.eval().to(device).fused()
    if runtime == "onnx":
        return OnnxBackbone.from_model_dir(model_dir, config, device=device, intra_op_threads=onnx_threads)
    if torch.device(device).type != "cpu":
        raise CompiledBackboneError(f"the compiled runtime is built for the CPU; device {device} cannot run it")
    path = package_path(model_dir, file_sha256(Path(model_dir) / BACKBONE_WEIGHTS), clip_shape_of(config))
    if not path.is_file():
        raise CompiledBackboneError(f"{model_dir} has no compiled backbone for this machine and torch: "
                                f"build it with `aqa runtime {model_dir}`")
    return CompiledBackbone(path, backbone.in_channels, backbone.feature_dim)


def choose_runtime(model_dir: Path, config: ModelConfig, backbone: I3D, device: str = "cpu", onnx_threads: int = 0,
                   remeasure: bool = False) -> RuntimeChoice:
    """The runtime ``runtime.json`` chose for this machine, or, when it is missing or out of date (or
    ``remeasure``), the fastest of the built runtimes, timed now and recorded.

    The record is written only if the model directory is writable; a read-only one is timed at every start.
    """
    model_dir = Path(model_dir)
    environment = current_environment(device, onnx_threads)
    built, not_built = _built_runtimes(model_dir, config, device)
    key = ModelKey(weights_sha256=file_sha256(model_dir / BACKBONE_WEIGHTS), clip_shape=clip_shape_of(config),
                   clips_per_video=config.clip_protocol.num_clips * (2 if config.clip_protocol.mirror else 1),
                   built=built)
    with _lock(model_dir):
        record = None if remeasure else RuntimeRecord.load(model_dir)
        if record is not None and record.environment == environment and record.model == key:
            return RuntimeChoice(record.chosen, load_backbone(record.chosen, model_dir, config, backbone, device,
                                                              onnx_threads), record)
        backbones, load_seconds = {}, {}
        for runtime in built:
            start = time.perf_counter()
            backbones[runtime] = load_backbone(runtime, model_dir, config, backbone, device, onnx_threads)
            load_seconds[runtime] = time.perf_counter() - start
        alone = len(backbones) == 1  # nothing to compare: one timed call, no pause
        timings = measure(backbones, _example_video(config, device), config.clip_protocol,
                          repeats=1 if alone else REPEATS, pause=0.0 if alone else PAUSE_SECONDS)
        for runtime, timing in timings.items():
            timing.load_s = load_seconds[runtime]
        usable = {name: t for name, t in timings.items() if name == "torch" or t.max_rel_diff <= PARITY_TOLERANCE}
        chosen: Runtime = min(usable, key=lambda name: usable[name].median_s)
        record = RuntimeRecord(chosen=chosen, timings=timings, not_built=not_built, environment=environment, model=key,
                               pause_s=PAUSE_SECONDS, measured_at=datetime.now(UTC).isoformat(timespec="seconds"))
        try:
            record.save(model_dir)
        except OSError as exc:
            log.warning("could not write %s (%s); the runtimes will be timed again at the next start",
                        model_dir / RUNTIME_RECORD, exc)
        log.info("backbone runtime for %s: %s (%s)", model_dir, chosen, ", ".join(
            f"{name} {t.median_s * 1000:.1f} ms" for name, t in timings.items()))
        return RuntimeChoice(chosen, backbones[chosen], record)


def measure(backbones: dict[str, Backbone], video: torch.Tensor, clips: ClipProtocol, repeats: int = REPEATS,
            pause: float = PAUSE_SECONDS) -> dict[str, RuntimeTiming]:
    """Seconds per video of each backbone on ``video`` (B, 3, T, H, W), side by side: the backbones take
    turns (the order rotating every round) with ``pause`` seconds of rest before each timed call; one
    untimed warm-up call each first. Features are compared with the "torch" backbone's, if it is there."""
    def run(backbone: Backbone) -> torch.Tensor:
        with torch.inference_mode():
            return backbone.extract_clip_features(video, clips, check_range=False).cpu()

    reference = run(backbones["torch"]) if "torch" in backbones else None
    scale = max(1.0, float(reference.abs().max())) if reference is not None else 1.0
    differences = {}
    for name, backbone in backbones.items():
        features = run(backbone)
        differences[name] = float((features - reference).abs().max()) / scale if reference is not None else 0.0
    seconds: dict[str, list[float]] = {name: [] for name in backbones}
    names = list(backbones)
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            time.sleep(pause)
            start = time.perf_counter()
            run(backbones[name])
            seconds[name].append(time.perf_counter() - start)
    return {name: RuntimeTiming(median_s=statistics.median(values), min_s=min(values), repeats=repeats, load_s=0.0,
                                max_rel_diff=differences[name]) for name, values in seconds.items()}


def _built_runtimes(model_dir: Path, config: ModelConfig, device: str) -> tuple[list[Runtime], dict[str, str]]:
    """The runtimes whose files are here and current, and why each other one is not."""
    built: list[Runtime] = ["torch"]
    not_built: dict[str, str] = {}
    try:
        check_export(model_dir, config)
        built.append("onnx")
    except OnnxBackboneError as exc:
        not_built["onnx"] = str(exc)
    if torch.device(device).type != "cpu":
        not_built["compiled"] = f"built for the CPU only, the device is {device}"
    elif package_path(model_dir, file_sha256(model_dir / BACKBONE_WEIGHTS), clip_shape_of(config)).is_file():
        built.append("compiled")
    else:
        not_built["compiled"] = f"no package for this machine and torch: build it with `aqa runtime {model_dir}`"
    return built, not_built


def _example_video(config: ModelConfig, device: str) -> torch.Tensor:
    """One video of the model's input size, random values in [-1, 1] (timing does not depend on them)."""
    preprocessing = config.preprocessing_obj
    generator = torch.Generator().manual_seed(0)
    shape = (1, 3, preprocessing.num_frames, preprocessing.crop, preprocessing.crop)
    return (torch.rand(shape, generator=generator) * 2 - 1).to(device)


@contextmanager
def _lock(model_dir: Path) -> Iterator[None]:
    """Serialise measurements of one model directory between processes (workers starting together would
    otherwise time each other); a directory that cannot hold the lock file goes unlocked."""
    path = Path(model_dir) / (RUNTIME_RECORD + ".lock")
    try:
        path.touch(exist_ok=True)
    except OSError:
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
