"""Which source frames a model sees: uniform temporal sampling over a frame range."""

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
