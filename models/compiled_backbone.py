"""The backbone compiled ahead of time by AOTInductor, cached in the model directory.

``torch.compile`` would pay its compilation (28-42 s on an idle 2-core machine, minutes under load) in
every new process, and again for every new batch size. Instead the :class:`~models.i3d.FusedI3D` graph
is exported once with a dynamic batch axis and compiled by AOTInductor with inductor's freezing (weights
folded in as constants and pre-packed for oneDNN) into one file::

    compiled/backbone-<key>.pt2

``key`` names everything the machine code depends on: the weights' sha256, the clip shape, the torch
version, the CPU (model and instruction-set flags: inductor compiles for the host) and
:data:`GRAPH_VERSION`. A process then loads the package in milliseconds. Building needs a C++ compiler.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from models.i3d import I3D, ClipFeatures
from models.machine import cpu_description
from models.model_dir import ModelDirError

COMPILED_DIR = "compiled"
GRAPH_VERSION = 1
"""Bump when :class:`~models.i3d.FusedI3D` computes differently, so older packages are not reused."""
MAX_BATCH = 1024
PARITY_TOLERANCE = 1e-4


class CompiledBackboneError(ModelDirError):
    """The compiled backbone could not be built or loaded; the message says why."""


def package_path(model_dir: Path, weights_sha256: str, clip_shape: tuple[int, int, int, int]) -> Path:
    """Where the package for these weights, this clip shape, this torch and this CPU lives."""
    cpu = cpu_description()
    recipe = f"{weights_sha256} {clip_shape} {torch.__version__} {cpu.model} {cpu.flags_sha256} {GRAPH_VERSION}"
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    return Path(model_dir) / COMPILED_DIR / f"backbone-{key}.pt2"


def build_package(backbone: I3D, clip_shape: tuple[int, int, int, int], path: Path) -> float:
    """Export and compile ``backbone``'s fused form for CPU clips of ``clip_shape`` (3, L, H, W) into ``path``.

    Written only when the compiled graph reproduces eager PyTorch on random clips (a batch size other than
    the traced one) within :data:`PARITY_TOLERANCE` x max(1, max |feature|). Returns the largest difference.
    """
    fused = backbone.eval().fused(kernels="aten")
    generator = torch.Generator().manual_seed(0)
    example = torch.rand((2, *clip_shape), generator=generator) * 2 - 1
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.pt2")  # AOTInductor insists on the .pt2 suffix
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal deprecations, nothing about this model
            exported = torch.export.export(fused, (example,),
                                           dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}})
            torch._inductor.aoti_compile_and_package(exported, package_path=str(partial),
                                                     inductor_configs={"freezing": True})
            runner = torch._inductor.aoti_load_package(str(partial))
    except Exception as exc:  # export, C++ compilation and loading raise many types; all mean "cannot build"
        partial.unlink(missing_ok=True)
        raise CompiledBackboneError(f"AOTInductor could not compile the backbone for clips of {clip_shape}: {exc}") from exc
    clips = torch.rand((3, *clip_shape), generator=generator) * 2 - 1
    with torch.inference_mode():
        expected, actual = fused(clips), runner(clips)
    difference = float((actual - expected).abs().max())
    if not difference <= PARITY_TOLERANCE * max(1.0, float(expected.abs().max())):
        partial.unlink(missing_ok=True)
        raise CompiledBackboneError(f"the compiled backbone differs from eager PyTorch by {difference:.3g}; not kept")
    partial.replace(path)
    return difference


class CompiledBackbone(ClipFeatures):
    """A loaded package: ``forward_features`` and ``extract_clip_features`` as :class:`~models.i3d.I3D`'s.

    Loaded again (milliseconds) in a process forked after loading, like the ONNX session.
    """

    def __init__(self, path: Path, in_channels: int, feature_dim: int) -> None:
        self.path, self.in_channels, self.feature_dim = Path(path), in_channels, feature_dim
        self._runner, self._pid = self._load(), os.getpid()

    def _load(self) -> Callable[[torch.Tensor], torch.Tensor]:
        try:
            return torch._inductor.aoti_load_package(str(self.path))
        except Exception as exc:  # a damaged or foreign package
            raise CompiledBackboneError(f"cannot load the compiled backbone {self.path}: {exc}") from exc

    def forward_features(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, 3, L, H, W) float32 on the CPU -> (N, D)."""
        if self._pid != os.getpid():
            self._runner, self._pid = self._load(), os.getpid()
        return self._runner(clips.float())
