"""Spatial preprocessing of one frame: resize the short side, convert to RGB, centre-crop.

Video frames and frame-folder images go through the same swscale resize (``VideoFrame.reformat``),
so both paths produce the same pixels from the same RGB content. The reference codes' stretch
(:func:`stretch_and_crop`) resizes full-size RGB frames with Pillow instead, as they did.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image


def short_side_size(
    width: int, height: int, short_side: int, sample_aspect: Fraction | None = None
) -> tuple[int, int]:
    """Output ``(width, height)`` whose short side is ``short_side``, keeping the display aspect.

    Anamorphic video (``sample_aspect`` != 1) is displayed ``width * sample_aspect`` pixels wide; the
    output keeps that displayed shape, so circles stay circles.
    """
    display_width = width * float(sample_aspect) if sample_aspect else float(width)
    scale = short_side / min(display_width, height)
    return max(short_side, round(display_width * scale)), max(short_side, round(height * scale))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size`` x ``size`` square of an (H, W, C) image (offsets rounded down)."""
    height, width = image.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return image[top : top + size, left : left + size]


def rotate_for_display(image: np.ndarray, rotation_degrees: float) -> np.ndarray:
    """Apply a display-matrix rotation (counter-clockwise degrees, as ``VideoFrame.rotation``).

    Only multiples of 90 degrees occur in practice (phone recordings); centre crop and rotation
    commute for those, so rotating the small cropped square is exact and cheap.
    """
    quarter_turns = round(rotation_degrees / 90) % 4
    return np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns else image


def resize_and_crop(
    frame: av.VideoFrame,
    resize: int,
    crop: int | None,
    sample_aspect: Fraction | None = None,
    reformatter: VideoReformatter | None = None,
    threads: int = 0,
) -> np.ndarray:
    """uint8 RGB (crop, crop, 3): bilinear resize so the short side is ``resize``, then centre crop
    (``crop=None``: the whole resized frame, for training's random crops). ``threads``: swscale's (0: one per
    core; the pixels are the same with any number).

    The full-resolution frame is never converted to RGB; swscale scales and converts in one step. Pass one
    ``reformatter`` for all frames of a video: it keeps its swscale context instead of setting one up per
    frame (``benchmarks/bench_decode.py``); the pixels are the same.
    """
    width, height = short_side_size(frame.width, frame.height, resize, sample_aspect)
    if reformatter is None:
        reformatter = VideoReformatter()
    small = reformatter.reformat(frame, width=width, height=height, format="rgb24", interpolation="BILINEAR",
                                 threads=threads)
    return np.ascontiguousarray(small.to_ndarray() if crop is None else center_crop(small.to_ndarray(), crop))


_PILLOW_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


def stretch_and_crop(rgb: np.ndarray, width: int, height: int, crop: int | None,
                     resample: str = "bilinear") -> np.ndarray:
    """uint8 RGB (crop, crop, 3): Pillow resize of ``rgb`` (H, W, 3) to exactly ``width`` x ``height``, then
    the centred square at offsets ``round((width - crop) / 2)``, ``round((height - crop) / 2)`` (Python's
    round, half to even); ``crop=None`` keeps the whole stretched frame (training's random crops).

    This is torchvideotransforms' ``Resize`` (``PIL.Image.resize``, aspect ratio ignored) followed by its
    ``CenterCrop``, the test transform of CoRe, TPT and FineDiving-TSA. ``resample``: ``"bilinear"`` or
    ``"nearest"`` (which one their library version applied is discussed in ``training/protocols.py``).
    """
    image = Image.fromarray(np.ascontiguousarray(rgb)).resize((width, height), _PILLOW_FILTERS[resample])
    if crop is None:
        return np.asarray(image)
    left, top = round((width - crop) / 2), round((height - crop) / 2)
    return np.ascontiguousarray(np.asarray(image)[top : top + crop, left : left + crop])
