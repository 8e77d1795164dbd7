"""Which source frames a model sees: uniform temporal sampling over a frame range, or a fixed window."""

from __future__ import annotations

import numpy as np

from video.errors import FrameRangeError


def frame_range(num_source_frames: int, start_frame: int | None, end_frame: int | None) -> tuple[int, int]:
    """The inclusive ``(first, last)`` frame range to sample, checked against the source length.

    ``None`` means the first / last frame of the source. Raises :class:`FrameRangeError` when the cut
    does not fit the source (a common symptom of annotations made on a differently decoded copy).
    """
    first = 0 if start_frame is None else start_frame
    last = num_source_frames - 1 if end_frame is None else end_frame
    if first < 0 or last < first:
        raise FrameRangeError(
            f"The requested frame range {first}-{last} is empty or negative; "
            "start_frame must be >= 0 and <= end_frame."
        )
    if last >= num_source_frames:
        raise FrameRangeError(
            f"The requested frame range {first}-{last} goes past the end of the video, "
            f"which has {num_source_frames} frames (0-{num_source_frames - 1})."
        )
    return first, last


def uniform_frame_indices(first: int, last: int, num_frames: int) -> np.ndarray:
    """``num_frames`` indices spread uniformly over ``[first, last]`` (inclusive).

    ``index_t = round_half_up(first + t * (last - first) / (T - 1))`` for t = 0..T-1, so for T >= 2
    the first and last frames are always included (T = 1 takes the middle frame). When the range
    holds fewer than T frames the indices repeat (neighbouring t round to the same frame), keeping
    the output length T.
    """
    if num_frames == 1:
        return np.array([(first + last) // 2], dtype=np.int64)
    return np.floor(np.linspace(first, last, num_frames) + 0.5).astype(np.int64)


def floor_uniform_frame_indices(first: int, last: int, num_frames: int) -> np.ndarray:
    """``num_frames`` indices spread uniformly over ``[first, last]``, rounded down.

    ``index_t = floor(first + t * (last - first) / (T - 1))``, computed as FineDiving-TSA's loader does
    (``np.linspace(first, last, T).astype(int)``), so the same floating-point values round the same way.
    """
    return np.linspace(first, last, num_frames).astype(np.int64)


def window_end_frame_indices(last: int, num_frames: int) -> np.ndarray:
    """The ``num_frames`` consecutive indices ending at ``last``: ``last - T + 1 .. last``.

    CoRe's MTL-AQA loader reads the dive this way, ignoring the annotated start. Raises
    :class:`FrameRangeError` when the source has fewer than T frames up to ``last``.
    """
    first = last - num_frames + 1
    if first < 0:
        raise FrameRangeError(
            f"The {num_frames} frames ending at frame {last} would start at frame {first}: "
            f"the video has only {last + 1} frames up to there."
        )
    return np.arange(first, last + 1, dtype=np.int64)


def sample_frame_indices(first: int, last: int, num_frames: int, sampling: str) -> np.ndarray:
    """The source frames a model sees for the checked range ``[first, last]`` (see ``Preprocessing.sampling``)."""
    if sampling == "uniform":
        return uniform_frame_indices(first, last, num_frames)
    if sampling == "uniform_floor":
        return floor_uniform_frame_indices(first, last, num_frames)
    if sampling == "window_end":
        return window_end_frame_indices(last, num_frames)
    raise ValueError(f"unknown sampling {sampling!r}")
