"""Contact sheets of what a model sees of synthetic videos, to check the faults are visible.

Frames are decoded with PyAV, the short side resized and the centre square cropped, as
:class:`video.preprocessing.Preprocessing` describes (defaults: the demo model's 103 frames, resize
128, crop 112). :func:`contact_sheet` samples frames uniformly over whole videos, as the model does;
:func:`action_contact_sheet` picks them from take-off to just after the entry, to look at the faults.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from training.synth.camera import MODEL_CROP, MODEL_RESIZE
from training.synth.render import encode_h264
from training.synth.scene import SynthDive
from video.preprocessing import Preprocessing

DEMO_PREPROCESSING = Preprocessing(num_frames=103, resize=MODEL_RESIZE, crop=MODEL_CROP)
AFTER_ENTRY_SHOWN_S = 0.5
"""Physical seconds after the entry the last frame of :func:`action_contact_sheet` shows."""


def to_model_view(frame: np.ndarray, preprocessing: Preprocessing = DEMO_PREPROCESSING) -> np.ndarray:
    """One RGB frame (H, W, 3) with its short side resized and its centre square cropped."""
    image = Image.fromarray(frame)
    scale = preprocessing.resize / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    left = (image.width - preprocessing.crop) // 2
    top = (image.height - preprocessing.crop) // 2
    return np.asarray(image.crop((left, top, left + preprocessing.crop, top + preprocessing.crop)))


def _decode(video: Path) -> list[np.ndarray]:
    with av.open(str(video)) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    if not decoded:
        raise ValueError(f"{video} has no decodable video frames")
    return decoded


def model_view(video: Path, preprocessing: Preprocessing = DEMO_PREPROCESSING) -> np.ndarray:
    """(T, crop, crop, 3) uint8 frames of ``video`` after sampling, resizing and centre-cropping."""
    decoded = _decode(video)
    indices = np.linspace(0, len(decoded) - 1, preprocessing.num_frames).round().astype(int)
    return np.stack([to_model_view(decoded[index], preprocessing) for index in indices])


def _save_sheet(rows: list[np.ndarray], captions: Sequence[str] | None, out_png: Path) -> Path:
    images = [Image.fromarray(row) for row in rows]
    if captions is not None:
        for image, caption in zip(images, captions):
            ImageDraw.Draw(image).text((2, 1), caption, fill=(255, 255, 0))
    out_png = Path(out_png)
    Image.fromarray(np.concatenate([np.asarray(image) for image in images], axis=0)).save(out_png)
    return out_png


def contact_sheet(
    videos: Sequence[Path],
    out_png: Path,
    captions: Sequence[str] | None = None,
    frames_per_video: int = 12,
    preprocessing: Preprocessing = DEMO_PREPROCESSING,
) -> Path:
    """One row per video of ``frames_per_video`` model-view frames, evenly spaced; saved as PNG."""
    rows = []
    for video in videos:
        frames = model_view(video, preprocessing)
        picks = np.linspace(0, len(frames) - 1, frames_per_video).round().astype(int)
        rows.append(np.concatenate([frames[k] for k in picks], axis=1))
    return _save_sheet(rows, captions, out_png)


def action_contact_sheet(
    dives: Sequence[SynthDive],
    out_png: Path,
    captions: Sequence[str] | None = None,
    frames_per_dive: int = 10,
    size: tuple[int, int] = (320, 240),
    fps: int = 25,
    preprocessing: Preprocessing = DEMO_PREPROCESSING,
) -> Path:
    """One row per dive: model-view frames evenly spaced in physical time from take-off to
    :data:`AFTER_ENTRY_SHOWN_S` after the entry, decoded from a real H.264 encoding."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, dive in enumerate(dives):
            renderer = dive.renderer(size[0], size[1], fps)
            video = Path(tmp) / f"dive_{i}.mp4"
            encode_h264(renderer.frames(), video, fps)
            decoded = _decode(video)
            wanted = np.linspace(0.0, renderer.motion.flight_seconds + AFTER_ENTRY_SHOWN_S, frames_per_dive)
            picks = [int(np.argmin(np.abs(renderer.times - t))) for t in wanted]
            rows.append(np.concatenate([to_model_view(decoded[k], preprocessing) for k in picks], axis=1))
    return _save_sheet(rows, captions, out_png)
