"""``aqa runtime MODEL_DIR``: build every backbone runtime this machine can run, time them, record the fastest.

Builds what is missing or stale: the ONNX export (:func:`training.export_onnx.export_onnx`, seconds) and the
AOTInductor package (:func:`models.compiled_backbone.build_package`, a minute or more: C++ compilation).
Then times all of them side by side (:func:`models.backbone_runtime.choose_runtime`) and writes
``MODEL_DIR/runtime.json``, which ``AQA_RUNTIME=auto`` (the default) follows on this machine.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from models.backbone_runtime import RuntimeRecord, choose_runtime
from models.compiled_backbone import CompiledBackboneError, build_package, package_path
from models.file_hash import file_sha256
from models.i3d import I3D
from models.model_dir import BACKBONE_WEIGHTS, ModelConfig
from models.onnx_backbone import OnnxBackboneError, check_export, clip_shape_of
from training.export_onnx import OnnxExportError, export_onnx

log = logging.getLogger(__name__)


def build_and_measure(model_dir: Path, device: str = "cpu", onnx_threads: int = 0) -> tuple[RuntimeRecord, list[str]]:
    """Build the missing runtimes, time every built one, record the fastest; also returns what could not be
    built and why (a runtime that fails to build is left out, not fatal)."""
    model_dir = Path(model_dir)
    config = ModelConfig.load(model_dir)
    backbone = I3D(width=config.backbone.width, padding=config.backbone.padding)
    backbone.load_state_dict(load_file(str(model_dir / BACKBONE_WEIGHTS)), strict=True)
    problems = []
    try:
        check_export(model_dir, config)
    except OnnxBackboneError:
        try:
            export_onnx(model_dir)
        except OnnxExportError as exc:
            problems.append(f"onnx: {exc}")
    if torch.device(device).type == "cpu":
        path = package_path(model_dir, file_sha256(model_dir / BACKBONE_WEIGHTS), clip_shape_of(config))
        if not path.is_file():
            log.info("compiling the backbone with AOTInductor into %s (a minute or more)", path)
            try:
                build_package(backbone, clip_shape_of(config), path)
            except CompiledBackboneError as exc:
                problems.append(f"compiled: {exc}")
    choice = choose_runtime(model_dir, config, backbone.to(device), device, onnx_threads, remeasure=True)
    return choice.record, problems
