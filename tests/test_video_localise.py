"""Motion localisation: the energy and window rules on hand-made numbers, then real H.264 files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter

from tests.media import BURST_FIRST, BURST_LAST, write_frame_folder, write_h264
from training.synth.scene import sample_synth_dive
from video.decode import ONE_PASS_BYTES, decode_video
from video.frame_folder import decode_frame_folder
from video.localise import MotionWindow, grey_thumbnail, locate_action, motion_energy, thumbnail_height
from video.preprocessing import Preprocessing

# 25 fps: 0.2 s is 5 frames of margin on each side.
WINDOW = MotionWindow(threshold=0.3, smoothing=1, before_s=0.2, after_s=0.2)
LOCALISED = Preprocessing(num_frames=8, resize=64, crop=56, motion_window=WINDOW)


def test_motion_energy_is_the_mean_absolute_frame_difference() -> None:
    grey = np.zeros((4, 2, 2), np.uint8)
    grey[1] = [[4, 0], [0, 0]]  # |1 - 0| = 1 on average
    grey[2] = [[4, 8], [8, 8]]  # |2 - 1| = (0 + 8 + 8 + 8) / 4 = 6
    grey[3] = [[0, 8], [8, 8]]  # |3 - 2| = 1; no uint8 wrap-around
    np.testing.assert_allclose(motion_energy(grey), [1.0, 1.0, 6.0, 1.0])
    assert motion_energy(grey[:1]).tolist() == [0.0]


def test_window_is_the_span_above_threshold_widened_by_the_margins() -> None:
    energy = np.array([0, 0, 0, 0, 1, 10, 8, 1, 0, 0, 0, 0, 0, 0], float)
    # threshold 0.3 x peak 10 = 3: frames 5-6 are active; 10 fps -> 0.2 s = 2 frames, 0.3 s = 3 frames.
    window = MotionWindow(threshold=0.3, smoothing=1, before_s=0.2, after_s=0.3)
    assert locate_action(energy, fps=10.0, window=window) == (3, 9)
    # Margins never leave the clip.
    assert locate_action(energy, fps=100.0, window=window) == (0, 13)


def test_smoothing_averages_neighbours_before_the_threshold() -> None:
    energy = np.array([0, 0, 0, 9, 0, 0, 3, 3, 3, 0, 0], float)
    # Raw: only frame 3 passes 0.5 x 9. Centred mean of 3 frames: [0,0,3,3,3,1,2,3,2,1,0] -> peak 3;
    # frames 2-4 and 6-8 pass 1.5, so the span is 2..8 (the quiet frame 5 between them stays inside).
    window = MotionWindow(threshold=0.5, smoothing=3, before_s=0.0, after_s=0.0)
    assert locate_action(energy, fps=25.0, window=window) == (2, 8)
    raw = MotionWindow(threshold=0.5, smoothing=1, before_s=0.0, after_s=0.0)
    assert locate_action(energy, fps=25.0, window=raw) == (3, 3)


def test_clips_shorter_than_the_smoothing_stay_in_range() -> None:
    window = MotionWindow(threshold=0.5, smoothing=5, before_s=0.0, after_s=0.0)
    assert locate_action(np.array([4.0, 4.0]), fps=25.0, window=window) == (0, 1)
    assert locate_action(np.array([0.0, 6.0, 0.0]), fps=25.0, window=window) == (0, 2)
    assert locate_action(np.array([3.0]), fps=25.0, window=window) == (0, 0)


def test_a_still_clip_keeps_its_whole_range() -> None:
    assert locate_action(np.zeros(12), fps=25.0, window=WINDOW) == (0, 11)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("threshold", 0.0, "threshold"), ("threshold", 1.5, "threshold"), ("smoothing", 0, "smoothing"), ("smoothing", 4, "odd"),
     ("before_s", -0.1, "margins"), ("after_s", -1.0, "margins")],
)
def test_bad_window_settings_are_refused(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MotionWindow(**{field: value})


def test_preprocessing_records_the_window_and_old_dicts_stay_the_same() -> None:
    plain = Preprocessing(num_frames=8, resize=64, crop=56)
    assert "motion_window" not in plain.to_dict()  # fingerprints of models made before the option
    data = LOCALISED.to_dict()
    assert data["motion_window"] == {"threshold": 0.3, "smoothing": 1, "before_s": 0.2, "after_s": 0.2}
    assert Preprocessing.from_dict(data) == LOCALISED
    with pytest.raises(ValueError, match="motion_window"):
        Preprocessing(motion_window={"threshold": 0.3})  # type: ignore[arg-type]


def test_decode_samples_only_the_span_that_moves(media_dir: Path) -> None:
    clip = write_h264(media_dir / "burst.mp4", frames=80, width=160, height=120, pattern="burst")
    decoded = decode_video(clip, LOCALISED)
    # Motion from frame BURST_FIRST + 1 to BURST_LAST, 5 frames of margin each side.
    assert abs(int(decoded.frame_indices[0]) - (BURST_FIRST + 1 - 5)) <= 1
    assert abs(int(decoded.frame_indices[-1]) - (BURST_LAST + 5)) <= 1
    assert decoded.frames.shape == (8, 56, 56, 3)
    np.testing.assert_allclose(decoded.timestamps, decoded.frame_indices / 25, atol=1e-6)
    # The same frames as decoding that range without localisation.
    first, last = int(decoded.frame_indices[0]), int(decoded.frame_indices[-1])
    plain = decode_video(clip, Preprocessing(num_frames=8, resize=64, crop=56), start_frame=first, end_frame=last)
    np.testing.assert_array_equal(decoded.frames, plain.frames)


def test_localisation_stays_inside_a_given_frame_range(media_dir: Path) -> None:
    clip = write_h264(media_dir / "burst.mp4", frames=80, width=160, height=120, pattern="burst")
    decoded = decode_video(clip, LOCALISED, start_frame=40, end_frame=79)
    assert decoded.frame_indices[0] == 40
    assert abs(int(decoded.frame_indices[-1]) - (BURST_LAST + 5)) <= 1


def test_frame_folders_refuse_localisation(media_dir: Path) -> None:
    folder = write_frame_folder(media_dir / "frames", frames=10)
    with pytest.raises(ValueError, match="video files only"):
        decode_frame_folder(folder, LOCALISED)


def test_the_demo_window_covers_a_rendered_dive_and_cuts_the_wait(tmp_path: Path) -> None:
    """On synthetic dives the default window holds take-off to entry and drops much of the rest."""
    for index in range(3):
        dive = sample_synth_dive(5, index)
        path = tmp_path / f"dive_{index}.mp4"
        frames = dive.render(path, 320, 240, 25, preset="ultrafast")
        times = dive.renderer(320, 240, 25).times
        take_off = int(np.flatnonzero(times >= 0.0)[0])
        entry = int(np.flatnonzero(times <= dive.motion().flight_seconds)[-1])
        indices = decode_video(path, Preprocessing(num_frames=16, resize=64, crop=56,
                                                   motion_window=MotionWindow())).frame_indices
        assert indices[0] <= take_off and indices[-1] >= entry
        assert indices[-1] - indices[0] + 1 <= 0.75 * frames


def _two_pass_reference(path: Path, preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the decoder returned before it took one pass: thumbnails of every frame (PyAV, a pass of their
    own), the span that moves, then the uniform samples of that span decoded again as a plain range."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        height = thumbnail_height(stream.codec_context.width, stream.codec_context.height)
        fps = float(stream.average_rate)
        reformatter = VideoReformatter()
        thumbnails = np.stack([grey_thumbnail(frame, height, reformatter) for frame in container.decode(stream)])
    start, end = locate_action(motion_energy(thumbnails), fps, preprocessing.motion_window)
    plain = decode_video(path, replace(preprocessing, motion_window=None), start_frame=start, end_frame=end)
    return plain.frames, plain.frame_indices, plain.timestamps


@pytest.mark.parametrize("one_pass_bytes", [ONE_PASS_BYTES, 0])
def test_one_pass_takes_the_same_frames_as_two_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       one_pass_bytes: int) -> None:
    """The demo's preprocessing on rendered dives: same indices, pixels and times, in one pass or (over the
    memory budget) two."""
    monkeypatch.setattr("video.decode.ONE_PASS_BYTES", one_pass_bytes)
    demo = Preprocessing(num_frames=32, resize=128, crop=64, motion_window=MotionWindow())
    for index in range(2):
        path = tmp_path / f"dive_{index}.mp4"
        sample_synth_dive(9, index).render(path, 320, 240, 25, preset="ultrafast")
        decoded = decode_video(path, demo)
        frames, indices, timestamps = _two_pass_reference(path, demo)
        np.testing.assert_array_equal(decoded.frame_indices, indices)
        np.testing.assert_array_equal(decoded.frames, frames)
        np.testing.assert_array_equal(decoded.timestamps, timestamps)


def test_window_end_sampling_reaching_before_the_span_still_gets_its_frames(media_dir: Path) -> None:
    clip = write_h264(media_dir / "burst.mp4", frames=80, width=160, height=120, pattern="burst")
    long_window = replace(LOCALISED, num_frames=30, sampling="window_end")
    decoded = decode_video(clip, long_window, start_frame=BURST_FIRST - 2)  # the 30 frames start before it
    assert decoded.frame_indices[0] < BURST_FIRST - 2
    plain = decode_video(clip, replace(long_window, motion_window=None), end_frame=int(decoded.frame_indices[-1]))
    np.testing.assert_array_equal(decoded.frame_indices, plain.frame_indices)
    np.testing.assert_array_equal(decoded.frames, plain.frames)


def _two_bursts(path: Path) -> Path:
    """A square drifts (frames 10-25), everything stands still for 3 s, then a bigger square races (100-115)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for index in range(130):
            image = np.full((120, 160, 3), 90, np.uint8)
            slow = 10 + 2 * (min(max(index, 10), 25) - 10)
            image[30:46, slow : slow + 16] = (240, 220, 40)
            fast = 5 + 8 * (min(max(index, 100), 115) - 100)
            image[70:100, fast : fast + 30] = (30, 200, 240)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_motion_that_returns_after_a_quiet_stretch_gets_its_samples_from_a_second_pass(tmp_path: Path) -> None:
    path = _two_bursts(tmp_path / "two_bursts.mp4")
    window = Preprocessing(num_frames=24, resize=64, crop=56, motion_window=MotionWindow(threshold=0.2))
    decoded = decode_video(path, window)
    frames, indices, timestamps = _two_pass_reference(path, window)
    assert indices[0] < 30 and indices[-1] > 100  # the span holds both bursts and the still stretch between
    np.testing.assert_array_equal(decoded.frame_indices, indices)
    np.testing.assert_array_equal(decoded.frames, frames)
    np.testing.assert_array_equal(decoded.timestamps, timestamps)
