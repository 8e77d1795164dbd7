"""Video decoding on real files made with PyAV: shapes, sampling, geometry, range, typed errors."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.media import (
    read_index,
    truncated_copy,
    write_audio_only,
    write_frame_folder,
    write_h264,
    write_still_image,
    write_trimmed_mp4,
    write_undecodable_avi,
    write_video,
    write_zero_frame_video,
)
from video import decode, errors
from video.decode import decode_video
from video.errors import VideoError
from video.frame_folder import decode_frame_folder
from video.localise import MotionWindow
from video.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from video.probe import VideoLimits, probe_video
from video.sampling import uniform_frame_indices

SMALL = Preprocessing(num_frames=103, resize=128, crop=112)
TINY = Preprocessing(num_frames=8, resize=64, crop=56)


def encoded_indices(frames: np.ndarray) -> np.ndarray:
    return np.array([read_index(frame) for frame in frames])


# --- shapes, sampling, timing -------------------------------------------------------------------


def test_854x480_clip_decodes_to_both_preprocessing_sizes(clip_854x480: Path) -> None:
    small = decode_video(clip_854x480, SMALL)
    core = decode_video(clip_854x480, Preprocessing())
    assert small.frames.shape == (103, 112, 112, 3)
    assert core.frames.shape == (103, 224, 224, 3)
    assert small.frames.dtype == core.frames.dtype == np.uint8
    info = core.info
    assert (info.codec, info.width, info.height, info.fps, info.frame_count) == ("h264", 854, 480, 30.0, 120)
    assert info.frame_count_source == "counted"
    assert info.duration_seconds == pytest.approx(4.0)
    assert not info.has_audio
    assert info.size_bytes == clip_854x480.stat().st_size


@pytest.mark.parametrize("preprocessing", [SMALL, Preprocessing(num_frames=16, motion_window=MotionWindow()),
                                           Preprocessing(num_frames=8, stretch_to=(170, 128), resize=128, crop=112)],
                         ids=["uniform", "motion_window", "stretch"])
def test_decoding_on_one_thread_gives_the_same_pixels(clip_854x480: Path, preprocessing: Preprocessing) -> None:
    """codec_threads=False (what a pipelined stream uses) decodes and converts on this thread only: same frames."""
    threaded = decode_video(clip_854x480, preprocessing)
    alone = decode_video(clip_854x480, preprocessing, codec_threads=False)
    np.testing.assert_array_equal(alone.frames, threaded.frames)
    np.testing.assert_array_equal(alone.frame_indices, threaded.frame_indices)


def test_sampling_is_uniform_and_covers_first_and_last_frame(clip_854x480: Path) -> None:
    decoded = decode_video(clip_854x480, SMALL)
    expected = np.floor(np.linspace(0, 119, 103) + 0.5).astype(int)
    np.testing.assert_array_equal(decoded.frame_indices, expected)
    assert decoded.frame_indices[0] == 0 and decoded.frame_indices[-1] == 119
    assert set(np.diff(decoded.frame_indices)) <= {1, 2}
    # The pixels really are those source frames, not just the reported indices.
    np.testing.assert_array_equal(encoded_indices(decoded.frames), decoded.frame_indices)
    np.testing.assert_allclose(decoded.timestamps, decoded.frame_indices / 30.0, atol=1e-6)


def test_fewer_frames_than_requested_repeats_frames_in_order(media_dir: Path) -> None:
    clip = write_h264(media_dir / "ten_frames.mp4", frames=10, width=96, height=64)
    decoded = decode_video(clip, Preprocessing(num_frames=16, resize=64, crop=48))
    assert decoded.frames.shape == (16, 48, 48, 3)
    assert set(decoded.frame_indices) == set(range(10))
    assert np.all(np.diff(decoded.frame_indices) >= 0)
    np.testing.assert_array_equal(encoded_indices(decoded.frames), decoded.frame_indices)


def test_uniform_frame_indices_edge_cases() -> None:
    np.testing.assert_array_equal(uniform_frame_indices(0, 4, 5), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(uniform_frame_indices(10, 10, 3), [10, 10, 10])
    np.testing.assert_array_equal(uniform_frame_indices(0, 1, 5), [0, 0, 1, 1, 1])
    assert uniform_frame_indices(0, 9, 1).tolist() == [4]


def test_start_and_end_frame_cut_a_range(clip_854x480: Path) -> None:
    decoded = decode_video(
        clip_854x480, Preprocessing(num_frames=16, resize=64, crop=56), start_frame=30, end_frame=89
    )
    np.testing.assert_array_equal(decoded.frame_indices, uniform_frame_indices(30, 89, 16))
    assert decoded.frame_indices[0] == 30 and decoded.frame_indices[-1] == 89
    np.testing.assert_array_equal(encoded_indices(decoded.frames), decoded.frame_indices)
    np.testing.assert_allclose(decoded.timestamps[0], 1.0, atol=1e-6)


@pytest.mark.parametrize(("start", "end"), [(100, 120), (50, 40), (-1, 10)])
def test_bad_frame_ranges_are_typed_errors(clip_2s: Path, start: int, end: int) -> None:
    with pytest.raises(errors.FrameRangeError) as caught:
        decode_video(clip_2s, TINY, start_frame=start, end_frame=end)
    assert caught.value.code == "bad_frame_range"
    assert str(start) in caught.value.reason


def test_matroska_without_declared_count_is_counted_exactly(media_dir: Path) -> None:
    clip = write_video(media_dir / "count.mkv", frames=37, width=96, height=64)
    assert av.open(str(clip)).streams.video[0].frames == 0  # Matroska declares no frame count
    assert probe_video(clip).frame_count_source == "estimated"
    decoded = decode_video(clip, TINY)
    assert (decoded.info.frame_count, decoded.info.frame_count_source) == (37, "counted")
    np.testing.assert_array_equal(decoded.frame_indices, uniform_frame_indices(0, 36, 8))
    np.testing.assert_array_equal(encoded_indices(decoded.frames), decoded.frame_indices)


def test_trimmed_mp4_counts_only_the_frames_its_edit_list_shows(media_dir: Path) -> None:
    clip = write_trimmed_mp4(media_dir / "trimmed.mp4", frames=50, trim_frames=10)
    assert probe_video(clip).frame_count == 50  # the index still lists the hidden frames
    decoded = decode_video(clip, TINY)
    assert decoded.info.frame_count == 40
    assert decoded.info.duration_seconds == pytest.approx(1.6)
    np.testing.assert_array_equal(decoded.frame_indices, uniform_frame_indices(0, 39, 8))
    np.testing.assert_array_equal(encoded_indices(decoded.frames), decoded.frame_indices + 10)
    np.testing.assert_allclose(decoded.timestamps, decoded.frame_indices / 25, atol=1e-6)


def test_audio_track_is_reported(media_dir: Path) -> None:
    clip = write_video(media_dir / "with_audio.mp4", frames=25, width=96, height=64, audio=True)
    decoded = decode_video(clip, TINY)
    assert decoded.info.has_audio
    np.testing.assert_array_equal(encoded_indices(decoded.frames), decoded.frame_indices)


# --- geometry -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(854, 480), (302, 534), (200, 200)])
def test_centre_crop_keeps_the_centre(media_dir: Path, width: int, height: int) -> None:
    clip = write_h264(
        media_dir / f"marker_{width}x{height}.mp4", frames=3, width=width, height=height, pattern="marker"
    )
    frames = decode_video(clip, Preprocessing(num_frames=3, resize=128, crop=112)).frames
    red = (frames[0, ..., 0] > 180) & (frames[0, ..., 1] < 90) & (frames[0, ..., 2] < 90)
    rows, cols = np.nonzero(red)
    assert red.sum() > 16
    assert rows.mean() == pytest.approx(55.5, abs=1.5)
    assert cols.mean() == pytest.approx(55.5, abs=1.5)
    assert red[:, 0].sum() == red[0, :].sum() == 0  # the marker is small and away from the edges


def test_display_rotation_is_applied(media_dir: Path) -> None:
    # Stored 96x64, black left half and white right half. The display matrix says "rotate 90 degrees
    # counter-clockwise" (FFmpeg's autorotate applies transpose=cclock), so the right half goes on top.
    clip = write_video(
        media_dir / "rotated.mp4", frames=3, width=96, height=64, pattern="black_white", rotation=90
    )
    frame = decode_video(clip, Preprocessing(num_frames=1, resize=64, crop=64)).frames[0].mean(axis=2)
    assert frame[:24].mean() > 235 and frame[-24:].mean() < 20
    plain = write_video(media_dir / "unrotated.mp4", frames=3, width=96, height=64, pattern="black_white")
    frame = decode_video(plain, Preprocessing(num_frames=1, resize=64, crop=64)).frames[0].mean(axis=2)
    assert frame[:, :24].mean() < 20 and frame[:, -24:].mean() > 235


def test_anamorphic_video_keeps_its_display_aspect(media_dir: Path) -> None:
    # 100x100 stored pixels with sample aspect 2:1 display as 200x100: the centred marker square
    # becomes twice as wide as it is tall.
    clip = write_video(
        media_dir / "anamorphic.mp4",
        frames=3,
        width=100,
        height=100,
        pattern="marker",
        sample_aspect=Fraction(2, 1),
    )
    frames = decode_video(clip, Preprocessing(num_frames=1, resize=100, crop=100)).frames
    rows, cols = np.nonzero((frames[0, ..., 0] > 180) & (frames[0, ..., 1] < 90))
    width, height = cols.max() - cols.min() + 1, rows.max() - rows.min() + 1
    assert width / height == pytest.approx(2.0, rel=0.15)


# --- normalisation ------------------------------------------------------------------------------


def test_kinetics_normalisation_spans_minus_one_to_one(media_dir: Path) -> None:
    clip = write_h264(media_dir / "black_white.mp4", frames=5, width=320, height=240, pattern="black_white")
    decoded = decode_video(clip, Preprocessing(num_frames=4, resize=128, crop=112))
    x = Preprocessing(normalization="kinetics").normalize(decoded.frames)
    assert x.shape == (3, 4, 112, 112) and x.dtype == torch.float32
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert torch.all((x >= -1) & (x <= 1))


def test_imagenet_normalisation_matches_mean_std_arithmetic(clip_2s: Path) -> None:
    frames = decode_video(clip_2s, TINY).frames
    x = Preprocessing(normalization="imagenet").normalize(frames)
    for channel in range(3):
        expected = (frames[..., channel].astype(np.float64) / 255 - IMAGENET_MEAN[channel]) / IMAGENET_STD[
            channel
        ]
        np.testing.assert_allclose(x[channel].numpy(), expected, atol=1e-5)


# --- frame folders ------------------------------------------------------------------------------


def test_frame_folder_matches_video_sampling_and_pixels(media_dir: Path) -> None:
    folder = write_frame_folder(
        media_dir / "frames_png", frames=30, width=120, height=90, pattern="marker", suffix=".png"
    )
    from_folder = decode_frame_folder(folder, TINY, start_frame=3, end_frame=27, fps=25)
    lossless = write_video(
        media_dir / "marker_rgb.mkv",
        frames=30,
        width=120,
        height=90,
        pattern="marker",
        codec="ffv1",
        pix_fmt="bgr0",
    )
    from_video = decode_video(lossless, TINY, VideoLimits(allowed_codecs=None), start_frame=3, end_frame=27)
    np.testing.assert_array_equal(from_folder.frame_indices, from_video.frame_indices)
    np.testing.assert_allclose(from_folder.timestamps, from_video.timestamps, atol=1e-6)
    assert np.abs(from_folder.frames.astype(int) - from_video.frames.astype(int)).max() <= 1
    assert from_folder.info.frame_count == 30 and from_folder.info.container == "frame_folder"


def test_frame_folder_jpegs_in_natural_order(media_dir: Path) -> None:
    folder = media_dir / "frames_jpg"
    write_frame_folder(folder, frames=12, width=80, height=60)
    for path in folder.iterdir():  # img_9.jpg must come before img_10.jpg
        path.rename(folder / f"img_{int(path.stem)}.jpg")
    decoded = decode_frame_folder(folder, Preprocessing(num_frames=12, resize=48, crop=40))
    np.testing.assert_array_equal(encoded_indices(decoded.frames), np.arange(12))
    assert np.isnan(decoded.timestamps).all()


def test_frame_folder_errors(media_dir: Path) -> None:
    with pytest.raises(errors.VideoFileNotFoundError):
        decode_frame_folder(media_dir / "no_such_folder", TINY)
    empty = media_dir / "empty_folder"
    empty.mkdir()
    with pytest.raises(errors.ZeroFramesError):
        decode_frame_folder(empty, TINY)
    broken = write_frame_folder(media_dir / "broken_frames", frames=4, width=64, height=48)
    (broken / "00002.jpg").write_text("not a jpeg")
    with pytest.raises(errors.NotAVideoError, match="00002.jpg"):
        decode_frame_folder(broken, Preprocessing(num_frames=4, resize=48, crop=40))


# --- typed errors -------------------------------------------------------------------------------


def make_text(path: Path) -> Path:
    path.write_text("score: 9.5\n" * 200)
    return path


def make_random_bytes(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(50_000))
    return path


def make_empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def cut_mp4_without_moov(path: Path) -> Path:
    """A default MP4 (index written last) cut in half: FFmpeg says 'moov atom not found'."""
    source = write_h264(path.with_suffix(".full.mp4"), frames=50)
    assert source.read_bytes().rfind(b"moov") > source.read_bytes().find(b"mdat")
    return truncated_copy(source, path, 0.5)


def cut_faststart_mp4(path: Path) -> Path:
    """An MP4 with its index first (faststart) cut in half: the index promises frames that are gone."""
    source = write_video(
        path.with_suffix(".full.mp4"), frames=50, container_options={"movflags": "faststart"}
    )
    assert source.read_bytes().find(b"moov") < source.read_bytes().find(b"mdat")
    return truncated_copy(source, path, 0.5)


def cut_matroska(path: Path) -> Path:
    """A Matroska cut in half: its header still declares the full duration."""
    return truncated_copy(write_video(path.with_suffix(".full.mkv"), frames=50), path, 0.5)


def cut_avi(path: Path) -> Path:
    return truncated_copy(write_video(path.with_suffix(".full.avi"), frames=50, codec="mpeg4"), path, 0.5)


def corrupt_mp4_middle(path: Path) -> Path:
    """Garbage over a tenth of an MP4's middle: decoding fails mid-stream after some frames."""
    source = write_video(path.with_suffix(".full.mp4"), frames=60, width=320, height=240, pattern="texture")
    data = bytearray(source.read_bytes())
    middle, span = len(data) // 2, len(data) // 10
    data[middle : middle + span] = np.random.default_rng(1).bytes(span)
    path.write_bytes(data)
    return path


def make_playlist(path: Path) -> Path:
    """An HLS playlist naming a real local video: FFmpeg would open and decode that other file."""
    segment = write_video(path.with_suffix(".ts"), frames=25, width=96, height=64)
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nfile://{segment}\n#EXT-X-ENDLIST\n")
    return path


ERROR_CASES = [
    ("text.txt", make_text, errors.NotAVideoError),
    ("text_named.mp4", make_text, errors.NotAVideoError),
    ("random.bin", make_random_bytes, errors.NotAVideoError),
    ("playlist.m3u8", make_playlist, errors.NotAVideoError),
    ("refused_demuxer.nut", lambda p: write_video(p, frames=5, codec="mpeg4"), errors.NotAVideoError),
    ("empty.mp4", make_empty, errors.NotAVideoError),
    ("still.png", write_still_image, errors.NotAVideoError),
    ("still.jpg", write_still_image, errors.NotAVideoError),
    ("audio.wav", write_audio_only, errors.NoVideoStreamError),
    ("audio.m4a", write_audio_only, errors.NoVideoStreamError),
    ("zero.avi", write_zero_frame_video, errors.ZeroFramesError),
    ("zero.mp4", write_zero_frame_video, errors.ZeroFramesError),
    ("no_moov.mp4", cut_mp4_without_moov, errors.TruncatedVideoError),
    ("cut_faststart.mp4", cut_faststart_mp4, errors.TruncatedVideoError),
    ("cut.mkv", cut_matroska, errors.TruncatedVideoError),
    ("cut.avi", cut_avi, errors.TruncatedVideoError),
    ("corrupt_middle.mp4", corrupt_mp4_middle, errors.TruncatedVideoError),
    ("ffv1.mkv", lambda p: write_video(p, frames=5, codec="ffv1"), errors.UnsupportedCodecError),
    (
        "gif.gif",
        lambda p: write_video(p, frames=5, codec="gif", pix_fmt="rgb8"),
        errors.UnsupportedCodecError,
    ),
    ("no_decoder.avi", write_undecodable_avi, errors.UnsupportedCodecError),
]


@pytest.mark.parametrize(("name", "make", "error_type"), ERROR_CASES, ids=[case[0] for case in ERROR_CASES])
def test_bad_files_raise_typed_errors_with_reasons(
    tmp_path: Path, name: str, make, error_type: type[VideoError]
) -> None:
    path = make(tmp_path / name)
    assert path.exists()
    with pytest.raises(VideoError) as caught:
        decode_video(path, TINY)
    error = caught.value
    assert type(error) is error_type, error
    assert not isinstance(error, av.FFmpegError)
    assert error.code == error_type.code
    assert error.reason.endswith(".") and len(error.reason) > 20


def test_reasons_say_what_is_wrong(tmp_path: Path) -> None:
    def reason(path: Path) -> str:
        with pytest.raises(VideoError) as caught:
            decode_video(path, TINY)
        return caught.value.reason

    assert "still image (PNG)" in reason(write_still_image(tmp_path / "a.png"))
    assert "text" in reason(make_text(tmp_path / "a.mp4"))
    assert "moov" in reason(cut_mp4_without_moov(tmp_path / "no_moov.mp4"))
    assert "8 of the 50 frames" in reason(cut_faststart_mp4(tmp_path / "cut_faststart.mp4"))
    assert "container format" in reason(write_video(tmp_path / "a.nut", frames=3, codec="mpeg4"))
    assert "'ffv1'" in reason(write_video(tmp_path / "a.mkv", frames=3, codec="ffv1"))


def test_playlist_is_refused_although_ffmpeg_could_follow_it(tmp_path: Path) -> None:
    playlist = make_playlist(tmp_path / "list.m3u8")
    with av.open(str(playlist)) as container:  # unrestricted FFmpeg reads the file the playlist names
        assert container.format.name == "hls" and len(container.streams.video) == 1
    assert probe_video(playlist, VideoLimits(allowed_demuxers=None)).frame_count == 25
    with pytest.raises(errors.NotAVideoError):
        probe_video(playlist)


def test_zero_frame_avi_really_has_an_empty_video_stream(tmp_path: Path) -> None:
    path = write_zero_frame_video(tmp_path / "zero.avi")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "mpeg4" and stream.frames == 0
        assert not any(packet.size for packet in container.demux(stream))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(errors.VideoFileNotFoundError):
        probe_video(tmp_path / "nothing.mp4")


LIMIT_CASES = [
    (VideoLimits(max_seconds=1.0), errors.VideoTooLongError, "2.0 s"),
    (VideoLimits(max_frames=49), errors.VideoTooLongError, "50 frames"),
    (VideoLimits(max_pixels=160 * 120 - 1), errors.VideoTooLargeError, "160x120"),
    (VideoLimits(allowed_codecs=frozenset({"vp9"})), errors.UnsupportedCodecError, "'h264'"),
]


@pytest.mark.parametrize(
    ("limits", "error_type", "detail"), LIMIT_CASES, ids=["seconds", "frames", "pixels", "codec"]
)
@pytest.mark.parametrize("entry_point", ["probe", "decode"])
def test_limits_reject_with_the_measured_value(
    clip_2s: Path, limits: VideoLimits, error_type: type[VideoError], detail: str, entry_point: str
) -> None:
    with pytest.raises(error_type) as caught:
        if entry_point == "probe":
            probe_video(clip_2s, limits)
        else:
            decode_video(clip_2s, TINY, limits)
    assert detail in caught.value.reason


def test_limits_are_inclusive(clip_2s: Path) -> None:
    limits = VideoLimits(
        max_seconds=2.0, max_frames=50, max_pixels=160 * 120, allowed_codecs=frozenset({"h264"})
    )
    assert decode_video(clip_2s, TINY, limits).frames.shape == (8, 56, 56, 3)


def test_limits_hold_while_counting_an_undeclared_stream(media_dir: Path) -> None:
    # MPEG-TS declares neither frame count nor stream duration: the limits are checked on the packets.
    clip = write_video(media_dir / "stream.ts", frames=50, width=96, height=64)
    with pytest.raises(errors.VideoTooLongError):
        decode_video(clip, TINY, VideoLimits(max_frames=30, max_seconds=100))
    assert decode_video(clip, TINY).info.frame_count == 50


def test_error_codes_are_stable_and_distinct() -> None:
    codes = {cls.code for cls in errors.VideoError.__subclasses__()}
    assert {
        "not_a_video",
        "no_video_stream",
        "zero_frames",
        "truncated",
        "unsupported_codec",
        "too_long",
        "too_large",
    } <= codes
    assert len(codes) == len(errors.VideoError.__subclasses__())


@pytest.mark.parametrize("localised", [False, True])
def test_a_cut_from_a_longer_video_seeks_to_its_keyframe_and_reads_the_same_frames(
        media_dir: Path, monkeypatch: pytest.MonkeyPatch, localised: bool) -> None:
    """A dive cut from a long source (MTL-AQA's layout) starts decoding at the keyframe before it."""
    path = write_video(media_dir / "keyint10.mp4", frames=150, width=160, height=120, pattern="texture",
                       codec_options={"crf": "18", "g": "10", "keyint_min": "10", "sc_threshold": "0"})
    preprocessing = Preprocessing(num_frames=12, resize=64, crop=56,
                                  motion_window=MotionWindow(threshold=0.05) if localised else None)
    decoded_from: list[int] = []
    original = decode._decoded_frames

    def spy(*args, **kwargs):
        for item in original(*args, **kwargs):
            decoded_from.append(item[0])
            yield item

    monkeypatch.setattr(decode, "_decoded_frames", spy)
    sought = decode_video(path, preprocessing, start_frame=95, end_frame=140)
    assert min(decoded_from) == 90  # the keyframe before frame 95, not frame 0
    monkeypatch.setattr(decode, "_seek_point", lambda *args: None)
    from_start = decode_video(path, preprocessing, start_frame=95, end_frame=140)
    np.testing.assert_array_equal(sought.frame_indices, from_start.frame_indices)
    np.testing.assert_array_equal(sought.frames, from_start.frames)
    np.testing.assert_array_equal(sought.timestamps, from_start.timestamps)
    np.testing.assert_allclose(sought.timestamps, sought.frame_indices / 25, atol=1e-6)


def test_a_trimmed_mp4_cut_seeks_with_the_frames_its_edit_list_shows(media_dir: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_trimmed_mp4(media_dir / "trimmed_cut.mp4", frames=60, trim_frames=10)
    preprocessing = Preprocessing(num_frames=8, resize=64, crop=56)
    sought = decode_video(path, preprocessing, start_frame=30, end_frame=45)
    monkeypatch.setattr(decode, "_seek_point", lambda *args: None)
    from_start = decode_video(path, preprocessing, start_frame=30, end_frame=45)
    np.testing.assert_array_equal(sought.frames, from_start.frames)
    np.testing.assert_array_equal(sought.timestamps, from_start.timestamps)
