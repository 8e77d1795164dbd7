"""Probe a video file: what it holds, and whether the service accepts it.

Probing reads container headers (and, when asked, the packet index) through FFmpeg's streaming I/O;
it never decodes pictures and never reads the whole file into memory. Every failure is a
:class:`video.errors.VideoError` with a human reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
from av.container import InputContainer
from av.stream import Disposition
from av.video.stream import VideoStream

from video.errors import (
    NotAVideoError,
    NoVideoStreamError,
    TruncatedVideoError,
    UnsupportedCodecError,
    VideoFileNotFoundError,
    VideoTooLargeError,
    VideoTooLongError,
    ZeroFramesError,
)

DEFAULT_ALLOWED_CODECS = frozenset(
    {"h264", "hevc", "mpeg4", "vp8", "vp9", "av1", "mjpeg", "mpeg1video", "mpeg2video", "prores"}
)

# FFmpeg demuxer names (any one name of a demuxer matches it). Playlist and indirection demuxers
# (hls, concat, dash, ...) are left out on purpose: they make FFmpeg open other files or URLs named
# inside an upload. Audio-only and still-image demuxers are in so those files get a precise reason.
DEFAULT_ALLOWED_DEMUXERS = frozenset(
    {
        # video containers and raw video streams
        "mov", "matroska", "avi", "mpegts", "mpeg", "flv", "asf", "ogg", "mxf", "ivf", "obu",
        "h264", "hevc", "m4v", "mjpeg", "gif",
        # audio only
        "wav", "mp3", "flac", "aac",
        # still images
        "image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif_pipe",
    }
)  # fmt: skip

FrameCountSource = Literal["declared", "counted", "estimated"]


@dataclass(frozen=True)
class VideoLimits:
    """What the service accepts; every field can be overridden (``None`` codecs/demuxers: any)."""

    max_seconds: float = 120.0
    max_pixels: int = 3840 * 2160
    max_frames: int = 20_000
    allowed_codecs: frozenset[str] | None = DEFAULT_ALLOWED_CODECS
    allowed_demuxers: frozenset[str] | None = DEFAULT_ALLOWED_DEMUXERS


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learned about a file's video stream.

    ``frame_count`` comes from ``frame_count_source``: ``"declared"`` by the container index (MP4,
    AVI), ``"estimated"`` as duration x fps, or ``"counted"``: the frames that will be shown, by
    demuxing every packet (``probe_video(..., count_frames=True)``, as ``decode_video`` does).
    """

    codec: str
    width: int
    height: int
    fps: float
    duration_seconds: float
    frame_count: int
    frame_count_source: FrameCountSource
    has_audio: bool
    container: str
    size_bytes: int
    stream_index: int


DEFAULT_LIMITS = VideoLimits()


def probe_video(path: Path, limits: VideoLimits = DEFAULT_LIMITS, count_frames: bool = False) -> VideoInfo:
    """Describe the file's video stream and check it against ``limits``.

    With ``count_frames`` the file is demuxed to the end and its packets counted without decoding, so
    ``frame_count`` is exact even where the container declares none (Matroska/WebM, MPEG-TS) or
    declares frames an edit list hides (trimmed MP4); the limits are enforced while counting, and a
    file holding less than its header declares is reported as truncated.
    """
    path = Path(path)
    with open_container(path, limits) as container:
        stream = select_video_stream(container, path)
        codec = _accepted_codec(stream, limits)
        info = _describe(container, stream, codec, path)
        _check_limits(info, limits)
        return _scan_packets(container, stream, info, limits, count_all=count_frames)


@contextmanager
def open_container(path: Path, limits: VideoLimits) -> Iterator[InputContainer]:
    """Open ``path`` for demuxing, turning FFmpeg's open failures into typed errors.

    Only local-file I/O and the ``limits.allowed_demuxers`` are permitted, so a crafted upload (an
    HLS playlist, say) cannot make FFmpeg read other files or URLs.
    """
    if not path.is_file():
        raise VideoFileNotFoundError(f"There is no file at {path}.")
    if path.stat().st_size == 0:
        raise NotAVideoError("The file is empty (0 bytes).")
    options = {"protocol_whitelist": "file"}
    if limits.allowed_demuxers is not None:
        options["format_whitelist"] = ",".join(sorted(limits.allowed_demuxers))
    try:
        container = av.open(str(path), mode="r", options=options)
    except av.FFmpegError as error:
        raise _unopenable_file_error(path, refused_format=isinstance(error, av.ArgumentError)) from error
    with container:
        yield container


def select_video_stream(container: InputContainer, path: Path) -> VideoStream:
    """The first real video stream (cover art is not video), or the typed reason there is none."""
    demuxer = container.format.name
    if demuxer == "tty":  # FFmpeg renders text files named *.txt as pictures
        raise NotAVideoError("The file is plain text, not a video.")
    if demuxer == "image2" or demuxer.endswith("_pipe"):
        image_kind = demuxer.removesuffix("_pipe").upper()
        raise NotAVideoError(f"The file is a single still image ({image_kind}), not a video.")
    videos = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    if videos:
        return videos[0]
    mp4_damage = _mp4_damage(path)
    if mp4_damage:
        raise TruncatedVideoError(mp4_damage)
    if container.streams.audio:
        raise NoVideoStreamError("The file holds audio but no video stream.")
    if len(container.streams):
        raise NoVideoStreamError("The file holds no video stream (only subtitle or data streams).")
    raise ZeroFramesError("The file is a valid media container, but its tracks hold no frames.")


def declared_stream_seconds(stream: VideoStream) -> float | None:
    """The video stream's own duration from the container header, if the container records one.

    MP4/AVI store it as ``stream.duration``; FFmpeg's Matroska muxer writes a ``DURATION`` tag
    (``HH:MM:SS.nnnnnnnnn``). The container-wide duration is not used: audio may outlast the video.
    """
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if not tag:
        return None
    try:
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _accepted_codec(stream: VideoStream, limits: VideoLimits) -> str:
    context = stream.codec_context
    if context is None:
        raise UnsupportedCodecError("This server's FFmpeg has no decoder for the file's video codec.")
    codec = context.codec.canonical_name
    if limits.allowed_codecs is not None and codec not in limits.allowed_codecs:
        accepted = ", ".join(sorted(limits.allowed_codecs))
        raise UnsupportedCodecError(
            f"The video codec '{codec}' ({context.codec.long_name}) is not accepted; "
            f"accepted codecs: {accepted}."
        )
    return codec


def _describe(container: InputContainer, stream: VideoStream, codec: str, path: Path) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    declared = declared_stream_seconds(stream)
    if declared is not None:
        duration = declared
    elif container.duration:
        duration = container.duration / av.time_base
    else:
        duration = stream.frames / fps if stream.frames and fps else 0.0
    if stream.frames > 0:
        frame_count, source = stream.frames, "declared"
    else:
        frame_count, source = round(duration * fps), "estimated"
    return VideoInfo(
        codec=codec,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        fps=fps,
        duration_seconds=duration,
        frame_count=frame_count,
        frame_count_source=source,
        has_audio=bool(container.streams.audio),
        container=container.format.name,
        size_bytes=path.stat().st_size,
        stream_index=stream.index,
    )


def check_frame_size(width: int, height: int, limits: VideoLimits) -> None:
    """Raise :class:`VideoTooLargeError` when one frame has more pixels than allowed."""
    if width * height > limits.max_pixels:
        raise VideoTooLargeError(
            f"The frames are {width}x{height} = {width * height:,} pixels; "
            f"the limit is {limits.max_pixels:,} pixels per frame."
        )


def _check_limits(info: VideoInfo, limits: VideoLimits) -> None:
    check_frame_size(info.width, info.height, limits)
    if info.duration_seconds > limits.max_seconds:
        raise VideoTooLongError(
            f"The video lasts {info.duration_seconds:.1f} s; the limit is {limits.max_seconds:g} s."
        )
    if info.frame_count > limits.max_frames:
        raise VideoTooLongError(
            f"The video has {info.frame_count:,} frames; the limit is {limits.max_frames:,} frames."
        )


def _scan_packets(
    container: InputContainer, stream: VideoStream, info: VideoInfo, limits: VideoLimits, count_all: bool
) -> VideoInfo:
    """Demux (never decode) the video packets: at least one frame must exist.

    With ``count_all``, read every packet, enforcing the limits on the way, and count the frames that
    will be shown: packets with data and without the discard flag (an MP4 edit list that trims the
    start marks the trimmed frames so). A cut file keeps its header, so it is truncated when it
    stores fewer packets than its index declares (MP4, AVI) or, without a declared count, ends more
    than two frame durations before its declared duration (Matroska).
    """
    time_base = stream.time_base or Fraction(1, 1)
    stored = shown = 0
    first_ticks: int | None = None
    end_ticks: int | None = None
    try:
        for packet in container.demux(stream):
            if packet.size == 0 and packet.pts is None and packet.dts is None:
                continue  # the end-of-stream marker PyAV yields for flushing decoders
            stored += 1
            if not packet.size or packet.is_discard:
                continue
            shown += 1
            if not count_all:
                break
            if shown > limits.max_frames:
                raise VideoTooLongError(f"The video has more than {limits.max_frames:,} frames, the limit.")
            if packet.pts is not None:
                first_ticks = packet.pts if first_ticks is None else min(first_ticks, packet.pts)
                end_ticks = max(end_ticks or packet.pts, packet.pts + (packet.duration or 0))
                if float((packet.pts - first_ticks) * time_base) > limits.max_seconds:
                    raise VideoTooLongError(f"The video lasts more than {limits.max_seconds:g} s, the limit.")
    except av.FFmpegError as error:
        raise TruncatedVideoError(
            f"The file breaks off after {shown} video frames: it looks truncated or damaged."
        ) from error
    if shown == 0:
        raise ZeroFramesError("The video stream holds no frames.")
    if not count_all:
        return info
    if 0 < stream.frames and stored < stream.frames:
        raise TruncatedVideoError(
            f"The file ends before the video does: it looks truncated (it holds {stored} of the "
            f"{stream.frames} frames its index declares)."
        )
    present = float((end_ticks - first_ticks) * time_base) if first_ticks is not None else None
    declared = declared_stream_seconds(stream)
    if (
        stream.frames == 0
        and declared
        and present is not None
        and info.fps
        and declared - present > 2.0 / info.fps
    ):
        raise TruncatedVideoError(
            f"The file ends before the video does: it looks truncated (it stops at {present:.2f} s of "
            f"the {declared:.2f} s its header declares; {shown} frames present)."
        )
    duration = present if present is not None else info.duration_seconds
    return replace(info, frame_count=shown, frame_count_source="counted", duration_seconds=duration)


def _unopenable_file_error(path: Path, refused_format: bool) -> Exception:
    """Why FFmpeg could not open the file, judged from its first bytes.

    ``refused_format``: FFmpeg recognised the format but it is not an allowed demuxer.
    """
    try:
        with path.open("rb") as file:
            head = file.read(512)
    except OSError:
        return VideoFileNotFoundError(f"The file at {path} cannot be read.")
    mp4_damage = _mp4_damage(path)
    if mp4_damage:
        return TruncatedVideoError(mp4_damage)
    if head[4:8] == b"ftyp":
        return NotAVideoError(
            "The file starts like an MP4/MOV file but FFmpeg cannot read it: it is damaged."
        )
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return TruncatedVideoError(
            "The file starts like a Matroska/WebM file but breaks off before FFmpeg could read any "
            "video from it: it is truncated, damaged, or holds no frames."
        )
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return TruncatedVideoError(
            "The file starts like an AVI file but FFmpeg cannot read its headers: it looks truncated."
        )
    if _looks_like_text(head):
        return NotAVideoError("The file is plain text, not a video.")
    if refused_format:
        return NotAVideoError("The file is in a container format this service does not accept.")
    return NotAVideoError(
        "FFmpeg does not recognise the file as any audio or video format: it is not a video."
    )


def _mp4_damage(path: Path) -> str | None:
    """For a file that starts like MP4/MOV (an ``ftyp`` box), the reason it is cut, if it is.

    Walks the top-level boxes by their 8-byte headers (seeking, not reading the payloads): a box that
    runs past the end of the file, or a missing ``moov`` index (FFmpeg: "moov atom not found") means
    the file was cut before the end.
    """
    size = path.stat().st_size
    boxes: list[bytes] = []
    with path.open("rb") as file:
        offset = 0
        while offset + 8 <= size:
            file.seek(offset)
            header = file.read(16)
            box_size, box_type = int.from_bytes(header[:4], "big"), header[4:8]
            if box_size == 1 and len(header) == 16:
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:
                box_size = size - offset
            if not boxes and box_type != b"ftyp":
                return None
            if box_size < 8:
                break
            boxes.append(box_type)
            if offset + box_size > size:
                missing = f"{offset + box_size - size:,} bytes short"
                if b"moov" in boxes:
                    return f"The MP4 file ends inside its '{box_type.decode('latin-1')}' box, {missing}: it looks truncated."
                return (
                    f"The file starts like an MP4 but is cut off inside its '{box_type.decode('latin-1')}' box, "
                    f"{missing}, before its index (moov atom): it looks truncated."
                )
            offset += box_size
    if boxes and b"moov" not in boxes:
        return "The file starts like an MP4 (ftyp box) but has no index (moov atom): it looks truncated."
    return None


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # only a multi-byte character cut by the 512-byte window
            return False
        text = head[: error.start].decode("utf-8")
    return all(char.isprintable() or char in "\t\r\n\f" for char in text)
