"""Typed errors for every way a file can fail to become model input.

Each error has a stable snake_case ``code`` (for HTTP mapping, job records and metrics) and a
``reason``: one sentence a judge or an operator understands. Callers never see raw ``av.error``
types; the decoder translates them into these.
"""

from __future__ import annotations

from typing import ClassVar


class VideoError(Exception):
    """Base class: the file cannot be used as a video input."""

    code: ClassVar[str] = "video_error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


class VideoFileNotFoundError(VideoError):
    """The path does not name a readable regular file (or, for frame folders, a directory)."""

    code = "file_not_found"


class NotAVideoError(VideoError):
    """Text, random bytes, a single still image, or anything FFmpeg cannot read as a container."""

    code = "not_a_video"


class NoVideoStreamError(VideoError):
    """A media file without a video stream, e.g. audio only (cover art does not count)."""

    code = "no_video_stream"


class ZeroFramesError(VideoError):
    """A container whose video stream holds no frames."""

    code = "zero_frames"


class TruncatedVideoError(VideoError):
    """The file ends, or stops decoding, before the video it declares is complete."""

    code = "truncated"


class UnsupportedCodecError(VideoError):
    """The codec is outside the allow-list, or this FFmpeg build has no decoder for it."""

    code = "unsupported_codec"


class VideoTooLongError(VideoError):
    """More seconds or frames than :class:`video.probe.VideoLimits` allows."""

    code = "too_long"


class VideoTooLargeError(VideoError):
    """A frame has more pixels (width x height) than :class:`video.probe.VideoLimits` allows."""

    code = "too_large"


class FrameRangeError(VideoError):
    """The requested ``start_frame``/``end_frame`` cut lies outside the video's frames."""

    code = "bad_frame_range"
