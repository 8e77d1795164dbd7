"""The I3D backbone's ``forward_features`` run by onnxruntime, from a model directory's ONNX export.

``aqa export onnx MODEL_DIR`` (:mod:`training.export_onnx`) writes two files beside the weights::

    backbone.onnx        I3D.forward_features: input "clips" (N, 3, L, H, W) in the model's normalisation,
                         output "features" (N, D); N is dynamic, L x H x W fixed to the model's clip size
                         (the TF-style SAME pads are computed for that size at export)
    backbone.onnx.json   OnnxExportRecord: opset, input shape, the sha256 of backbone.safetensors it was
                         made from and of backbone.onnx itself, and the parity measured against torch

Loading checks both hashes, so an ONNX file left over from older weights is refused (it would compute
other features than the fingerprint, which names the weights, says). onnxruntime is imported when a
session is made, so reading these names costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, ValidationError

from models.file_hash import file_sha256
from models.i3d import ClipFeatures
from models.model_dir import BACKBONE_WEIGHTS, ModelConfig, ModelDirError, write_atomically

if TYPE_CHECKING:
    import onnxruntime

ONNX_FILE = "backbone.onnx"
ONNX_RECORD = "backbone.onnx.json"
INPUT_NAME = "clips"
OUTPUT_NAME = "features"
BATCH_AXIS = "batch"

OnnxDevice = Literal["auto", "cpu", "cuda"]


class OnnxBackboneError(ModelDirError):
    """A model directory's ONNX export is missing, stale or does not fit its configuration."""


class OnnxValidation(BaseModel):
    """onnxruntime (CPU) vs torch on the same random clips, measured before the file was written.

    Passed when ``max_abs_diff <= tolerance * max(1, max_abs_feature)``: an absolute tolerance for
    features up to 1, relative to the largest feature above (float32 rounding grows with the values).
    """

    max_abs_diff: float
    max_abs_feature: float = Field(description="Largest |feature| of the torch output: the scale.")
    tolerance: float
    batch: int

    @property
    def allowed_diff(self) -> float:
        return self.tolerance * max(1.0, self.max_abs_feature)

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.allowed_diff  # False for NaN


class OnnxExportRecord(BaseModel):
    """``backbone.onnx.json``: what the ONNX file is and which weights it was made from."""

    format_version: Literal[1] = 1
    opset: int
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    input_shape: tuple[str, int, int, int, int] = Field(description="(batch, 3, L, H, W); batch is dynamic.")
    feature_dim: int
    weights_sha256: str = Field(description=f"sha256 of the {BACKBONE_WEIGHTS} the export was made from.")
    onnx_sha256: str = Field(description=f"sha256 of {ONNX_FILE}.")
    torch_version: str
    validation: OnnxValidation

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """(3, L, H, W): one clip, without the batch axis."""
        return self.input_shape[1:]

    def save(self, model_dir: Path) -> None:
        write_atomically(Path(model_dir) / ONNX_RECORD, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, model_dir: Path) -> OnnxExportRecord:
        path = Path(model_dir) / ONNX_RECORD
        if not path.is_file():
            raise OnnxBackboneError(f"{model_dir} has no ONNX export ({ONNX_RECORD} is missing): "
                                    f"create it with `aqa export onnx {model_dir}`")
        try:
            return cls.model_validate_json(path.read_text())
        except ValidationError as exc:
            raise OnnxBackboneError(f"{path} is not a valid ONNX export record:\n{exc}") from exc


def clip_shape_of(config: ModelConfig) -> tuple[int, int, int, int]:
    """(3, L, H, W) of the clips this model's backbone sees: clip length and square crop."""
    return (3, config.clip_protocol.length, config.preprocessing_obj.crop, config.preprocessing_obj.crop)


def check_export(model_dir: Path, config: ModelConfig) -> OnnxExportRecord:
    """The directory's export record, after checking it was made from these weights for this clip size.

    Raises :class:`OnnxBackboneError` naming the fix (``aqa export onnx``) when the ONNX file is missing,
    was made from other weights (stale) or for another clip shape, or is not the file that was recorded.
    """
    model_dir = Path(model_dir)
    record = OnnxExportRecord.load(model_dir)
    redo = f"re-export with `aqa export onnx {model_dir}`"
    onnx_path, weights = model_dir / ONNX_FILE, model_dir / BACKBONE_WEIGHTS
    if not onnx_path.is_file():
        raise OnnxBackboneError(f"{model_dir} has {ONNX_RECORD} but no {ONNX_FILE}: {redo}")
    if not weights.is_file():
        raise OnnxBackboneError(f"{model_dir} is missing {BACKBONE_WEIGHTS}")
    if file_sha256(weights) != record.weights_sha256:
        raise OnnxBackboneError(f"{onnx_path} is stale: it was exported from other weights than the current "
                                f"{BACKBONE_WEIGHTS} (sha256 differs); {redo}")
    if file_sha256(onnx_path) != record.onnx_sha256:
        raise OnnxBackboneError(f"{onnx_path} is not the file {ONNX_RECORD} describes (sha256 differs); {redo}")
    expected = clip_shape_of(config)
    if record.clip_shape != expected or record.feature_dim != config.backbone.feature_dim:
        raise OnnxBackboneError(
            f"{onnx_path} takes clips of {record.clip_shape} -> {record.feature_dim} features, but config.json "
            f"gives clips of {expected} -> {config.backbone.feature_dim}; {redo}"
        )
    return record


def session_providers(device: OnnxDevice) -> list[str]:
    """onnxruntime execution providers for ``device``: CUDA (then CPU for unsupported nodes) or CPU.

    ``auto`` takes CUDA when this onnxruntime build has it (the onnxruntime-gpu package), else the CPU.
    """
    import onnxruntime

    cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if device == "cuda" and not cuda:
        raise OnnxBackboneError("device cuda, but this onnxruntime has no CUDAExecutionProvider: install "
                                "onnxruntime-gpu in place of onnxruntime, or run on the CPU")
    if device == "cuda" or (device == "auto" and cuda):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def create_session(onnx_path: Path, device: OnnxDevice = "auto", intra_op_threads: int = 0,
                   ) -> onnxruntime.InferenceSession:
    """An InferenceSession on ``device`` with ``intra_op_threads`` threads per operator (0: onnxruntime's
    default, one per physical core)."""
    import onnxruntime

    if intra_op_threads < 0:
        raise ValueError(f"intra_op_threads must be >= 0, got {intra_op_threads}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    providers = session_providers(device)
    session = onnxruntime.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
    if providers[0] not in session.get_providers():  # onnxruntime falls back silently when CUDA fails to load
        raise OnnxBackboneError(f"onnxruntime could not start {providers[0]} for {onnx_path} (it fell back to "
                                f"{session.get_providers()}); check the CUDA and cuDNN libraries")
    return session


class OnnxBackbone(ClipFeatures):
    """``I3D.forward_features`` / ``extract_clip_features`` for fixed-size clips, run by onnxruntime.

    A session's thread pool does not survive ``fork`` (a Celery worker loads the model, then forks its pool
    processes), so a process other than the one that made the session makes its own on first use.
    """

    def __init__(self, session: onnxruntime.InferenceSession, clip_shape: tuple[int, int, int, int],
                 feature_dim: int, remake: Callable[[], onnxruntime.InferenceSession] | None = None) -> None:
        self._session, self._pid, self._remake = session, os.getpid(), remake
        self.clip_shape = tuple(clip_shape)
        self.in_channels = clip_shape[0]
        self.feature_dim = feature_dim
        self.input_name = session.get_inputs()[0].name

    @classmethod
    def from_model_dir(cls, model_dir: Path, config: ModelConfig, device: OnnxDevice = "auto",
                       intra_op_threads: int = 0) -> OnnxBackbone:
        """The directory's ``backbone.onnx`` after :func:`check_export` (stale files are refused)."""
        record = check_export(model_dir, config)
        path = Path(model_dir) / ONNX_FILE
        session = create_session(path, device, intra_op_threads)
        return cls(session, record.clip_shape, record.feature_dim,
                   remake=lambda: create_session(path, device, intra_op_threads))

    @property
    def session(self) -> onnxruntime.InferenceSession:
        if self._pid != os.getpid() and self._remake is not None:
            self._session, self._pid = self._remake(), os.getpid()
        return self._session

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def forward_features(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, 3, L, H, W) float32 -> (N, D) float32 on the CPU."""
        if clips.dim() != 5 or tuple(clips.shape[1:]) != self.clip_shape:
            raise ValueError(f"the ONNX backbone takes (N, *{self.clip_shape}) clips, got {tuple(clips.shape)}")
        array = np.ascontiguousarray(clips.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])
