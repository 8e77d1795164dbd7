"""Decode a video file into the T preprocessed frames a model sees.

Pipeline: probe (typed errors, limits) -> exact frame count (packets demuxed and counted, not
decoded) -> T uniform indices -> one threaded decode pass that converts only the sampled frames, each
straight to the small target size, and stops after the last one. When the preprocessing has a motion
window, the same single pass also takes a grey thumbnail of every frame of the range and keeps the frames
near motion (as decoded within a memory budget, else preprocessed); the span that moves is found from the
thumbnails afterwards and the T frames are taken from those kept, converting only those sampled
(``_decode_localised``). On a 30 s 1280x720 dive that was 65 of 750 frames converted and 1.3 x the speed of
the former two passes (thumbnails, then the samples again; benchmarks/RESULTS.md); on a 116-frame 320x240
synthetic dive, 32 frames converted instead of the 74 near motion.

Counting packets took 8-12 ms where decoding took 0.26-0.8 s (4 s and 12 s 854x480 H.264 clips,
benchmarks/bench_decode.py, 2-core machine), and it spares converting and holding every frame of an
unlocalised video. One swscale context (a shared ``VideoReformatter``) serves all frames of a video:
1.07-1.10 x faster than a context per frame on an idle machine, and far more when other processes
compete for the cores.
"""

from __future__ import annotations

from collections import deque
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

MOTION_FLOOR = 1.0
"""Mean absolute grey-level difference below which the one-pass decode does not yet count a frame as motion
(it only decides which frames to keep; the span is located from all thumbnails as always)."""
ONE_PASS_BYTES = 256 * 2**20
"""Most bytes of preprocessed frames the motion window keeps to sample from in one pass (21,000 frames of
64 x 64, 1,780 of 224 x 224); samples beyond them are decoded in a second pass."""
UNCONVERTED_BYTES = 64 * 2**20
"""Most bytes of decoded frames the motion window keeps as they are (about 560 frames of 320 x 240 YUV 4:2:0,
45 of 1280 x 720), converting only those sampled once the span is known; frames kept beyond them are
preprocessed as they come."""


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
    codec_threads: bool = True,
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
    to the whole file; the source is decoded from its start up to the last sampled frame. ``codec_threads``:
    FFmpeg's own frame and slice threads, and swscale's for the sampled frames' conversion; callers that
    decode several videos at once in their own threads turn them off (the same frames for fewer CPU seconds).

    Raises a :class:`video.errors.VideoError` subclass for every unusable file.
    """
    path = Path(path)
    info = probe_video(path, limits, count_frames=True)
    first, last = frame_range(info.frame_count, start_frame, end_frame)
    if preprocessing.motion_window is not None:
        return _decode_localised(path, info, first, last, preprocessing, preprocessing.motion_window, limits,
                                 codec_threads)
    indices = sample_frame_indices(first, last, preprocessing.num_frames, preprocessing.sampling)
    return decode_frames(path, indices, preprocessing, limits, info=info, codec_threads=codec_threads)


def sample_video(
    path: Path,
    preprocessing: Preprocessing,
    limits: VideoLimits = DEFAULT_LIMITS,
    start_frame: int | None = None,
    end_frame: int | None = None,
) -> tuple[VideoInfo, np.ndarray]:
    """The probe (exact frame count) and the source frame indices :func:`decode_video` reads, without
    decoding them (training decodes them itself, uncropped). With a motion window this runs a thumbnail pass
    that localises the action."""
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
    codec_threads: bool = True,
) -> DecodedVideo:
    """The source frames at ``indices`` (any order, repeats allowed), preprocessed spatially.

    ``full_frame`` skips the centre crop: frames keep the resized (or stretched) size, for training's
    random crops. ``info`` is the file's probe when the caller already has it (:func:`sample_video`);
    ``codec_threads`` as in :func:`decode_video`.
    """
    path = Path(path)
    info = info if info is not None else probe_video(path, limits, count_frames=True)
    indices = np.asarray(indices, dtype=np.int64)
    wanted = np.unique(indices)
    if wanted[0] < 0 or wanted[-1] >= info.frame_count:
        raise FrameRangeError(f"Frames {wanted[0]}-{wanted[-1]} were asked of a video with {info.frame_count} "
                              f"frames (0-{info.frame_count - 1}).")
    frames, timestamps = _decode_wanted_frames(path, info, wanted, preprocessing, limits, full_frame, codec_threads)
    slot = np.searchsorted(wanted, indices)
    return DecodedVideo(frames=frames[slot], frame_indices=indices, timestamps=timestamps[slot], info=info)


def _decode_localised(
    path: Path,
    info: VideoInfo,
    first: int,
    last: int,
    preprocessing: Preprocessing,
    window: MotionWindow,
    limits: VideoLimits,
    codec_threads: bool = True,
) -> DecodedVideo:
    """Localise the action in ``[first, last]`` from grey thumbnails and sample it, in one decode pass.

    Every frame of the range gets its thumbnail; the frames near motion are also kept, so the samples can be
    taken from them once the span is known: as decoded, and preprocessed only if sampled, up to
    :data:`UNCONVERTED_BYTES`, then preprocessed as they come. Which frames are near motion is judged as
    the pass goes (:class:`_MotionTracker`), a short delay after each frame, so the margin before motion is
    kept too; the quiet frames far from motion are not converted. The span itself is then located from all
    the thumbnails, exactly as before; a sample that was not kept (motion that came back after a long quiet
    stretch, a ``window_end`` sampling reaching before the range, or more kept frames than
    :data:`ONE_PASS_BYTES`) is decoded in a second pass over just those frames.
    """
    count = last - first + 1
    fps = info.fps if info.fps > 0 else ASSUMED_FPS
    height = thumbnail_height(info.width, info.height)
    thumbnails = np.empty((count, height, THUMBNAIL_WIDTH), dtype=np.uint8)
    timestamps = np.full(count, np.nan)
    tracker = _MotionTracker(count, fps, window)
    kept: dict[int, np.ndarray | tuple[av.VideoFrame, Fraction | None]] = {}
    room = ONE_PASS_BYTES // (preprocessing.crop * preprocessing.crop * 3)
    unconverted_room: int | None = None
    delayed: deque[tuple[int, av.VideoFrame, Fraction | None]] = deque()
    thumbnailer, reformatter = VideoReformatter(), VideoReformatter()  # one swscale context per output

    def keep(k: int, frame: av.VideoFrame, sample_aspect: Fraction | None) -> None:
        nonlocal unconverted_room
        if unconverted_room is None:
            unconverted_room = UNCONVERTED_BYTES // sum(plane.buffer_size for plane in frame.planes)
        if len(kept) < min(unconverted_room, room):
            kept[k] = (frame, sample_aspect)
        elif len(kept) < room:
            kept[k] = _preprocess_frame(frame, preprocessing, sample_aspect, reformatter, codec_threads)

    for index, frame, seconds, sample_aspect in _decoded_frames(path, info, limits, last, first, codec_threads):
        if index < first:
            continue
        k = index - first
        thumbnails[k] = grey_thumbnail(frame, height, thumbnailer)
        timestamps[k] = seconds
        tracker.add(thumbnails, k)
        delayed.append((k, frame, sample_aspect))
        if len(delayed) > tracker.delay:
            old, old_frame, old_aspect = delayed.popleft()
            if tracker.near_motion(old):
                keep(old, old_frame, old_aspect)
    start, end = locate_action(motion_energy(thumbnails), fps, window)
    for k, frame, sample_aspect in delayed:
        if start <= k <= end:
            keep(k, frame, sample_aspect)
    indices = sample_frame_indices(first + start, first + end, preprocessing.num_frames, preprocessing.sampling)
    for k in map(int, np.unique(indices - first)):
        if isinstance(kept.get(k), tuple):
            frame, sample_aspect = kept[k]
            kept[k] = _preprocess_frame(frame, preprocessing, sample_aspect, reformatter, codec_threads)
    seconds_of = {k: float(timestamps[k]) for k in kept}
    missing = np.unique([i for i in indices if i - first not in kept])
    if len(missing):
        frames, seconds = _decode_wanted_frames(path, info, missing, preprocessing, limits,
                                                codec_threads=codec_threads)
        for index, frame, second in zip(missing, frames, seconds):
            kept[int(index) - first], seconds_of[int(index) - first] = frame, float(second)
    return DecodedVideo(frames=np.stack([kept[int(i) - first] for i in indices]), frame_indices=indices,
                        timestamps=np.array([seconds_of[int(i) - first] for i in indices]), info=info)


class _MotionTracker:
    """The localiser's motion energy, smoothed, as frames arrive: which frames lie near motion so far.

    Frame ``k`` is near motion when a frame within ``after_s`` before it or ``before_s`` after it has a
    smoothed energy of at least ``threshold`` x max(the peak so far, :data:`MOTION_FLOOR`). The peak only
    grows, so a frame judged far from motion is outside the final span unless stronger motion comes later
    or all of the video's motion stays below the floor (a still clip): then the decoder's second pass fetches
    the samples. The floor keeps the encoder's noise in a still lead-in (0.00-0.01 grey levels on rendered
    dives, whose flight peaks near 7.5) from counting as motion before the real peak is seen. Judging waits
    ``delay`` frames, until the frames ``before_s`` after it are known.
    """

    def __init__(self, count: int, fps: float, window: MotionWindow) -> None:
        self.window, self.half = window, window.smoothing // 2
        self.before, self.after = round(window.before_s * fps), round(window.after_s * fps)
        self.delay = self.before + self.half + 1
        self.energy = np.zeros(count)
        self.smoothed = np.zeros(count)
        self.known = -1  # last frame whose smoothed energy is known
        self.peak = 0.0

    def add(self, thumbnails: np.ndarray, k: int) -> None:
        if k >= 1:
            self.energy[k] = np.abs(thumbnails[k].astype(np.int16) - thumbnails[k - 1]).mean()
            if k == 1:
                self.energy[0] = self.energy[1]
        j = k - self.half
        if j >= 0:
            self.smoothed[j] = self.energy[max(0, j - self.half): j + self.half + 1].sum() / self.window.smoothing
            self.peak = max(self.peak, self.smoothed[j])
            self.known = j

    def near_motion(self, k: int) -> bool:
        nearby = self.smoothed[max(0, k - self.after): min(self.known, k + self.before) + 1]
        return bool((nearby >= self.window.threshold * max(self.peak, MOTION_FLOOR)).any())


def _localise(
    path: Path, info: VideoInfo, first: int, last: int, window: MotionWindow, limits: VideoLimits
) -> tuple[int, int]:
    """The span of ``[first, last]`` where the action is, from grey thumbnails of every frame (one pass that
    converts no frame): for callers that decode the sampled frames themselves (training's random crops).
    The span is the one :func:`_decode_localised` finds."""
    height = thumbnail_height(info.width, info.height)
    thumbnails = np.empty((last - first + 1, height, THUMBNAIL_WIDTH), dtype=np.uint8)
    reformatter = VideoReformatter()
    for index, frame, _, _ in _decoded_frames(path, info, limits, last, first):
        if index >= first:
            thumbnails[index - first] = grey_thumbnail(frame, height, reformatter)
    start, end = locate_action(motion_energy(thumbnails), info.fps if info.fps > 0 else ASSUMED_FPS, window)
    return first + start, first + end


def _decoded_frames(
    path: Path, info: VideoInfo, limits: VideoLimits, last: int, first: int = 0, codec_threads: bool = True
) -> Iterator[tuple[int, av.VideoFrame, float, Fraction | None]]:
    """Frames ``first..last`` (and possibly some before) as ``(index, frame, seconds after the first frame,
    sample aspect)``, decoded with FFmpeg's threads unless ``codec_threads`` is off; callers skip indices
    below ``first``.

    When ``first`` lies beyond the first keyframe, decoding starts at the last keyframe at or before it
    (:func:`_seek_point`) instead of the start. Seconds come from the frame's timestamp, else ``index / fps``,
    else NaN. Raises :class:`TruncatedVideoError` when decoding fails or the file ends before frame ``last``.
    """
    point = _seek_point(path, info, limits, first) if first > 0 else None
    decoded = 0
    with open_container(path, limits) as container:
        stream = container.streams[info.stream_index]
        stream.codec_context.thread_type = "AUTO" if codec_threads else "NONE"
        sample_aspect = _valid(stream.sample_aspect_ratio)
        start_seconds: float | None = None
        index = -1
        if point is not None:
            container.seek(point.pts, stream=stream, backward=True, any_frame=False)
            start_seconds = float(point.first_pts * stream.time_base)
        try:
            for frame in container.decode(stream):
                if start_seconds is None:
                    start_seconds = frame.time or 0.0
                check_frame_size(frame.width, frame.height, limits)
                index = point.index_of(frame.pts, index) if point is not None else decoded
                if frame.time is not None:
                    seconds = frame.time - start_seconds
                else:
                    seconds = index / info.fps if info.fps else float("nan")
                yield index, frame, seconds, sample_aspect
                decoded += 1
                if index >= last:
                    return
        except av.FFmpegError as error:
            raise TruncatedVideoError(
                f"Decoding failed after {max(index, decoded)} of {info.frame_count} frames: the file looks "
                f"truncated or damaged ({error.strerror or error})."
            ) from error
    raise TruncatedVideoError(
        f"The file ends before the video does: it looks truncated (decoded {index + 1 if point else decoded} of "
        f"{info.frame_count} frames)."
    )


@dataclass(frozen=True)
class _SeekPoint:
    """Where to start decoding for a frame: the keyframe at or before it, from the file's packet timestamps."""

    pts: int  # the keyframe's presentation timestamp (stream time base)
    first_pts: int  # frame 0's, for the seconds after the first frame
    shown_pts: np.ndarray  # every shown frame's, ascending: frame index -> pts

    def index_of(self, pts: int | None, previous: int) -> int:
        """The frame index of a decoded frame's pts (the next index if the pts is not in the table)."""
        if pts is not None:
            at = int(np.searchsorted(self.shown_pts, pts))
            if at < len(self.shown_pts) and self.shown_pts[at] == pts:
                return at
        return previous + 1


def _seek_point(path: Path, info: VideoInfo, limits: VideoLimits, first: int) -> _SeekPoint | None:
    """The last keyframe at or before frame ``first``, from the packets (demuxed, not decoded), or None when
    seeking would not help (no keyframe after frame 0 up to ``first``) or cannot be trusted (packets without
    timestamps, or two frames with one timestamp: a frame's index would be ambiguous)."""
    timestamps: list[int] = []
    keyframes: list[bool] = []
    with open_container(path, limits) as container:
        stream = container.streams[info.stream_index]
        for packet in container.demux(stream):
            if not packet.size or packet.is_discard:  # the flush marker, or a frame an edit list hides
                continue
            if packet.pts is None:
                return None
            timestamps.append(packet.pts)
            keyframes.append(packet.is_keyframe)
    order = np.argsort(timestamps, kind="stable")
    shown = np.asarray(timestamps, dtype=np.int64)[order]
    keys = np.flatnonzero(np.asarray(keyframes)[order][: first + 1])
    if len(shown) <= first or len(keys) == 0 or keys[-1] == 0 or np.any(np.diff(shown) <= 0):
        return None
    return _SeekPoint(pts=int(shown[keys[-1]]), first_pts=int(shown[0]), shown_pts=shown)


def _decode_wanted_frames(
    path: Path, info: VideoInfo, wanted: np.ndarray, preprocessing: Preprocessing, limits: VideoLimits,
    full_frame: bool = False, codec_threads: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode up to the last wanted index, converting only the wanted frames.

    Returns (frames, timestamps) for each entry of ``wanted`` (sorted, unique source indices).
    """
    frames: np.ndarray | None = None
    timestamps = np.full(len(wanted), np.nan)
    filled = 0
    reformatter = VideoReformatter()
    for index, frame, seconds, sample_aspect in _decoded_frames(path, info, limits, int(wanted[-1]), int(wanted[0]),
                                                                codec_threads):
        if index == wanted[filled]:
            image = _preprocess_frame(frame, preprocessing, sample_aspect, reformatter, codec_threads, full_frame)
            if frames is None:
                frames = np.empty((len(wanted), *image.shape), dtype=np.uint8)
            frames[filled] = image
            timestamps[filled] = seconds
            filled += 1
    assert frames is not None  # _decoded_frames raises unless it reached wanted[-1]
    return frames, timestamps


def _preprocess_frame(
    frame: av.VideoFrame, preprocessing: Preprocessing, sample_aspect: Fraction | None, reformatter: VideoReformatter,
    swscale_threads: bool, full_frame: bool = False,
) -> np.ndarray:
    """One decoded frame -> uint8 RGB (crop, crop, 3) as shown (rotation applied); uncropped with ``full_frame``.
    ``swscale_threads``: convert on swscale's threads (one per core) rather than on this one."""
    crop = None if full_frame else preprocessing.crop
    threads = 0 if swscale_threads else 1
    if preprocessing.stretch_to is not None:
        rgb = rotate_for_display(reformatter.reformat(frame, format="rgb24", threads=threads).to_ndarray(),
                                 frame.rotation)
        width, height = preprocessing.stretch_to
        return stretch_and_crop(rgb, width, height, crop, preprocessing.stretch_filter)
    small = resize_and_crop(frame, preprocessing.resize, crop, sample_aspect, reformatter, threads)
    return rotate_for_display(small, frame.rotation)


def _valid(sample_aspect: Fraction | None) -> Fraction | None:
    """A usable sample aspect ratio (FFmpeg reports 0/1 or nothing when unknown)."""
    return sample_aspect if sample_aspect and sample_aspect > 0 else None
