"""Load a folder of extracted frames (JPEG/PNG) as if it were a decoded video.

The MTL-AQA reference tools store each video as numbered JPEG frames. This applies the same
sampling, resize and centre crop as :func:`video.decode.decode_video` (the same swscale resize, or the
same Pillow stretch), so features from frame folders and from video files are comparable.
"""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image, UnidentifiedImageError

from video.decode import DecodedVideo
from video.errors import NotAVideoError, TruncatedVideoError, VideoFileNotFoundError, ZeroFramesError
from video.preprocessing import Preprocessing
from video.probe import VideoInfo
from video.sampling import frame_range, sample_frame_indices
from video.spatial import resize_and_crop, stretch_and_crop

FRAME_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


def list_frame_files(folder: Path) -> list[Path]:
    """Image files in ``folder`` in natural order (``img_9.jpg`` before ``img_10.jpg``)."""

    def natural_key(path: Path) -> list[int | str]:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]

    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES]
    return sorted(files, key=natural_key)


def decode_frame_folder(
    folder: Path,
    preprocessing: Preprocessing,
    start_frame: int | None = None,
    end_frame: int | None = None,
    fps: float | None = None,
) -> DecodedVideo:
    """Sample ``preprocessing.num_frames`` frames over the folder's ``[start, end]`` range.

    Frame index i is the i-th file in natural order (for zero-padded names, the sorted order the
    reference loaders use); ``preprocessing.sampling`` chooses the frames as in ``decode_video``. Frames carry no timing: ``timestamps`` are
    ``index / fps`` when ``fps`` is given, else NaN (and ``info.fps`` is 0).
    """
    files, indices = sample_frame_folder(folder, preprocessing, start_frame, end_frame)
    frames = load_frames(files, indices, preprocessing)
    width, height = _image_size(files[0])
    info = VideoInfo(
        codec=files[0].suffix.lower().lstrip("."),
        width=width,
        height=height,
        fps=fps or 0.0,
        duration_seconds=len(files) / fps if fps else 0.0,
        frame_count=len(files),
        frame_count_source="counted",
        has_audio=False,
        container="frame_folder",
        size_bytes=sum(f.stat().st_size for f in files),
        stream_index=0,
    )
    timestamps = indices / fps if fps else np.full(len(indices), np.nan)
    return DecodedVideo(frames=frames, frame_indices=indices, timestamps=timestamps, info=info)


def sample_frame_folder(
    folder: Path, preprocessing: Preprocessing, start_frame: int | None = None, end_frame: int | None = None
) -> tuple[list[Path], np.ndarray]:
    """The folder's frame files in order and the indices :func:`decode_frame_folder` reads."""
    if preprocessing.motion_window is not None:
        raise ValueError("motion localisation (preprocessing.motion_window) reads video files only; "
                         "encode the frame folder as a video or use a preprocessing without it")
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoFileNotFoundError(f"There is no frame folder at {folder}.")
    files = list_frame_files(folder)
    if not files:
        raise ZeroFramesError(f"The folder {folder.name} holds no JPEG or PNG frames.")
    first, last = frame_range(len(files), start_frame, end_frame)
    return files, sample_frame_indices(first, last, preprocessing.num_frames, preprocessing.sampling)


def load_frames(files: list[Path], indices: np.ndarray, preprocessing: Preprocessing,
                full_frame: bool = False) -> np.ndarray:
    """uint8 RGB frames (len(indices), crop, crop, 3) of ``files[indices]``, each file read once;
    ``full_frame`` skips the centre crop (training's random crops)."""
    wanted, slot = np.unique(np.asarray(indices, dtype=np.int64), return_inverse=True)
    reformatter = VideoReformatter()
    frames = np.stack([_load_frame(files[i], preprocessing, reformatter, full_frame) for i in wanted])
    return frames[slot.reshape(-1)]


def _load_frame(path: Path, preprocessing: Preprocessing, reformatter: VideoReformatter,
                full_frame: bool = False) -> np.ndarray:
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except UnidentifiedImageError as error:
        raise NotAVideoError(f"The frame file {path.name} is not an image.") from error
    except OSError as error:
        raise TruncatedVideoError(f"The frame file {path.name} is damaged or truncated ({error}).") from error
    crop = None if full_frame else preprocessing.crop
    if preprocessing.stretch_to is not None:
        width, height = preprocessing.stretch_to
        return stretch_and_crop(rgb, width, height, crop, preprocessing.stretch_filter)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return resize_and_crop(frame, preprocessing.resize, crop, reformatter=reformatter)


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except OSError as error:
        raise NotAVideoError(f"The frame file {path.name} is not an image.") from error
