"""Decoded frames -> per-clip backbone features, with the fingerprint that names them.

The one place that applies a model's recorded preprocessing and clip protocol to its backbone: the
scorer, the training feature cache and ``aqa bank build`` all extract features through it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from models.clips import ClipProtocol
from models.i3d import I3D
from models.model_dir import BACKBONE_WEIGHTS, BackboneConfig, ModelConfig, ModelDirError, feature_fingerprint
from video.decode import DecodedVideo
from video.preprocessing import Preprocessing


class FeatureExtractor:
    """A backbone in eval mode with its preprocessing and clip protocol."""

    def __init__(self, backbone: I3D, config: BackboneConfig, preprocessing: Preprocessing, clips: ClipProtocol,
                 device: torch.device | str = "cpu", clip_batch_size: int | None = None) -> None:
        self.backbone = backbone.eval().to(device)
        self.config = config
        self.preprocessing = preprocessing
        self.clips = clips
        self.device = torch.device(device)
        self.clip_batch_size = clip_batch_size
        self.fingerprint = feature_fingerprint(backbone.state_dict(), config, preprocessing, clips)

    @classmethod
    def from_model_dir(cls, model_dir: Path, device: str = "cpu", config: ModelConfig | None = None) -> FeatureExtractor:
        model_dir = Path(model_dir)
        config = config or ModelConfig.load(model_dir)
        weights = model_dir / BACKBONE_WEIGHTS
        if not weights.is_file():
            raise ModelDirError(f"{model_dir} is missing {BACKBONE_WEIGHTS}")
        backbone = I3D(width=config.backbone.width, padding=config.backbone.padding)
        backbone.load_state_dict(load_file(str(weights)), strict=True)
        return cls(backbone, config.backbone, config.preprocessing_obj, config.clip_protocol, device)

    @torch.inference_mode()
    def __call__(self, decoded: DecodedVideo) -> torch.Tensor:
        """uint8 frames (T, H, W, 3) -> per-clip features (num_clips, D) on the CPU."""
        video = self.preprocessing.normalize(decoded.frames).to(self.device)
        kinetics_range = self.preprocessing.normalization == "kinetics"
        features = self.backbone.extract_clip_features(video, self.clips, batch_size=self.clip_batch_size,
                                                       check_range=kinetics_range)
        return features[0].cpu()
