"""Decoded frames -> per-clip backbone features, with the fingerprint that names them.

The one place that applies a model's recorded preprocessing and clip protocol to its backbone: the
scorer, the training feature cache and ``aqa bank build`` all extract features through it. The backbone
runs in torch (:class:`~models.i3d.I3D`) or, from the model directory's ONNX export, in onnxruntime
(:class:`~models.onnx_backbone.OnnxBackbone`); both give the same features and the same fingerprint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file

from models.clips import ClipProtocol
from models.i3d import I3D
from models.model_dir import BACKBONE_WEIGHTS, BackboneConfig, ModelConfig, ModelDirError, feature_fingerprint
from models.onnx_backbone import OnnxBackbone
from video.decode import DecodedVideo
from video.preprocessing import Preprocessing

Runtime = Literal["torch", "onnx"]
RUNTIMES: tuple[str, ...] = ("torch", "onnx")


class FeatureExtractor:
    """A backbone in eval mode with its preprocessing and clip protocol.

    An :class:`OnnxBackbone` holds no tensors: pass the ``weights`` it was exported from, which the
    fingerprint names (an I3D's fingerprint names its own state dict). The ONNX backbone picks its
    execution provider itself; its input stays on the CPU.
    """

    def __init__(self, backbone: I3D | OnnxBackbone, config: BackboneConfig, preprocessing: Preprocessing,
                 clips: ClipProtocol, device: torch.device | str = "cpu", clip_batch_size: int | None = None,
                 weights: dict[str, torch.Tensor] | None = None) -> None:
        if isinstance(backbone, I3D):
            if weights is not None:
                raise ValueError("weights are only given with an ONNX backbone; an I3D's are its state dict")
            self.backbone: I3D | OnnxBackbone = backbone.eval().to(device)
            self.runtime: Runtime = "torch"
            self.device = torch.device(device)
            weights = backbone.state_dict()
        else:
            if weights is None:
                raise ValueError("an ONNX backbone needs the weights it was exported from, for the fingerprint")
            self.backbone, self.runtime, self.device = backbone, "onnx", torch.device("cpu")
        self.config = config
        self.preprocessing = preprocessing
        self.clips = clips
        self.clip_batch_size = clip_batch_size
        self.fingerprint = feature_fingerprint(weights, config, preprocessing, clips)

    @classmethod
    def from_model_dir(cls, model_dir: Path, device: str = "cpu", config: ModelConfig | None = None,
                       runtime: Runtime = "torch", onnx_threads: int = 0) -> FeatureExtractor:
        """Load the backbone in ``runtime``: "torch", or "onnx" (``backbone.onnx``, refused when it was not
        exported from the current ``backbone.safetensors``; ``onnx_threads`` intra-op threads, 0: default)."""
        model_dir = Path(model_dir)
        config = config or ModelConfig.load(model_dir)
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        weights = model_dir / BACKBONE_WEIGHTS
        if not weights.is_file():
            raise ModelDirError(f"{model_dir} is missing {BACKBONE_WEIGHTS}")
        state = load_file(str(weights))
        if runtime == "onnx":
            onnx = OnnxBackbone.from_model_dir(model_dir, config, device=device, intra_op_threads=onnx_threads)
            return cls(onnx, config.backbone, config.preprocessing_obj, config.clip_protocol, weights=state)
        backbone = I3D(width=config.backbone.width, padding=config.backbone.padding)
        backbone.load_state_dict(state, strict=True)
        return cls(backbone, config.backbone, config.preprocessing_obj, config.clip_protocol, device)

    def __call__(self, decoded: DecodedVideo) -> torch.Tensor:
        """uint8 frames (T, H, W, 3) -> per-clip features (num_clips, D) on the CPU."""
        return self.from_frames(decoded.frames[None])[0]

    @torch.inference_mode()
    def from_frames(self, frames: np.ndarray) -> torch.Tensor:
        """Decoded uint8 frames of B videos (B, T, H, W, 3) -> per-clip features (B, num_clips, D) on the CPU."""
        video = self.preprocessing.normalize(frames).to(self.device)
        kinetics_range = self.preprocessing.normalization == "kinetics"
        features = self.backbone.extract_clip_features(video, self.clips, batch_size=self.clip_batch_size,
                                                       check_range=kinetics_range)
        return features.cpu()
