"""Decode a video file into the T preprocessed frames a model sees.

Pipeline: probe (typed errors, limits) -> exact frame count (packets demuxed and counted, not
decoded) -> [when the preprocessing has a motion window: a pass over grey thumbnails of every frame finds
the span that moves] -> T uniform indices -> one threaded decode pass that converts only the sampled
frames, each straight to the small target size, and stops after the last one.

Why two passes: counting packets took 8-12 ms where decoding took 0.26-0.8 s (4 s and 12 s
854x480 H.264 clips, benchmarks/bench_decode.py, 2-core machine), and it spares converting and
holding every frame: the one-pass alternative (convert all, sample at the end) took as long or up to
1.09 x longer, and its memory grows with the video's length. One swscale context (a shared
``VideoReformatter``) serves all frames of a video: 1.07-1.10 x faster than a context per frame on an
idle machine, and far more when other processes compete for the cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from video.errors import FrameRangeError, TruncatedVideoError
from video.localise import (
    ASSUMED_FPS,
    THUMBNAIL_WIDTH,
    MotionWindow,
    grey_thumbnail,
    locate_action,
    motion_energy,
    thumbnail_height,
)
from video.preprocessing import Preprocessing
from video.probe import DEFAULT_LIMITS, VideoInfo, VideoLimits, check_frame_size, open_container, probe_video
from video.sampling import frame_range, sample_frame_indices
from video.spatial import resize_and_crop, rotate_for_display, stretch_and_crop


@dataclass(frozen=True)
class DecodedVideo:
    """T sampled frames, ready for ``Preprocessing.normalize``.

    - ``frames``: uint8 RGB (T, crop, crop, 3).
    - ``frame_indices``: the source frame index of each sampled frame (int64, non-decreasing).
    - ``timestamps``: seconds of each sampled frame after the first shown frame (NaN when the source
      has no timing, e.g. a frame folder without an fps).
    - ``info``: the probe of the source (``frame_count`` is exact for decoded videos).
    """

    frames: np.ndarray
    frame_indices: np.ndarray
    timestamps: np.ndarray
    info: VideoInfo


def decode_video(
    path: Path,
    preprocessing: Preprocessing,
    limits: VideoLimits = DEFAULT_LIMITS,
    start_frame: int | None = None,
    end_frame: int | None = None,
) -> DecodedVideo:
    """Sample ``preprocessing.num_frames`` frames over ``[start_frame, end_frame]``.

    The inclusive frame range cuts one dive out of a longer source (MTL-AQA's layout); ``None`` means
    the whole video; ``preprocessing.motion_window`` narrows it to the span that moves (``video.localise``,
    from grey thumbnails of every frame of the range). ``preprocessing.sampling`` picks the frames: uniformly
    (fewer source frames than T repeat frames, see ``uniform_frame_indices``), or the T consecutive frames
    ending at ``end_frame`` (``"window_end"``, CoRe's MTL-AQA loader). Each sampled frame is resized so its
    short side is ``preprocessing.resize`` (display aspect kept, phone rotation applied) and centre-cropped to
    ``preprocessing.crop``; with ``preprocessing.stretch_to`` it is instead converted to RGB at full
    size, rotated for display, stretched and cropped (``video.spatial.stretch_and_crop``). Limits apply
    to the whole file; the source is decoded from its start up to the last sampled frame.

    Raises a :class:`video.errors.VideoError` subclass for every unusable file.
    """
    info, indices = sample_video(path, preprocessing, limits, start_frame, end_frame)
    return decode_frames(path, indices, preprocessing, limits, info=info)


def sample_video(
    path: Path,
    preprocessing: Preprocessing,
    limits: VideoLimits = DEFAULT_LIMITS,
    start_frame: int | None = None,
    end_frame: int | None = None,
) -> tuple[VideoInfo, np.ndarray]:
    """The probe (exact frame count) and the source frame indices :func:`decode_video` reads.

    With a motion window this runs the thumbnail pass that localises the action.
    """
    path = Path(path)
    info = probe_video(path, limits, count_frames=True)
    first, last = frame_range(info.frame_count, start_frame, end_frame)
    if preprocessing.motion_window is not None:
        first, last = _localise(path, info, first, last, preprocessing.motion_window, limits)
    return info, sample_frame_indices(first, last, preprocessing.num_frames, preprocessing.sampling)


def decode_frames(
    path: Path,
    indices: np.ndarray,
    preprocessing: Preprocessing,
    limits: VideoLimits = DEFAULT_LIMITS,
    info: VideoInfo | None = None,
    full_frame: bool = False,
) -> DecodedVideo:
    """The source frames at ``indices`` (any order, repeats allowed), preprocessed spatially.

    ``full_frame`` skips the centre crop: frames keep the resized (or stretched) size, for training's
    random crops. ``info`` is the file's probe when the caller already has it (:func:`sample_video`).
    """
    path = Path(path)
    info = info if info is not None else probe_video(path, limits, count_frames=True)
    indices = np.asarray(indices, dtype=np.int64)
    wanted = np.unique(indices)
    if wanted[0] < 0 or wanted[-1] >= info.frame_count:
        raise FrameRangeError(f"Frames {wanted[0]}-{wanted[-1]} were asked of a video with {info.frame_count} "
                              f"frames (0-{info.frame_count - 1}).")
    frames, timestamps = _decode_wanted_frames(path, info, wanted, preprocessing, limits, full_frame)
    slot = np.searchsorted(wanted, indices)
    return DecodedVideo(frames=frames[slot], frame_indices=indices, timestamps=timestamps[slot], info=info)


def _localise(
    path: Path, info: VideoInfo, first: int, last: int, window: MotionWindow, limits: VideoLimits
) -> tuple[int, int]:
    """The span of ``[first, last]`` where the action is, from grey thumbnails (a first decode pass).

    Two passes keep memory bounded at the same speed as one pass that preprocesses every frame of the range
    and keeps them (24.7 against 25.4 ms per 320x240 synthetic dive with the demo's preprocessing, idle).
    """
    height = thumbnail_height(info.width, info.height)
    thumbnails = np.empty((last - first + 1, height, THUMBNAIL_WIDTH), dtype=np.uint8)
    reformatter = VideoReformatter()
    for index, frame, _, _ in _decoded_frames(path, info, limits, last):
        if index >= first:
            thumbnails[index - first] = grey_thumbnail(frame, height, reformatter)
    start, end = locate_action(motion_energy(thumbnails), info.fps if info.fps > 0 else ASSUMED_FPS, window)
    return first + start, first + end


def _decoded_frames(
    path: Path, info: VideoInfo, limits: VideoLimits, last: int
) -> Iterator[tuple[int, av.VideoFrame, float, Fraction | None]]:
    """Frames ``0..last`` as ``(index, frame, seconds after the first frame, sample aspect)``, threaded decode.

    Seconds come from the frame's timestamp, else ``index / fps``, else NaN. Raises
    :class:`TruncatedVideoError` when decoding fails or the file ends before frame ``last``.
    """
    decoded = 0
    with open_container(path, limits) as container:
        stream = container.streams[info.stream_index]
        stream.codec_context.thread_type = "AUTO"
        sample_aspect = _valid(stream.sample_aspect_ratio)
        start_seconds: float | None = None
        try:
            for frame in container.decode(stream):
                if start_seconds is None:
                    start_seconds = frame.time or 0.0
                check_frame_size(frame.width, frame.height, limits)
                if frame.time is not None:
                    seconds = frame.time - start_seconds
                else:
                    seconds = decoded / info.fps if info.fps else float("nan")
                yield decoded, frame, seconds, sample_aspect
                if decoded == last:
                    return
                decoded += 1
        except av.FFmpegError as error:
            raise TruncatedVideoError(
                f"Decoding failed after {decoded} of {info.frame_count} frames: the file looks "
                f"truncated or damaged ({error.strerror or error})."
            ) from error
    raise TruncatedVideoError(
        f"The file ends before the video does: it looks truncated (decoded {decoded} of {info.frame_count} frames)."
    )


def _decode_wanted_frames(
    path: Path, info: VideoInfo, wanted: np.ndarray, preprocessing: Preprocessing, limits: VideoLimits,
    full_frame: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode up to the last wanted index, converting only the wanted frames.

    Returns (frames, timestamps) for each entry of ``wanted`` (sorted, unique source indices).
    """
    frames: np.ndarray | None = None
    timestamps = np.full(len(wanted), np.nan)
    filled = 0
    reformatter = VideoReformatter()
    for index, frame, seconds, sample_aspect in _decoded_frames(path, info, limits, int(wanted[-1])):
        if index == wanted[filled]:
            image = _preprocess_frame(frame, preprocessing, sample_aspect, reformatter, full_frame)
            if frames is None:
                frames = np.empty((len(wanted), *image.shape), dtype=np.uint8)
            frames[filled] = image
            timestamps[filled] = seconds
            filled += 1
    assert frames is not None  # _decoded_frames raises unless it reached wanted[-1]
    return frames, timestamps


def _preprocess_frame(
    frame: av.VideoFrame, preprocessing: Preprocessing, sample_aspect: Fraction | None, reformatter: VideoReformatter,
    full_frame: bool = False,
) -> np.ndarray:
    """One decoded frame -> uint8 RGB (crop, crop, 3) as shown (rotation applied); uncropped with ``full_frame``."""
    crop = None if full_frame else preprocessing.crop
    if preprocessing.stretch_to is not None:
        rgb = rotate_for_display(frame.to_ndarray(format="rgb24"), frame.rotation)
        width, height = preprocessing.stretch_to
        return stretch_and_crop(rgb, width, height, crop, preprocessing.stretch_filter)
    small = resize_and_crop(frame, preprocessing.resize, crop, sample_aspect, reformatter)
    return rotate_for_display(small, frame.rotation)


def _valid(sample_aspect: Fraction | None) -> Fraction | None:
    """A usable sample aspect ratio (FFmpeg reports 0/1 or nothing when unknown)."""
    return sample_aspect if sample_aspect and sample_aspect > 0 else None
