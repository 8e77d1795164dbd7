"""The preprocessing a model was trained with, recorded beside its weights.

A model directory stores one :class:`Preprocessing`; the decoder applies it and the exemplar bank's
fingerprint includes it, so features made with other preprocessing are never mixed with this model's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

Normalization = Literal["kinetics", "imagenet"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How frames become a model input tensor.

    - ``num_frames``: T frames sampled uniformly over the whole video (CoRe: 103).
    - ``resize``: the short side is resized to this many pixels, keeping the aspect ratio.
    - ``crop``: then a centred ``crop`` x ``crop`` square is cut (CoRe: 224).
    - ``normalization``: ``"kinetics"`` maps pixels to [-1, 1] (x / 127.5 - 1), the input range of the
      Kinetics I3D ports; ``"imagenet"`` uses ImageNet mean/std, as CoRe's training did.
    """

    num_frames: int = 103
    resize: int = 256
    crop: int = 224
    normalization: Normalization = "kinetics"

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError("num_frames must be >= 1")
        if self.crop < 1 or self.resize < self.crop:
            raise ValueError(f"need 1 <= crop <= resize, got crop={self.crop}, resize={self.resize}")
        if self.normalization not in ("kinetics", "imagenet"):
            raise ValueError(f"unknown normalization {self.normalization!r}")

    def normalize(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 frames (T, H, W, 3) -> float32 model input (3, T, H, W) in the recorded range."""
        x = torch.as_tensor(frames).permute(3, 0, 1, 2).float()
        if self.normalization == "kinetics":
            return x.div_(127.5).sub_(1.0)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
        return x.div_(255.0).sub_(mean).div_(std)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(**data)
