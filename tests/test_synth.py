"""The synthetic dive benchmark: calibration to real judging, visible faults, real H.264 output."""

from __future__ import annotations

import csv
import math
import pickle
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
from scipy import stats

from tests.paths import MTL_AQA_ANNOTATIONS
from training.synth import calibration
from training.synth.calibration import AnnotationFileError, calibrate_from_mtl_aqa, load_annotation_pickle
from training.synth.camera import BODY_PAD_M, Camera
from training.synth.dive_table import DIVE_TABLE, DIVES_BY_CODE, DiveCode
from training.synth.execution import faults_from_points, sample_faults
from training.synth.generate import LABEL_COLUMNS, generate_dataset, render_dive_video
from training.synth.kinematics import (
    BOARD_HEIGHT,
    BOARD_THICKNESS_M,
    GRAVITY,
    PRESS_SECONDS,
    SPLASH_RISE_M,
    DiveMotion,
)
from training.synth.nuisance import MAX_SHIFT, ZOOM_RANGE, sample_nuisance
from training.synth.preview import to_model_view
from training.synth.render import DiveRenderer, RenderError, action_seconds
from training.synth.scene import SynthDive, sample_labels, sample_synth_dive

MODEL_CROP_FRACTION = 112 / 128  # resize short side to 128, centre-crop 112


@pytest.fixture(scope="module")
def labels() -> dict[str, np.ndarray]:
    """5000 synthetic label draws (no rendering)."""
    drawn = [sample_labels(seed=0, index=i) for i in range(5000)]
    return {
        "difficulty": np.array([dive.difficulty for dive, _ in drawn]),
        "judges": np.array([panel.judge_scores for _, panel in drawn]),
        "final": np.array([panel.final_score for _, panel in drawn]),
        "mu": np.array([panel.panel_mean for _, panel in drawn]),
    }


# --- calibration -------------------------------------------------------------------------------------
def test_judge_scores_match_real_judging(labels):
    judges = labels["judges"]
    dive_mean = judges.mean(axis=1)
    within = judges.std(axis=1, ddof=1)
    assert judges.mean() == pytest.approx(calibration.JUDGE_MEAN, abs=0.1)
    assert dive_mean.std() == pytest.approx(calibration.DIVE_MEAN_SD, abs=0.1)
    assert within.mean() == pytest.approx(calibration.WITHIN_DIVE_SD, abs=0.03)
    # Judges disagree more about weak dives, as in the real data.
    assert within[dive_mean < 6].mean() > within[dive_mean >= 8].mean() + 0.1
    assert np.all((judges >= 0) & (judges <= 10))
    assert np.all(judges * 2 == np.round(judges * 2))
    for quantile, real in zip((0.05, 0.5, 0.95), (4.2143, 7.3571, 8.9286)):
        assert np.quantile(dive_mean, quantile) == pytest.approx(real, abs=0.25)


def test_difficulty_follows_real_frequencies_and_final_follows_the_rule(labels):
    difficulty, judges, final = labels["difficulty"], labels["judges"], labels["final"]
    total = sum(calibration.DD_COUNTS.values())
    synthetic = {dd: np.mean(np.isclose(difficulty, dd)) for dd in calibration.DD_COUNTS}
    assert sum(synthetic.values()) == pytest.approx(1.0)
    total_variation = 0.5 * sum(abs(synthetic[dd] - n / total) for dd, n in calibration.DD_COUNTS.items())
    assert total_variation < 0.03
    middle_three = np.sort(judges, axis=1)[:, 2:5].sum(axis=1)
    np.testing.assert_allclose(final, difficulty * middle_three, rtol=0, atol=1e-9)
    assert stats.spearmanr(difficulty, final)[0] == pytest.approx(calibration.SPEARMAN_DD_FINAL, abs=0.04)
    assert final.mean() == pytest.approx(calibration.FINAL_MEAN, abs=1.5)
    assert final.std() == pytest.approx(calibration.FINAL_SD, abs=1.0)


def test_noise_free_panel_mean_leaves_only_judge_noise(labels):
    """A perfect model (knowing mu) is limited by the judges' noise, not by anything else."""
    ceiling = stats.spearmanr(labels["mu"] * labels["difficulty"], labels["final"])[0]
    assert 0.97 < ceiling < 0.999


def test_constants_match_the_real_mtl_aqa_file():
    real = calibrate_from_mtl_aqa(MTL_AQA_ANNOTATIONS)
    assert real.n_dives == 1412
    assert real.dd_counts == calibration.DD_COUNTS
    np.testing.assert_allclose(real.dive_mean_quantiles, calibration.DIVE_MEAN_QUANTILES, atol=1e-4)
    assert real.judge_mean == pytest.approx(calibration.JUDGE_MEAN, abs=1e-3)
    assert real.dive_mean_sd == pytest.approx(calibration.DIVE_MEAN_SD, abs=1e-3)
    assert real.within_dive_sd == pytest.approx(calibration.WITHIN_DIVE_SD, abs=1e-3)
    for measured, constant in zip(real.within_dive_sd_bins, calibration.WITHIN_DIVE_SD_BINS):
        assert measured == pytest.approx(constant, abs=1e-3)
    assert real.pearson_dd_dive_mean == pytest.approx(calibration.PEARSON_DD_DIVE_MEAN, abs=1e-3)
    assert real.spearman_dd_dive_mean == pytest.approx(calibration.SPEARMAN_DD_DIVE_MEAN, abs=1e-3)
    assert real.spearman_dd_final == pytest.approx(calibration.SPEARMAN_DD_FINAL, abs=1e-3)
    assert real.final_mean == pytest.approx(calibration.FINAL_MEAN, abs=0.01)
    assert real.final_sd == pytest.approx(calibration.FINAL_SD, abs=0.01)
    assert real.n_rule_consistent == 1382


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_annotation_loader_refuses_code_and_reads_numpy(tmp_path):
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"a": _Exploit()}))
    with pytest.raises(AnnotationFileError, match="builtins.print is not allowed"):
        load_annotation_pickle(evil)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({(1, 2): {"judge_scores": np.array([9.5, 8.0]), "difficulty": 3.2}}))
    loaded = load_annotation_pickle(plain)
    np.testing.assert_array_equal(loaded[(1, 2)]["judge_scores"], [9.5, 8.0])
    with pytest.raises(AnnotationFileError, match="not found"):
        load_annotation_pickle(tmp_path / "missing.pkl")


# --- dive table and faults ---------------------------------------------------------------------------
def test_dive_table_covers_every_real_difficulty_and_reads_codes():
    assert {d.difficulty for d in DIVE_TABLE} >= set(calibration.DD_COUNTS)
    dive = DIVES_BY_CODE["107B"]
    assert (dive.group, dive.somersaults, dive.position, dive.head_first) == (1, 3.5, "B", True)
    assert dive.faces_water and dive.rotates_forward
    inward = DIVES_BY_CODE["404C"]
    assert not inward.head_first and not inward.faces_water and inward.rotates_forward
    with pytest.raises(ValueError, match="not a non-flying, non-twisting dive code"):
        DiveCode("5253B", 3.2)


def test_faults_are_a_deterministic_encoding_of_the_panel_mean():
    rng = np.random.default_rng(0)
    for mu in np.linspace(0.0, 10.0, 41):
        faults = sample_faults(rng, float(mu))
        assert faults.panel_mean() == pytest.approx(mu, abs=1e-9)
        assert (
            min(faults.under_rotation_deg, faults.looseness_deg, faults.entry_line_deg, faults.apex_drop_m)
            >= 0
            and faults.splash_scale >= 1.0
        )
    with pytest.raises(ValueError, match="panel mean"):
        sample_faults(rng, 11.0)


# --- geometry: the tracking camera ---------------------------------------------------------------
def _worst_crop_excess(world: np.ndarray, track: np.ndarray, pad_m: float, width: int, height: int) -> float:
    """Largest distance (px) by which padded points (frames, P, 2) leave the model's centre crop,
    over the extreme nuisance zooms and shifts; <= 0 means every point is inside."""
    side = min(width, height)
    half = MODEL_CROP_FRACTION * side / 2
    worst = -np.inf
    for zoom in ZOOM_RANGE:
        for shift_x in (-MAX_SHIFT, MAX_SHIFT):
            for shift_y in (-MAX_SHIFT, MAX_SHIFT):
                camera = Camera(width, height, (0.0, 0.0), zoom, shift_x, shift_y)
                # The frame's centre looks at track[k]: project world - track[k] through a camera at 0.
                pixels = camera.to_pixels((world - track[:, None, :]).reshape(-1, 2))
                offsets = pixels - [width / 2, height / 2]
                excess = np.abs(offsets).max(axis=1) + pad_m * camera.pixels_per_m - half
                worst = max(worst, float(np.nanmax(excess)))
    return worst


def test_the_tracking_camera_keeps_diver_board_and_splash_in_the_model_crop():
    """Every dive of the table, each fault at 0 and at its worst, the camera nuisance at its extremes:
    the body above the water is always inside the centre 112/128 crop; the board tip (top surface and
    upper half of its thickness) from the start, through take-off and apex, until the centre of mass
    falls back to its take-off height; the water line and the whole splash from the entry on."""
    rng = np.random.default_rng(0)
    width, height = 320, 240
    extremes = [np.zeros(5)] + [10.0 * row for row in np.eye(5)]
    for dive in DIVE_TABLE:
        for points in extremes:
            motion = DiveMotion(dive, faults_from_points(points), rng)
            look = sample_nuisance(rng, action_seconds(motion))
            renderer = DiveRenderer(motion, look, width, height, 25)
            times, joints, track = renderer.times, renderer.joints.copy(), renderer.track

            under_water = joints[:, :, 1] < -BODY_PAD_M  # hidden by the water: need not be seen
            joints[under_water] = np.nan
            assert _worst_crop_excess(joints, track, BODY_PAD_M, width, height) <= 1e-6, dive.code

            apex = motion.vy0 / GRAVITY
            up_to_past_apex = times <= 2.0 * apex  # until the centre of mass is back at take-off height
            assert np.sum((times >= -PRESS_SECONDS) & (times <= apex)) >= 10  # take-off and apex included
            tip = np.array(
                [
                    [
                        [x, BOARD_HEIGHT + motion.board_deflection(0.0, t) - depth]
                        for x in (0.0, -0.5)
                        for depth in (0.0, BOARD_THICKNESS_M / 2)
                    ]
                    for t in times[up_to_past_apex]
                ]
            )
            assert _worst_crop_excess(tip, track[up_to_past_apex], 0.0, width, height) <= 1e-6, dive.code

            entered = times >= motion.flight_seconds
            assert np.sum(entered) >= 25
            left, right, top = motion.splash_bounds()
            assert top >= SPLASH_RISE_M * motion.faults.splash_scale * 0.3
            box = [[left, -0.2], [right, -0.2], [left, top], [right, top]]  # 0.2 m of water shown
            corners = np.array([box] * int(np.sum(entered)))
            assert _worst_crop_excess(corners, track[entered], 0.0, width, height) <= 1e-6, dive.code
            droplets = [np.array([(x, y) for x, y, _ in motion.droplets_at(t)]).reshape(-1, 2) for t in times]
            inside = [(x >= left) & (x <= right) & (y <= top) for x, y in np.concatenate(droplets)]
            assert all(inside)


def _segmentation_look(dive: SynthDive, zoom: float) -> SynthDive:
    """The dive in colours far apart, so body, board and water can be told apart by colour."""
    look = replace(
        dive.nuisance,
        wall_rgb=(40, 40, 40),
        stripe_rgb=(70, 60, 90),
        water_rgb=(20, 80, 160),
        board_rgb=(200, 200, 200),
        skin_rgb=(230, 160, 110),
        suit_rgb=(220, 30, 30),
        zoom=zoom,
        shift_x=0.0,
        shift_y=0.0,
    )
    return dive.with_nuisance(look)


def _near(view: np.ndarray, rgb: tuple[int, int, int], tolerance: float = 40.0) -> np.ndarray:
    return np.linalg.norm(view.astype(float) - rgb, axis=2) < tolerance


def _diver_mask(view: np.ndarray, dive: SynthDive) -> np.ndarray:
    return _near(view, dive.nuisance.skin_rgb) | _near(view, dive.nuisance.suit_rgb)


def test_the_diver_is_large_in_the_model_view_and_the_board_shows_at_the_apex():
    """Measured from the pixels after the model's preprocessing (short side 128, centre crop 112),
    at the smallest nuisance zoom."""
    dive = _segmentation_look(sample_synth_dive(seed=2, index=0), zoom=ZOOM_RANGE[0])
    renderer = dive.renderer(320, 240, 25)
    assert renderer.times[0] < -PRESS_SECONDS  # the lead-in: standing on the board
    standing = _diver_mask(to_model_view(renderer.frame(0)), dive)
    rows = np.flatnonzero(standing.any(axis=1))
    assert rows.max() - rows.min() + 1 >= 45
    assert 0 < rows.min() and rows.max() < 111  # wholly inside the crop

    apex = int(np.argmin(np.abs(renderer.times - renderer.motion.vy0 / GRAVITY)))
    view = to_model_view(renderer.frame(apex))
    board_rows = np.flatnonzero(_near(view, dive.nuisance.board_rgb).sum(axis=1) >= 5)
    diver_rows = np.flatnonzero(_diver_mask(view, dive).any(axis=1))
    assert board_rows.size and diver_rows.size
    assert diver_rows.max() < board_rows.min()  # the diver is above the board edge, both in view


def _body_axis_from_vertical(mask: np.ndarray) -> float:
    """Angle (degrees) of the principal axis of a pixel mask from the image's vertical."""
    rows, cols = np.nonzero(mask)
    covariance = np.cov(np.stack([cols, rows]).astype(float))
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    dx, dy = eigenvectors[:, np.argmax(eigenvalues)]
    return math.degrees(math.atan2(abs(dx), abs(dy)))


def test_under_rotation_tilts_the_body_in_the_model_view_by_the_declared_angle():
    """Head-first entry, frame just before the water: the body axis measured from the 112 x 112
    pixels is off vertical by the under-rotation (12 degrees per point)."""
    base = _segmentation_look(sample_synth_dive(seed=4, index=0), zoom=1.0)
    base = SynthDive(DIVES_BY_CODE["105B"], base.panel, base.faults, base.nuisance, base.splash_seed)
    angles = {}
    for points in (0.0, 2.0, 5.0):
        dive = base.with_faults(faults_from_points([points, 0, 0, 0, 0]))
        renderer = dive.renderer(320, 240, 25)
        before_entry = int(np.flatnonzero(renderer.times < renderer.motion.flight_seconds - 0.02)[-1])
        mask = _diver_mask(to_model_view(renderer.frame(before_entry)), dive)
        assert mask.sum() > 150
        angles[points] = _body_axis_from_vertical(mask)
    assert angles[0.0] < 3.0
    assert angles[2.0] - angles[0.0] == pytest.approx(24.0, abs=4.0)
    assert angles[5.0] - angles[0.0] == pytest.approx(60.0, abs=4.0)


def test_faults_change_the_motion_as_declared():
    dive = DIVES_BY_CODE["107C"]
    rng = np.random.default_rng(0)
    clean = DiveMotion(dive, faults_from_points(np.zeros(5)), rng)
    short = DiveMotion(dive, faults_from_points([5.0, 0, 0, 0, 0]), rng)
    low = DiveMotion(dive, faults_from_points([0, 0, 0, 0, 5.0]), rng)

    def body_axis_from_vertical(motion: DiveMotion) -> float:
        hip, shoulder = motion.joints(motion.flight_seconds)[:2]
        return math.degrees(math.atan2(abs(shoulder[0] - hip[0]), abs(shoulder[1] - hip[1])))

    assert body_axis_from_vertical(clean) < 1.0  # head-first rip entry: vertical
    assert body_axis_from_vertical(short) == pytest.approx(60.0, abs=1.0)  # 5 points x 12 degrees
    apex = lambda m: m.com(m.vy0 / GRAVITY)[1] - m.takeoff_com[1]
    assert apex(clean) - apex(low) == pytest.approx(0.6, abs=1e-6)  # 5 points x 0.12 m


# --- rendering ---------------------------------------------------------------------------------------
def _white_pixels_near_entry(dive, faults) -> int:
    renderer = dive.with_faults(faults).renderer(320, 240, 25)
    motion = renderer.motion
    index = int(np.argmin(np.abs(renderer.times - (motion.flight_seconds + 0.3))))
    view = to_model_view(renderer.frame(index)).astype(int)
    camera = renderer.camera(index)
    # The water line's row in the 112 x 112 view (short side 240 -> 128, then the centre crop).
    scale = 128 / 240
    water_row = round(camera.row_of(0.0) * scale - (128 - 112) / 2)
    assert 0 <= water_row < 112
    return int(np.sum(view[: water_row + 2].min(axis=2) > 225))


def test_a_bigger_splash_fault_whitens_the_water_line():
    dive = sample_synth_dive(seed=3, index=0)
    clean = _white_pixels_near_entry(dive, faults_from_points([0, 0, 0, 0.0, 0]))
    splashy = _white_pixels_near_entry(dive, faults_from_points([0, 0, 0, 6.0, 0]))
    assert clean > 0
    assert splashy > 3 * clean


def test_nuisances_change_pixels_but_not_labels():
    dive = sample_synth_dive(seed=5, index=2)
    other_look = sample_nuisance(np.random.default_rng(99), action_seconds=3.0)
    restyled = dive.with_nuisance(other_look)
    assert (restyled.dive, restyled.panel, restyled.faults) == (dive.dive, dive.panel, dive.faults)
    assert sample_labels(5, 2) == (dive.dive, dive.panel)  # labels come from their own stream
    first = dive.renderer(160, 120, 10).frame(0)
    second = restyled.renderer(160, 120, 10).frame(0)
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 10


def _decode(path: Path) -> tuple[str, list[np.ndarray]]:
    with av.open(str(path)) as container:
        codec = container.streams.video[0].codec_context.name
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return codec, frames


def test_single_clip_is_real_h264_with_the_requested_length(tmp_path):
    path = render_dive_video(tmp_path / "clip.mp4", seconds=4.0, width=208, height=160, fps=10, seed=1)
    codec, frames = _decode(path)
    assert codec == "h264"
    assert len(frames) == 40
    assert frames[0].shape == (160, 208, 3)
    with pytest.raises(ValueError, match="cannot hold this dive"):
        render_dive_video(tmp_path / "short.mp4", seconds=1.0, width=208, height=160, fps=10)


def test_generate_dataset_writes_the_exact_layout_deterministically(tmp_path):
    first = generate_dataset(tmp_path / "a", n=3, seed=7, width=160, height=120, fps=10, progress=False)
    with first.open() as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == LABEL_COLUMNS
    assert rows[0] == ["video", "final_score", "difficulty", "action_class"] + [
        f"judge_{j}" for j in range(1, 8)
    ]
    assert [r[0] for r in rows[1:]] == [f"videos/dive_0000{i}.mp4" for i in range(3)]
    for row in rows[1:]:
        judges = sorted(float(x) for x in row[4:])
        assert float(row[1]) == pytest.approx(float(row[2]) * sum(judges[2:5]), abs=1e-9)
        assert row[3] in DIVES_BY_CODE
        codec, frames = _decode(first.parent / row[0])
        assert codec == "h264" and frames[0].shape == (120, 160, 3)
    with (first.parent / "factors.csv").open() as handle:
        factors = list(csv.DictReader(handle))
    assert [f["video"] for f in factors] == [r[0] for r in rows[1:]]
    assert {"panel_mean", "under_rotation_deg", "splash_scale", "tempo", "wall_rgb"} <= set(factors[0])

    # Same seed, two workers: same labels, same pixels.
    second = generate_dataset(
        tmp_path / "b", n=3, seed=7, width=160, height=120, fps=10, workers=2, progress=False
    )
    assert second.read_text() == first.read_text()
    for row in rows[1:]:
        _, frames_a = _decode(first.parent / row[0])
        _, frames_b = _decode(second.parent / row[0])
        assert len(frames_a) == len(frames_b)
        np.testing.assert_array_equal(frames_a[0], frames_b[0])
        np.testing.assert_array_equal(frames_a[-1], frames_b[-1])


def test_a_faster_x264_preset_writes_the_same_dives_in_bigger_files(tmp_path):
    slow = generate_dataset(tmp_path / "veryfast", n=2, seed=3, width=160, height=120, fps=10, progress=False)
    fast = generate_dataset(tmp_path / "ultrafast", n=2, seed=3, width=160, height=120, fps=10, progress=False,
                            preset="ultrafast")
    assert fast.read_text() == slow.read_text()
    for name in ("dive_00000.mp4", "dive_00001.mp4"):
        slow_video, fast_video = slow.parent / "videos" / name, fast.parent / "videos" / name
        assert fast_video.stat().st_size > slow_video.stat().st_size  # fewer coding tools, more bytes
        (_, slow_frames), (_, fast_frames) = _decode(slow_video), _decode(fast_video)
        assert len(fast_frames) == len(slow_frames)
        difference = np.abs(np.stack(fast_frames).astype(int) - np.stack(slow_frames)).mean()
        assert 0 < difference < 3  # the same picture, other compression artefacts


def test_bad_requests_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="n must be >= 1"):
        generate_dataset(tmp_path, n=0, seed=0, progress=False)
    with pytest.raises(ValueError, match="unknown x264 preset 'fastest'"):
        generate_dataset(tmp_path, n=1, seed=0, preset="fastest", progress=False)
    with pytest.raises(RenderError, match="must be even"):
        generate_dataset(tmp_path, n=1, seed=0, width=161, progress=False)
    with pytest.raises(RenderError, match="too small"):
        generate_dataset(tmp_path, n=1, seed=0, width=32, height=32, progress=False)
