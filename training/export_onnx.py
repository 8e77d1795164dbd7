"""``aqa export onnx MODEL_DIR``: the I3D backbone's ``forward_features`` as ONNX, checked against torch.

Writes ``backbone.onnx`` and ``backbone.onnx.json`` (layout: :mod:`models.onnx_backbone`) with
``torch.onnx.export(dynamo=True)``, the torch.export-based exporter (it needs ``onnxscript`` and emits
opset 18 or later; the TorchScript exporter is deprecated in torch 2.13). Only the batch axis is dynamic:
the TF-style SAME pads (:func:`models.i3d.pad_same`) are computed from the clip's L x H x W, which is fixed
by the model's clip protocol and crop, so they become constant Pad nodes for that size.

The file is written only when onnxruntime (CPU) reproduces torch on random clips, with a batch size
other than the one traced, within ``tolerance`` times the features' scale (max |feature|, at least 1;
:class:`~models.onnx_backbone.OnnxValidation`). A purely absolute 1e-4 is below float32's own
resolution for large features: on the tiny test model, whose features on random clips reach about 150,
torch float32 differs from torch float64 by 2.4e-4 and onnxruntime from torch float32 by 3.7e-4.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch
from safetensors.torch import load_file
from torch import nn

from models.file_hash import file_sha256
from models.i3d import I3D
from models.model_dir import BACKBONE_WEIGHTS, ModelConfig, ModelDirError
from models.onnx_backbone import (
    BATCH_AXIS,
    INPUT_NAME,
    ONNX_FILE,
    OUTPUT_NAME,
    OnnxExportRecord,
    OnnxValidation,
    clip_shape_of,
    create_session,
)

DEFAULT_OPSET = 18
MIN_OPSET = 18  # the dynamo exporter's oldest opset; it silently keeps 18 when asked for less
TOLERANCE = 1e-4
TRACE_BATCH = 2
VALIDATION_BATCH = 3


class OnnxExportError(Exception):
    """The backbone could not be exported, or the export does not compute what torch computes."""


class _ForwardFeatures(nn.Module):
    """``I3D.forward_features`` as a module's ``forward``, the function the exporter traces."""

    def __init__(self, backbone: I3D) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(clips)


def export_backbone(backbone: I3D, clip_shape: tuple[int, int, int, int], destination: Path,
                    opset: int = DEFAULT_OPSET, tolerance: float = TOLERANCE, seed: int = 0) -> OnnxValidation:
    """Write ``backbone.forward_features`` for clips of ``clip_shape`` (3, L, H, W) to ``destination``.

    Nothing is written (an existing file is left as it was) unless onnxruntime's features for
    :data:`VALIDATION_BATCH` random clips in [-1, 1] equal torch's within ``tolerance`` x max(1, max |feature|).
    """
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise OnnxExportError(f"opset {opset} is not supported: the exporter writes opsets {MIN_OPSET} to {newest}")
    destination = Path(destination)
    partial = destination.with_name(destination.name + ".partial")
    generator = torch.Generator().manual_seed(seed)
    module = _ForwardFeatures(backbone).eval()
    example = torch.rand((TRACE_BATCH, *clip_shape), generator=generator) * 2 - 1
    try:
        _export_graph(module, example, partial, opset)
        validation = _compare_with_torch(module, partial, clip_shape, tolerance, generator)
        if not validation.passed:
            raise OnnxExportError(
                f"onnxruntime differs from torch by {validation.max_abs_diff:.3g} (max abs) on random clips "
                f"whose features reach {validation.max_abs_feature:.3g}, more than {tolerance:g} x max(1, that); "
                f"{destination} was not written"
            )
        partial.replace(destination)
    finally:
        partial.unlink(missing_ok=True)
    return validation


def export_onnx(model_dir: Path, opset: int = DEFAULT_OPSET, tolerance: float = TOLERANCE) -> OnnxExportRecord:
    """Export ``MODEL_DIR/backbone.safetensors`` to ``MODEL_DIR/backbone.onnx`` and record it in
    ``backbone.onnx.json`` (opset, input shape, sha256 of the weights and of the ONNX file, parity)."""
    model_dir = Path(model_dir)
    config = ModelConfig.load(model_dir)
    weights = model_dir / BACKBONE_WEIGHTS
    if not weights.is_file():
        raise ModelDirError(f"{model_dir} is missing {BACKBONE_WEIGHTS}")
    weights_sha256 = file_sha256(weights)
    backbone = I3D(width=config.backbone.width, padding=config.backbone.padding)
    backbone.load_state_dict(load_file(str(weights)), strict=True)
    clip_shape = clip_shape_of(config)
    onnx_path = model_dir / ONNX_FILE
    validation = export_backbone(backbone, clip_shape, onnx_path, opset, tolerance)
    record = OnnxExportRecord(
        opset=opset, input_shape=(BATCH_AXIS, *clip_shape), feature_dim=backbone.feature_dim,
        weights_sha256=weights_sha256, onnx_sha256=file_sha256(onnx_path), torch_version=torch.__version__,
        validation=validation,
    )
    record.save(model_dir)
    return record


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide the exporter's notes that do not concern this model (torchvision ops it skips, deprecations)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def _export_graph(module: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    """Trace ``module`` on ``example`` with a dynamic batch axis and save it as one self-contained file."""
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                module, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes={"clips": {0: torch.export.Dim(BATCH_AXIS)}}, opset_version=opset, verbose=False,
            )
            program.save(str(path), external_data=False)
    except Exception as exc:  # the exporter raises many types; all mean "could not export"
        raise OnnxExportError(f"torch.onnx.export failed for clips of {tuple(example.shape[1:])}: {exc}") from exc
    model = onnx.load(str(path), load_external_data=False)
    written = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    if written != opset:
        raise OnnxExportError(f"asked for opset {opset}, but the exporter wrote opset {written}")


@torch.no_grad()
def _compare_with_torch(module: nn.Module, onnx_path: Path, clip_shape: tuple[int, int, int, int],
                        tolerance: float, generator: torch.Generator) -> OnnxValidation:
    clips = torch.rand((VALIDATION_BATCH, *clip_shape), generator=generator) * 2 - 1
    expected = module(clips)
    try:
        session = create_session(onnx_path, device="cpu")
        actual = torch.from_numpy(session.run(None, {INPUT_NAME: clips.numpy()})[0])
    except Exception as exc:  # onnxruntime's load and run errors, e.g. an opset newer than it knows
        raise OnnxExportError(f"onnxruntime cannot run the exported graph: {exc}") from exc
    if actual.shape != expected.shape:
        raise OnnxExportError(f"the ONNX graph returns {tuple(actual.shape)}, torch {tuple(expected.shape)}")
    return OnnxValidation(max_abs_diff=float((actual - expected).abs().max()), tolerance=tolerance,
                          batch=VALIDATION_BATCH, max_abs_feature=float(expected.abs().max()))
