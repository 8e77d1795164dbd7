"""The scoring core end to end on a model our own training made (tiny profile, synthetic dives)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from exemplar_bank.bank import BankMismatchError
from models.model_dir import BACKBONE_WEIGHTS, ModelConfig
from models.scorer import QueryLabels, Scorer
from training.datasets.folder_csv import load_folder_csv
from video.decode import decode_video


@pytest.fixture(scope="module")
def scorer(tiny_model_dir: Path) -> Scorer:
    return Scorer.from_dir(tiny_model_dir)


def test_model_directory_is_complete(tiny_model_dir: Path) -> None:
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "backbone.safetensors", "head.safetensors", "bank", "model_card.json",
            "MODEL_CARD.md", "report"} <= names
    card = json.loads((tiny_model_dir / "model_card.json").read_text())
    test_metrics = card["evaluations"]["test split"]
    metric_names = {"spearman", "relative_l2_x100", "relative_l2_x100_label_range"}
    assert set(test_metrics["final"]) == set(test_metrics["execution"]) == metric_names
    assert card["git_commit"]
    assert (tiny_model_dir / "report" / "scatter.png").stat().st_size > 1000
    config = ModelConfig.load(tiny_model_dir)
    assert len(config.head_config["boundaries"]) == 2 ** config.head_config["depth"]
    assert config.calibration is not None and config.calibration.abs_residual_q90 > 0


def test_score_votes_with_bank_exemplars(scorer: Scorer, tiny_dataset: Path) -> None:
    record = load_folder_csv(tiny_dataset / "labels.csv")[0]
    result = scorer.score(record.video, QueryLabels(difficulty=record.difficulty, action_class=record.action_class),
                          exclude_ids=frozenset({record.key}))
    m = scorer.config.voting.num_exemplars
    assert len(result.votes) == m and record.key not in {v.id for v in result.votes}
    for vote in result.votes:
        assert vote.vote == pytest.approx(vote.label + vote.relative, abs=1e-4)
        assert vote.label == pytest.approx(vote.final_score / vote.difficulty, abs=1e-4)
    # s = mean_m (R(f, f_m) + s_m), times the query's difficulty for execution labels
    assert result.score == pytest.approx(np.mean([v.vote for v in result.votes]) * record.difficulty, abs=1e-3)
    assert result.difficulty == record.difficulty and result.difficulty_source == "given"
    assert result.interval.low < result.score < result.interval.high
    assert result.interval.method == "conformal"
    assert set(result.timings) == {"decode", "features", "voting", "total"}
    assert result.video is not None and result.video.width == 160 and result.video.height == 120
    # The tiny profile reads the whole video (no motion window).
    assert result.video.frames_read == (0, result.video.frame_count - 1)
    assert result.video.seconds_read == (0.0, pytest.approx((result.video.frame_count - 1) / result.video.fps))


def test_score_and_interval_stay_within_what_a_panel_can_give(scorer: Scorer, tiny_dataset: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A small model's band (or its votes) can reach below 0 or above 30 x difficulty; the result never does."""
    record = load_folder_csv(tiny_dataset / "labels.csv")[0]
    features = scorer.extract_features(decode_video(record.video, scorer.preprocessing))
    labels = QueryLabels(difficulty=record.difficulty, action_class=record.action_class)
    monkeypatch.setattr(scorer.config.calibration, "abs_residual_q90", 1000.0)
    wide = scorer.score_features(features, labels)
    assert (wide.interval.low, wide.interval.high) == (0.0, pytest.approx(30.0 * record.difficulty))
    assert 0.0 < wide.score < 30.0 * record.difficulty
    monkeypatch.setattr(scorer, "_bank_labels", scorer._bank_labels - 1000.0)  # every vote far below 0
    low = scorer.score_features(features, labels)
    assert all(v.vote < 0 for v in low.votes)
    assert low.score == 0.0 and low.execution_score == 0.0 and low.interval.low == 0.0


def test_bank_features_are_what_the_backbone_makes(scorer: Scorer, tiny_dataset: Path) -> None:
    """Exemplar features come from the bank; recomputing one gives the same vector (float16 storage)."""
    records = {r.key: r for r in load_folder_csv(tiny_dataset / "labels.csv")}
    index = 2
    record = records[scorer.bank.exemplars[index].id]
    fresh = scorer.extract_features(decode_video(record.video, scorer.preprocessing))
    torch.testing.assert_close(fresh.half().float(), scorer.bank.clip_features[index])


def test_difficulty_is_estimated_when_not_given(scorer: Scorer, tiny_dataset: Path) -> None:
    record = load_folder_csv(tiny_dataset / "labels.csv")[1]
    result = scorer.score(record.video)
    known = {e.difficulty for e in scorer.bank.exemplars}
    assert result.difficulty_source == "estimated" and result.difficulty in known
    assert result.score == pytest.approx(result.execution_score * result.difficulty, rel=1e-6)


def test_a_bank_made_with_other_weights_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    weights = load_file(str(copy / BACKBONE_WEIGHTS))
    first = next(iter(weights))
    weights[first] = weights[first] + 0.01
    save_file(weights, str(copy / BACKBONE_WEIGHTS))
    with pytest.raises(BankMismatchError, match="made by another model"):
        Scorer.from_dir(copy)


def test_cli_score_prints_the_same_result_as_the_core(scorer: Scorer, tiny_model_dir: Path,
                                                      tiny_dataset: Path) -> None:
    video = tiny_dataset / "videos" / "dive_00002.mp4"
    completed = subprocess.run(
        [sys.executable, "-m", "aqa.cli", "score", str(video), "--model", str(tiny_model_dir),
         "--difficulty", "3.0", "--json"], capture_output=True, text=True, check=True,
    )
    printed = json.loads(completed.stdout)
    direct = scorer.score(video, QueryLabels(difficulty=3.0))
    assert printed["score"] == pytest.approx(direct.score, abs=1e-4)
    assert [v["id"] for v in printed["votes"]] == [v.id for v in direct.votes]

    human = subprocess.run([sys.executable, "-m", "aqa.cli", "score", str(video), "--model", str(tiny_model_dir)],
                           capture_output=True, text=True, check=True).stdout
    assert "score" in human and "(estimated)" in human and "exemplars" in human
    assert f"frames read  0-{direct.video.frame_count - 1} (0.00-" in human


def test_cli_reports_a_bad_video_in_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("these are my notes, not a video\n")
    completed = subprocess.run([sys.executable, "-m", "aqa.cli", "score", str(bogus), "--model", str(tiny_model_dir)],
                               capture_output=True, text=True, check=False)
    assert completed.returncode == 1
    assert completed.stderr.startswith("error: ") and "Traceback" not in completed.stderr
    assert "video" in completed.stderr
