"""TPT and PCLN model directories from ``train_model(head=...)`` (tiny profiles), and scarce labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aqa.cli import main
from exemplar_bank.bank import ExemplarBank
from models.gart import GroupBoundaries
from models.model_dir import BANK_DIR, HEAD_WEIGHTS, ModelConfig
from models.pcln import PCLN
from models.scorer import QueryLabels, Scorer
from models.tpt import TPTHead
from training.datasets.folder_csv import load_folder_csv
from training.datasets.records import DiveRecord
from training.pipeline import keep_labelled, train_model
from training.profiles import PROFILES, check_head
from training.train_tpt import TPTTrainConfig, ranking_margin, train_tpt_head
from video.decode import decode_video


def _first_dive(dataset: Path) -> DiveRecord:
    return load_folder_csv(dataset / "labels.csv")[0]


def test_tpt_model_scores_a_video_with_part_spans_in_seconds(tpt_model_dir: Path, tiny_dataset: Path) -> None:
    scorer = Scorer.from_dir(tpt_model_dir)
    assert scorer.config.head == "tpt" and scorer.bank.clip_features.shape[1] == 16
    record = _first_dive(tiny_dataset)
    result = scorer.score(record.video, QueryLabels(difficulty=record.difficulty), exclude_ids=frozenset({record.key}))
    assert len(result.votes) == scorer.config.voting.num_exemplars and not result.exemplar_free
    assert result.score == pytest.approx(np.mean([v.vote for v in result.votes]) * record.difficulty, abs=1e-3)

    # clip k covers sampled frames starts[k] .. starts[k] + length - 1; the synthetic videos are 25 fps
    decoded = decode_video(record.video, scorer.preprocessing)
    clips = scorer.config.clip_protocol
    parts = result.evidence["parts"]
    assert len(parts) == scorer.head.head.num_parts
    for part in parts:
        first, last = part["span_clips"]
        assert 0 <= first <= last < clips.num_clips
        expected = [decoded.frame_indices[clips.starts[first]] / 25,
                    decoded.frame_indices[clips.starts[last] + clips.length - 1] / 25]
        assert part["span_seconds"] == pytest.approx(expected, abs=1e-3)
        mid_seconds = [(decoded.frame_indices[s] + decoded.frame_indices[s + clips.length - 1]) / 2 / 25
                       for s in clips.starts]
        centre = np.interp(part["centre_clip"], np.arange(clips.num_clips), mid_seconds)
        assert part["centre_seconds"] == pytest.approx(centre, abs=1e-3)


def test_tpt_model_directory_records_its_training(tpt_model_dir: Path) -> None:
    config = ModelConfig.load(tpt_model_dir)
    assert len(config.head_config["boundaries"]) == config.head_config["num_groups"] == 16
    card = json.loads((tpt_model_dir / "model_card.json").read_text())
    assert card["training"]["head"] == "tpt" and card["summary"].startswith("TPT head")
    # 16 clips, 5 parts: the reference margin 2 x 16 / 20 = 1.6 is under the cap 15 / 6
    assert card["training"]["head_training"]["ranking_margin_used"] == pytest.approx(1.6)
    assert card["training"]["head_training"]["ranking_margin"] == 2.0  # the setting, at 20 clips
    assert card["evaluations"]["test split"]["execution"]["spearman"] is not None


def test_ranking_margin_scales_with_clips_and_stays_feasible() -> None:
    assert ranking_margin(20, 5) == pytest.approx(2.0)  # the reference setting
    assert ranking_margin(10, 5) == pytest.approx(1.0)
    assert ranking_margin(2, 5) == pytest.approx(1 / 6)  # (T - 1) / (K + 1): 2 x 2 / 20 = 0.2 cannot be met
    # TPT's current README: 3.2 with 5 parts at 20 clips, uncapped although 19 / 6 = 3.17 is the most all
    # six hinges can meet at once
    assert ranking_margin(20, 5, 3.2, cap=False) == pytest.approx(3.2)
    assert ranking_margin(20, 5, 3.2) == pytest.approx(19 / 6)


def test_tpt_trainer_keeps_the_epoch_validation_likes_best() -> None:
    torch.manual_seed(0)
    features, labels = torch.randn(12, 6, 8), torch.linspace(10, 20, 12)
    scripted = iter([0.1, 0.7, 0.3])
    seen: list[dict[str, torch.Tensor]] = []

    def validate(head: TPTHead, boundaries: GroupBoundaries) -> float:
        assert not head.training and boundaries.num_groups == 16
        seen.append({k: v.clone() for k, v in head.state_dict().items()})
        return next(scripted)

    config = TPTTrainConfig(d_model=16, ffn_dim=16, head_hidden=8, self_attention_heads=2, epochs=6, batch_size=4,
                            eval_every=2)
    result = train_tpt_head(features, labels, ["all"] * 12, 30.0, config, validate=validate, progress=False)
    assert [r.get("validation") for r in result.history] == [None, 0.1, None, 0.7, None, 0.3]
    assert result.best_epoch == 4
    for key, value in result.head.state_dict().items():
        torch.testing.assert_close(value, seen[1][key])
    assert all(np.isfinite(r["loss_rank"]) and r["loss_sparsity"] > 0 for r in result.history)


def test_pcln_model_is_exemplar_free(pcln_model_dir: Path, tiny_dataset: Path) -> None:
    scorer = Scorer.from_dir(pcln_model_dir)
    record = _first_dive(tiny_dataset)
    result = scorer.score(record.video, QueryLabels(difficulty=record.difficulty))
    assert result.exemplar_free and result.votes == [] and result.evidence == {"exemplar_free": True}

    # the score is PCLN's basic regression on the query's clip sequence, times the difficulty
    config = ModelConfig.load(pcln_model_dir)
    model = PCLN(**config.head_config)
    model.load_state_dict(load_file(str(pcln_model_dir / HEAD_WEIGHTS)), strict=True)
    features = scorer.extract_features(decode_video(record.video, scorer.preprocessing))
    with torch.no_grad():
        label = model.eval().regress(model.encode_features(features.T[None]))
    assert result.score == pytest.approx(float(label) * record.difficulty, rel=1e-5)

    # the bank is still written (difficulty estimation uses it): the training and validation dives
    card = json.loads((pcln_model_dir / "model_card.json").read_text())
    assert len(ExemplarBank.load(pcln_model_dir / BANK_DIR)) == card["data"]["train"] + card["data"]["validation"]
    assert scorer.score(record.video).difficulty_source == "estimated"


def test_pcln_needs_sixteen_clips(tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="tiny-tpt"):
        check_head("pcln", PROFILES["tiny"])
    code = main(["train", str(tiny_dataset), "--out", str(tmp_path / "m"), "--profile", "tiny", "--head", "pcln"])
    assert code == 1 and "at least 16 clips" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_keep_labelled_is_stratified_and_seeded() -> None:
    records = [DiveRecord(key=f"d{i:02d}", final_score=float(i), action_class="A" if i < 12 else "B")
               for i in range(20)]
    kept = keep_labelled(records, 0.25, seed=5)
    assert len(kept) == 5  # 20 - round(20 x 0.75)
    assert sorted(r.action_class for r in kept) == ["A", "A", "A", "B", "B"]  # 12 x 0.25 and 8 x 0.25
    assert kept == keep_labelled(records, 0.25, seed=5)
    assert keep_labelled(records, 1.0, seed=5) == records
    with pytest.raises(ValueError, match="label_fraction"):
        keep_labelled(records, 0.0, seed=5)


def test_label_fraction_trains_and_banks_only_labelled_dives(tiny_dataset: Path, tiny_model_dir: Path,
                                                            head_cache_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "half"
    train_model(tiny_dataset, out, PROFILES["tiny"], cache_dir=head_cache_dir, progress=False, label_fraction=0.5)
    full = json.loads((tiny_model_dir / "model_card.json").read_text())["data"]
    half = json.loads((out / "model_card.json").read_text())["data"]
    assert half["label_fraction"] == 0.5
    assert half["train"] == full["train"] - round(full["train"] * 0.5)
    assert (half["validation"], half["test"]) == (full["validation"], full["test"])

    bank_ids = {e.id for e in ExemplarBank.load(out / BANK_DIR).exemplars}
    full_bank_ids = {e.id for e in ExemplarBank.load(tiny_model_dir / BANK_DIR).exemplars}
    assert len(bank_ids) == half["train"] + half["validation"] == half["bank_exemplars"]
    assert bank_ids < full_bank_ids  # a subset of the same training + validation dives
    # the test split is the same dives as without the option
    def test_keys(model: Path) -> set[str]:
        return {row["key"] for row in json.loads((model / "report" / "evaluation.json").read_text())["predictions"]}
    assert test_keys(out) == test_keys(tiny_model_dir)
