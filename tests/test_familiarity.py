"""The familiarity check: a hand-made bank, the input-range checks, and the demo model on real H.264 clips."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from aqa.cli import main as aqa_main
from exemplar_bank.bank import Exemplar, ExemplarBank
from exemplar_bank.familiarity import (
    MIN_CALIBRATION_DIVES,
    FamiliarityCalibration,
    FamiliarityCheck,
    FamiliarityError,
    InputRanges,
    Range,
    calibrate,
    why_not_calibrated,
)
from models.pretrained import DEMO_MODEL_DIR
from models.scorer import QueryLabels, Scorer
from training.pipeline import training_input_ranges


def hand_made_bank(n: int = 400, dim: int = 6, seed: int = 0) -> ExemplarBank:
    """``n`` exemplars whose features are standard normal in ``dim`` dimensions (one clip each)."""
    features = torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 1, dim))).float()
    exemplars = [Exemplar(id=f"e{i}", final_score=50.0 + i % 20, difficulty=2.0) for i in range(n)]
    return ExemplarBank(exemplars=exemplars, clip_features=features, fingerprint="hand-made")


@pytest.fixture(scope="module")
def bank_check() -> tuple[ExemplarBank, FamiliarityCheck]:
    bank = hand_made_bank()
    calibration = calibrate(bank, [f"e{i}" for i in range(0, 400, 4)], inputs=None, source="every 4th exemplar")
    return bank, FamiliarityCheck(calibration, bank)


def test_a_point_far_from_every_exemplar_is_flagged(bank_check) -> None:
    _, check = bank_check
    far = torch.full((6,), 8.0)  # 8 standard deviations out in every dimension
    familiarity = check.assess(far)
    assert familiarity.percentile == 100.0 and not familiarity.in_distribution
    assert familiarity.reasons == ["feature far from the bank: farther than all of the calibration dives (flagged above 95%)"]
    assert "unlike the dives this model was trained on" in familiarity.message


def test_a_point_among_the_exemplars_is_not(bank_check) -> None:
    bank, check = bank_check
    among = check.assess(bank.pooled_features[1])  # a reference exemplar near the middle of the cloud
    centre = check.assess(torch.zeros(6))
    assert among.in_distribution and among.message is None and among.reasons == []
    assert centre.in_distribution and centre.percentile == 0.0  # nearer the mean than any calibration dive
    # Held-out dives like the calibration ones are flagged at about the threshold's rate.
    fresh = torch.from_numpy(np.random.default_rng(1).normal(size=(400, 6))).float()
    flagged = np.mean([not check.assess(f).in_distribution for f in fresh])
    assert 0.01 < flagged < 0.10


def test_the_percentile_ranks_the_query_among_the_calibration_distances(bank_check) -> None:
    bank, check = bank_check
    distances = np.asarray(check.calibration.calibration_distances)
    assert np.all(np.diff(distances) >= 0) and len(distances) == 100
    # The calibration dive with 50 of the 100 distances below its own ranks at the 50th percentile (51 when the
    # last bits of its distance, computed alone, exceed those of the stored one).
    row = {e.id: i for i, e in enumerate(bank.exemplars)}
    by_distance = sorted(check.calibration.calibration_ids,
                         key=lambda i: check.reference.distance(bank.pooled_features[row[i]])[0])
    assert check.percentile(bank.pooled_features[row[by_distance[50]]]) in (50.0, 51.0)


def test_calibration_needs_enough_dives_and_belongs_to_its_bank(bank_check) -> None:
    bank, check = bank_check
    assert why_not_calibrated(bank, ["e1"] * 3) == f"3 calibration dives (needs {MIN_CALIBRATION_DIVES})"
    small = hand_made_bank(n=30, dim=16)
    reason = why_not_calibrated(small, [f"e{i}" for i in range(20)])
    assert reason == "10 reference exemplars for 16-dimensional features (needs more than 32)"
    with pytest.raises(ValueError, match="missing from the bank"):
        calibrate(bank, ["nope"], inputs=None, source="")
    with pytest.raises(FamiliarityError, match="calibrated on another exemplar bank"):
        FamiliarityCheck(check.calibration, hand_made_bank(seed=5, n=401))


def test_a_stale_familiarity_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "familiarity.json").write_text(json.dumps({"format_version": 1, "measure": "knn_cosine"}))
    with pytest.raises(FamiliarityError, match="not a familiarity calibration this code reads"):
        FamiliarityCalibration.load(tmp_path)
    assert FamiliarityCalibration.load(tmp_path / "elsewhere") is None


@dataclass
class Format:
    fps: float
    width: int
    height: int
    duration_seconds: float


def test_input_ranges_name_every_property_outside_the_training_videos() -> None:
    ranges = InputRanges.of([Format(25, 640, 480, 3.0), Format(60, 320, 240, 5.5), Format(30, 480, 360, 4.0)])
    assert ranges.fps == Range(low=25, high=60) and ranges.aspect == Range(low=4 / 3, high=4 / 3)
    assert ranges.num_videos == 3
    assert ranges.reasons(Format(30, 640, 480, 4.0)) == []
    assert ranges.reasons(Format(59.94, 320, 240, 5.6)) == []  # within the 2% tolerance
    assert ranges.reasons(Format(12, 1920, 1080, 20.0)) == [
        "duration 20.0 s outside the trained 3.0-5.5 s",
        "frame rate 12 fps outside the trained 25-60 fps",
        "width 1920 px outside the trained 320-640 px",
        "height 1080 px outside the trained 240-480 px",
        "aspect (width / height) 1.78 outside the trained 1.33",
    ]
    assert ranges.reasons(Format(float("nan"), 320, 240, 4.0)) == []  # unknown timing is not a reason
    with pytest.raises(ValueError, match="at least one video"):
        InputRanges.of([])


def test_training_records_the_formats_of_its_videos(tiny_dataset: Path, tiny_model_dir: Path) -> None:
    from training.pipeline import load_dataset

    ranges = training_input_ranges(load_dataset(tiny_dataset))
    assert (ranges.width, ranges.height, ranges.fps) == (Range(low=160, high=160), Range(low=120, high=120),
                                                         Range(low=25, high=25))
    assert 3.0 <= ranges.duration_seconds.low <= ranges.duration_seconds.high <= 6.0 and ranges.num_videos == 24
    # 24 dives are too few to calibrate: the model says so in its card and scores without a familiarity.
    card = json.loads((tiny_model_dir / "model_card.json").read_text())
    assert card["familiarity"] == {"not_calibrated": "5 calibration dives (needs 20)"}
    assert not (tiny_model_dir / "familiarity.json").exists()


@pytest.fixture(scope="module")
def demo() -> Scorer:
    return Scorer.from_dir(DEMO_MODEL_DIR)


def test_the_demo_knows_a_fresh_dive_of_its_own_style(demo: Scorer, demo_style_dive: Path) -> None:
    result = demo.score(demo_style_dive, QueryLabels(difficulty=3.0))
    assert result.familiarity.in_distribution and result.familiarity.percentile < 90
    assert result.familiarity.reasons == [] and result.familiarity.message is None
    assert result.interval.method == "conformal"


def test_the_demo_flags_a_test_pattern_and_widens_its_interval(demo: Scorer, non_dive_clip: Path) -> None:
    result = demo.score(non_dive_clip, QueryLabels(difficulty=3.0))
    familiarity = result.familiarity
    assert not familiarity.in_distribution and familiarity.percentile == 100.0
    assert familiarity.reasons[0].startswith("feature far from the bank")
    # The interval holds the central 90% of the bank's execution scores at this difficulty, and the conformal band.
    labels = np.array([e.final_score / e.difficulty for e in demo.bank.exemplars])
    low, high = 3.0 * np.percentile(labels, [5, 95])
    half = demo.config.calibration.abs_residual_q90 * 3.0
    assert result.interval.method == "unfamiliar"
    assert result.interval.low == pytest.approx(min(low, result.score - half))
    assert result.interval.high == pytest.approx(max(high, result.score + half))


def test_the_demo_flags_a_format_it_never_saw(demo: Scorer, tmp_path: Path) -> None:
    from training.synth.generate import generate_dataset

    generate_dataset(tmp_path, n=1, seed=4242, width=480, height=270, fps=50, progress=False)
    result = demo.score(tmp_path / "videos" / "dive_00000.mp4", QueryLabels(difficulty=3.0))
    reasons = result.familiarity.reasons
    assert "frame rate 50 fps outside the trained 25 fps" in reasons
    assert "width 480 px outside the trained 320 px" in reasons
    assert "aspect (width / height) 1.78 outside the trained 1.33" in reasons
    assert not result.familiarity.in_distribution and result.interval.method == "unfamiliar"


def test_aqa_score_prints_the_warning(non_dive_clip: Path, demo_style_dive: Path, capsys) -> None:
    assert aqa_main(["score", str(non_dive_clip), "--difficulty", "3.0"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: this video is unlike the dives this model was trained on" in out
    assert "feature far from the bank" in out and "unfamiliar" in out
    assert aqa_main(["score", str(demo_style_dive), "--difficulty", "3.0"]) == 0
    out = capsys.readouterr().out
    assert "WARNING" not in out and "familiarity  in distribution" in out


def test_a_rebuilt_bank_is_recalibrated_or_loses_its_stale_calibration(tiny_model_dir: Path, tiny_dataset: Path,
                                                                          tmp_path: Path) -> None:
    import shutil

    from training.datasets.records import DiveRecord
    from training.pipeline import calibrate_familiarity_if_possible, rebuild_bank

    bank = hand_made_bank()
    records = [DiveRecord(key=e.id, final_score=e.final_score, difficulty=e.difficulty) for e in bank.exemplars]
    calibration = calibrate_familiarity_if_possible(bank, [f"e{i}" for i in range(40)], records, source="test")
    assert len(calibration.calibration_distances) == 40 and calibration.inputs is None  # no video files to probe

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    calibration.save(model)  # a calibration of another bank: rebuilding must not keep it
    rebuild_bank(model, tiny_dataset, cache_dir=tmp_path / "cache", progress=False)
    assert not (model / "familiarity.json").exists()
    card = json.loads((model / "model_card.json").read_text())
    assert card["familiarity"] == {"not_calibrated": "2 calibration dives (needs 20)"}
    assert Scorer.from_dir(model).familiarity is None
