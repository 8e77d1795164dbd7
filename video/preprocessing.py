"""The preprocessing a model was trained with, recorded beside its weights.

A model directory stores one :class:`Preprocessing`; the decoder applies it and the exemplar bank's
fingerprint includes it, so features made with other preprocessing are never mixed with this model's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from video.localise import MotionWindow

if TYPE_CHECKING:
    import torch

Normalization = Literal["kinetics", "imagenet"]
Sampling = Literal["uniform", "uniform_floor", "window_end"]
StretchFilter = Literal["bilinear", "nearest"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAMPLINGS: tuple[str, ...] = ("uniform", "uniform_floor", "window_end")
STRETCH_FILTERS: tuple[str, ...] = ("bilinear", "nearest")
# Options added after the first four fields: written to dicts only when set, so the dict (and with it the
# feature fingerprint) of every model made before they existed stays the same.
_OPTIONAL_FIELDS = ("sampling", "stretch_to", "stretch_filter", "motion_window")


@dataclass(frozen=True)
class Preprocessing:
    """How frames become a model input tensor.

    - ``num_frames``: T frames per video (CoRe: 103), chosen by ``sampling``:
      ``"uniform"`` spreads them over the frame range, rounding half up (``video.sampling``);
      ``"uniform_floor"`` spreads them and rounds down, as FineDiving-TSA's ``np.linspace(...).astype(int)``;
      ``"window_end"`` takes the T consecutive frames ending at the range's last frame (CoRe's MTL-AQA
      loader), starting before the range's first frame when the range is shorter than T.
    - ``resize``: the short side is resized to this many pixels, keeping the aspect ratio (swscale
      bilinear). Not used when ``stretch_to`` is set.
    - ``stretch_to``: ``(width, height)``: every frame is instead stretched to exactly this size with
      Pillow (``stretch_filter``), and the centre crop is offset by ``round((size - crop) / 2)``: the
      torchvideotransforms ``Resize`` + ``CenterCrop`` of CoRe and TSA (their ``Resize((455, 256))``
      stretches to 256 wide x 455 tall).
    - ``crop``: then a centred ``crop`` x ``crop`` square is cut (CoRe: 224).
    - ``normalization``: ``"kinetics"`` maps pixels to [-1, 1] (x / 127.5 - 1), the input range of the
      Kinetics I3D ports; ``"imagenet"`` uses ImageNet mean/std, as CoRe's training did.
    - ``motion_window``: when set, the frame range is narrowed, before sampling, to the span where the video
      moves (``video.localise``: the dive without the wait before it and the calm after it); ``None`` keeps
      the whole range.
    """

    num_frames: int = 103
    resize: int = 256
    crop: int = 224
    normalization: Normalization = "kinetics"
    sampling: Sampling = "uniform"
    stretch_to: tuple[int, int] | None = None
    stretch_filter: StretchFilter = "bilinear"
    motion_window: MotionWindow | None = None

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError("num_frames must be >= 1")
        if self.stretch_to is None:
            if self.crop < 1 or self.resize < self.crop:
                raise ValueError(f"need 1 <= crop <= resize, got crop={self.crop}, resize={self.resize}")
            if self.stretch_filter != "bilinear":
                raise ValueError("stretch_filter applies to stretch_to only; set stretch_to=(width, height)")
        else:
            if len(self.stretch_to) != 2:
                raise ValueError(f"stretch_to must be (width, height), got {self.stretch_to!r}")
            object.__setattr__(self, "stretch_to", (int(self.stretch_to[0]), int(self.stretch_to[1])))
            if self.crop < 1 or min(self.stretch_to) < self.crop:
                raise ValueError(f"need 1 <= crop <= both sides of stretch_to, got crop={self.crop}, "
                                 f"stretch_to={self.stretch_to}")
        if self.normalization not in ("kinetics", "imagenet"):
            raise ValueError(f"unknown normalization {self.normalization!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {self.sampling!r}; choose from {', '.join(SAMPLINGS)}")
        if self.motion_window is not None and not isinstance(self.motion_window, MotionWindow):
            raise ValueError(f"motion_window must be a MotionWindow or None, got {self.motion_window!r}")
        if self.stretch_filter not in STRETCH_FILTERS:
            raise ValueError(f"unknown stretch_filter {self.stretch_filter!r}; choose from {', '.join(STRETCH_FILTERS)}")

    def normalize(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 frames (T, H, W, 3) -> float32 model input (3, T, H, W) in the recorded range; a batch
        (B, T, H, W, 3) -> (B, 3, T, H, W). Read-only arrays (a memory-mapped frame cache) are copied.

        torch is imported here, not with the module, so decoding processes that never normalise start quickly."""
        import torch

        if isinstance(frames, np.ndarray) and not frames.flags.writeable:
            frames = np.array(frames)
        x = torch.as_tensor(frames).movedim(-1, -4).float()
        if self.normalization == "kinetics":
            return x.div_(127.5).sub_(1.0)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1, 1)
        return x.div_(255.0).sub_(mean).div_(std)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values; the options after ``normalization`` only when not default."""
        defaults = {f.name: f.default for f in fields(self) if f.name in _OPTIONAL_FIELDS}
        data = {k: v for k, v in asdict(self).items() if k not in defaults or v != defaults[k]}
        if self.stretch_to is not None:
            data["stretch_to"] = list(self.stretch_to)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(data)
        if values.get("stretch_to") is not None:
            values["stretch_to"] = tuple(values["stretch_to"])
        if values.get("motion_window") is not None:
            values["motion_window"] = MotionWindow.from_dict(values["motion_window"])
        return cls(**values)
