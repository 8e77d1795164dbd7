"""Contact sheets of what a model sees of synthetic videos, to check the faults are visible.

Frames are decoded with PyAV, sampled uniformly over the whole video, the short side resized and the
centre square cropped, as :class:`video.preprocessing.Preprocessing` describes (defaults: the demo
model's 103 frames, resize 128, crop 112).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from video.preprocessing import Preprocessing

DEMO_PREPROCESSING = Preprocessing(num_frames=103, resize=128, crop=112)


def model_view(video: Path, preprocessing: Preprocessing = DEMO_PREPROCESSING) -> np.ndarray:
    """(T, crop, crop, 3) uint8 frames of ``video`` after sampling, resizing and centre-cropping."""
    with av.open(str(video)) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    if not decoded:
        raise ValueError(f"{video} has no decodable video frames")
    indices = np.linspace(0, len(decoded) - 1, preprocessing.num_frames).round().astype(int)
    out = []
    for index in indices:
        image = Image.fromarray(decoded[index])
        scale = preprocessing.resize / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        left = (image.width - preprocessing.crop) // 2
        top = (image.height - preprocessing.crop) // 2
        out.append(np.asarray(image.crop((left, top, left + preprocessing.crop, top + preprocessing.crop))))
    return np.stack(out)


def contact_sheet(
    videos: Sequence[Path],
    out_png: Path,
    captions: Sequence[str] | None = None,
    frames_per_video: int = 12,
    preprocessing: Preprocessing = DEMO_PREPROCESSING,
) -> Path:
    """One row per video of ``frames_per_video`` model-view frames, evenly spaced; saved as PNG."""
    rows = []
    for i, video in enumerate(videos):
        frames = model_view(video, preprocessing)
        picks = np.linspace(0, len(frames) - 1, frames_per_video).round().astype(int)
        row = Image.fromarray(np.concatenate([frames[k] for k in picks], axis=1))
        if captions is not None:
            ImageDraw.Draw(row).text((2, 1), captions[i], fill=(255, 255, 0))
        rows.append(np.asarray(row))
    out_png = Path(out_png)
    Image.fromarray(np.concatenate(rows, axis=0)).save(out_png)
    return out_png
