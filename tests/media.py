"""Makers of real media files for tests and benchmarks (PyAV encoders, Pillow images).

Frame patterns, each a function of the frame index so a decoded frame can be checked:
- ``"index"``: a flat colour encoding the frame index (``index_colour``/``read_index`` invert it),
  robust to lossy H.264 and to any resize/crop.
- ``"marker"``: mid-grey with a red square at the exact centre.
- ``"black_white"``: left half black, right half white.
- ``"texture"``: moving gradients, a moving disc and fixed noise, closer to real footage for timing.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
from PIL import Image

INDEX_STEP = 8  # colour levels between consecutive codes: lossy coding moves flat colours far less
BURST_FIRST, BURST_LAST = 30, 50
"""The "burst" pattern's square moves in frames BURST_FIRST + 1 .. BURST_LAST (3 px per frame) and is still elsewhere."""


def index_colour(index: int) -> tuple[int, int, int]:
    """RGB that encodes ``index`` (0..1023): R = low 5 bits, G = high 5 bits, B constant."""
    return (
        INDEX_STEP * (index % 32) + INDEX_STEP // 2,
        INDEX_STEP * ((index // 32) % 32) + INDEX_STEP // 2,
        128,
    )


def read_index(frame: np.ndarray) -> int:
    """The frame index encoded by an ``"index"`` frame (uint8 RGB, any size)."""
    red, green = frame[..., 0].mean(), frame[..., 1].mean()
    low = round((red - INDEX_STEP // 2) / INDEX_STEP)
    high = round((green - INDEX_STEP // 2) / INDEX_STEP)
    return high * 32 + low


def frame_pattern(index: int, width: int, height: int, pattern: str) -> np.ndarray:
    """uint8 RGB (height, width, 3) frame number ``index`` of ``pattern``."""
    if pattern == "index":
        return np.broadcast_to(np.array(index_colour(index), np.uint8), (height, width, 3)).copy()
    if pattern == "marker":
        image = np.full((height, width, 3), 128, np.uint8)
        half = max(2, min(width, height) // 20)
        cy, cx = height // 2, width // 2
        image[cy - half : cy + half, cx - half : cx + half] = (255, 0, 0)
        return image
    if pattern == "burst":
        image = np.full((height, width, 3), 90, np.uint8)
        left = 10 + 3 * (min(max(index, BURST_FIRST), BURST_LAST) - BURST_FIRST)
        top = height // 2 - 8
        image[top : top + 16, left : left + 16] = (240, 220, 40)
        return image
    if pattern == "black_white":
        image = np.zeros((height, width, 3), np.uint8)
        image[:, width // 2 :] = 255
        return image
    if pattern == "texture":
        x, y, noise = _texture_grid(width, height)
        phase = index * 0.15
        base = 127 + 60 * np.sin(x / 23.0 + phase) + 40 * np.cos(y / 17.0 - phase)
        image = np.repeat(base[..., None], 3, axis=2)
        image[..., 1] += 30 * np.sin((x + y) / 41.0)
        cx = width * (0.2 + 0.6 * (index % 50) / 50)
        image[(x - cx) ** 2 + (y - height / 2) ** 2 < (height / 8) ** 2] = (230, 40, 40)
        return np.clip(image + noise, 0, 255).astype(np.uint8)
    raise ValueError(f"unknown pattern {pattern!r}")


@lru_cache(maxsize=4)
def _texture_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return x, y, np.random.default_rng(0).integers(-12, 13, (height, width, 1)).astype(np.float32)


def write_video(
    path: Path,
    *,
    frames: int = 25,
    width: int = 160,
    height: int = 120,
    fps: int = 25,
    pattern: str = "index",
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    codec_options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    rotation: int | None = None,
    sample_aspect: Fraction | None = None,
    audio: bool = False,
) -> Path:
    """Encode ``frames`` frames of ``pattern`` with PyAV; the container follows the suffix."""
    path = Path(path)
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec_options:
            stream.options = codec_options
        if sample_aspect is not None:
            stream.codec_context.sample_aspect_ratio = sample_aspect
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio_stream = container.add_stream("aac", rate=16000) if audio else None
        for index in range(frames):
            picture = av.VideoFrame.from_ndarray(frame_pattern(index, width, height, pattern), format="rgb24")
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
        if audio_stream is not None:
            _encode_silence(container, audio_stream, seconds=frames / fps)
    return path


def write_h264(
    path: Path, frames: int = 25, width: int = 160, height: int = 120, fps: int = 25, pattern: str = "index"
) -> Path:
    """An H.264 (libx264, yuv420p, CRF 18) MP4 of ``pattern``."""
    return write_video(
        path, frames=frames, width=width, height=height, fps=fps, pattern=pattern, codec_options={"crf": "18"}
    )


def write_trimmed_mp4(path: Path, *, frames: int = 50, trim_frames: int = 10, fps: int = 25) -> Path:
    """An index-coded H.264 MP4 whose edit list hides its first ``trim_frames`` frames.

    This is what trimming on a phone produces: the samples stay in the file (the index still counts
    ``frames``) but players, and FFmpeg, start ``trim_frames`` later.
    """
    path = write_h264(path, frames=frames, fps=fps)
    data = bytearray(path.read_bytes())

    def timescale(box: bytes) -> int:  # version-0 mvhd/mdhd: timescale after version, two dates
        at = data.find(box) + 16
        return int.from_bytes(data[at : at + 4], "big")

    elst = data.find(b"elst")
    assert elst > 0 and data[elst + 4] == 0 and int.from_bytes(data[elst + 8 : elst + 12], "big") == 1
    entry = elst + 12  # version 0, one entry: segment duration (movie units), media time (track units)
    segment, media_time = struct.unpack(">Ii", data[entry : entry + 8])
    segment -= trim_frames * timescale(b"mvhd") // fps
    media_time += trim_frames * timescale(b"mdhd") // fps
    struct.pack_into(">Ii", data, entry, segment, media_time)
    path.write_bytes(data)
    return path


def write_audio_only(path: Path, seconds: float = 0.5) -> Path:
    """An audio-only file: PCM for ``.wav``, AAC for ``.m4a``."""
    path = Path(path)
    codec = "pcm_s16le" if path.suffix == ".wav" else "aac"
    with av.open(str(path), "w") as container:
        _encode_silence(container, container.add_stream(codec, rate=16000), seconds)
    return path


def _encode_silence(container: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    rate, chunk = 16000, 1024
    sample_format = stream.codec_context.codec.audio_formats[0].name
    dtype = np.int16 if sample_format.startswith("s16") else np.float32
    for start in range(0, int(seconds * rate), chunk):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, chunk), dtype), format=sample_format, layout="mono")
        frame.sample_rate, frame.pts = rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def write_zero_frame_video(path: Path) -> Path:
    """A container with a declared video stream but no frame (header written, nothing muxed)."""
    path = Path(path)
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4" if path.suffix == ".avi" else "libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()
    return path


def write_still_image(path: Path) -> Path:
    """A single 64x48 picture; the format follows the suffix (PNG, JPEG, ...)."""
    Image.fromarray(frame_pattern(0, 64, 48, "marker")).save(path)
    return Path(path)


def truncated_copy(source: Path, destination: Path, keep_fraction: float) -> Path:
    """The first ``keep_fraction`` of ``source``'s bytes: a download or upload cut short."""
    data = Path(source).read_bytes()
    Path(destination).write_bytes(data[: int(len(data) * keep_fraction)])
    return Path(destination)


def write_undecodable_avi(path: Path) -> Path:
    """An AVI whose video FourCC ('ZZZZ') names no codec FFmpeg knows, so it has no decoder."""
    path = Path(path)
    write_video(path, frames=5, codec="mpeg4")
    data = path.read_bytes()
    assert data.count(b"FMP4") == 2, "expected the FourCC in the stream header and the format chunk"
    path.write_bytes(data.replace(b"FMP4", b"ZZZZ"))
    return path


def write_frame_folder(
    folder: Path,
    *,
    frames: int = 25,
    width: int = 160,
    height: int = 120,
    pattern: str = "index",
    suffix: str = ".jpg",
) -> Path:
    """Frames ``00000.jpg``, ``00001.jpg``, ... as the MTL-AQA frame-extraction tools store them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(frames):
        Image.fromarray(frame_pattern(index, width, height, pattern)).save(
            folder / f"{index:05d}{suffix}", quality=95
        )
    return folder
