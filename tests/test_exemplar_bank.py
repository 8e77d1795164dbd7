"""The exemplar bank's on-disk format, its fingerprint guard and exemplar selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from exemplar_bank.bank import BankError, BankMismatchError, Exemplar, ExemplarBank
from exemplar_bank.selection import select_exemplars


def make_bank(rows: list[tuple[str, float, float | None, str | None]], features: torch.Tensor) -> ExemplarBank:
    exemplars = [Exemplar(id=i, final_score=s, difficulty=d, action_class=c) for i, s, d, c in rows]
    return ExemplarBank(exemplars=exemplars, clip_features=features, fingerprint="abc123")


def test_round_trip_keeps_metadata_and_features(tmp_path: Path) -> None:
    features = torch.randn(3, 4, 8)
    bank = ExemplarBank(
        exemplars=[Exemplar(id="a", final_score=80.5, difficulty=3.5, action_class="107B",
                            judge_scores=[8.0, 8.5, 7.5, 8.0, 8.0, 7.5, 8.5], video_sha256="f" * 64),
                   Exemplar(id="b", final_score=40.0), Exemplar(id="c", final_score=60.0, difficulty=2.0)],
        clip_features=features, fingerprint="abc123",
    )
    bank.save(tmp_path / "bank")
    loaded = ExemplarBank.load(tmp_path / "bank", expected_fingerprint="abc123")
    assert loaded.exemplars == bank.exemplars
    # stored as float16: equal to the float16 rounding of the input
    assert torch.equal(loaded.clip_features, features.half().float())
    manifest = json.loads((tmp_path / "bank" / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["num_clips"] == 4 and manifest["feature_dim"] == 8
    rows = (tmp_path / "bank" / "exemplars.jsonl").read_text().splitlines()
    assert [json.loads(r)["id"] for r in rows] == ["a", "b", "c"]


def test_bank_made_by_another_model_is_refused(tmp_path: Path) -> None:
    make_bank([("a", 50.0, 2.0, None)], torch.zeros(1, 2, 4)).save(tmp_path / "bank")
    with pytest.raises(BankMismatchError, match="made by another model.*aqa bank build"):
        ExemplarBank.load(tmp_path / "bank", expected_fingerprint="other")


def test_broken_banks_give_reasons(tmp_path: Path) -> None:
    with pytest.raises(BankError, match="missing manifest.json"):
        ExemplarBank.load(tmp_path)
    make_bank([("a", 50.0, 2.0, None)], torch.zeros(1, 2, 4)).save(tmp_path / "bank")
    manifest = tmp_path / "bank" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(BankError, match="format version 99"):
        ExemplarBank.load(tmp_path / "bank")
    with pytest.raises(BankError, match="2 metadata rows but 1 feature rows"):
        make_bank([("a", 1.0, None, None), ("b", 2.0, None, None)], torch.zeros(1, 2, 4))
    with pytest.raises(BankError, match="unique"):
        make_bank([("a", 1.0, None, None), ("a", 2.0, None, None)], torch.zeros(2, 2, 4))


def _one_hot_features(n: int, dim: int = 8) -> torch.Tensor:
    """Exemplar k's pooled feature points along axis k, so nearness is known by construction."""
    return torch.eye(dim)[:n].unsqueeze(1).repeat(1, 2, 1)


def test_selection_fills_tiers_in_order_and_ranks_by_nearness() -> None:
    rows = [
        ("same-both-far", 60.0, 3.0, "107B"),
        ("same-difficulty", 70.0, 3.0, "205B"),
        ("same-class", 50.0, 2.0, "107B"),
        ("other", 40.0, 1.6, "101A"),
        ("same-both-near", 65.0, 3.0, "107B"),
    ]
    bank = make_bank(rows, _one_hot_features(5))
    query = torch.eye(8)[4] + 0.1 * torch.eye(8)[0]  # nearest to exemplar 4, then 0
    chosen = select_exemplars(bank, query, m=5, difficulty=3.0, action_class="107B")
    assert [bank.exemplars[i].id for i in chosen.indices] == [
        "same-both-near", "same-both-far", "same-difficulty", "same-class", "other"]
    assert chosen.reasons == ["same action class and difficulty"] * 2 + [
        "same difficulty", "same action class", "nearest in feature space"]


def test_selection_without_labels_is_nearest_first_and_respects_m_and_exclusions() -> None:
    bank = make_bank([(f"e{i}", 50.0 + i, 2.0, None) for i in range(5)], _one_hot_features(5))
    query = torch.eye(8)[3] + 0.5 * torch.eye(8)[1]
    chosen = select_exemplars(bank, query, m=2, exclude_ids=frozenset({"e3"}))
    assert [bank.exemplars[i].id for i in chosen.indices] == ["e1", "e0"]
    assert chosen.reasons == ["nearest in feature space"] * 2


def test_random_strategy_is_seeded_and_keeps_tiers() -> None:
    rows = [(f"d3-{i}", 60.0, 3.0, None) for i in range(6)] + [(f"d2-{i}", 60.0, 2.0, None) for i in range(6)]
    bank = make_bank(rows, torch.randn(12, 2, 8))
    first = select_exemplars(bank, torch.randn(8), m=4, difficulty=3.0, strategy="random", seed=5)
    again = select_exemplars(bank, torch.randn(8), m=4, difficulty=3.0, strategy="random", seed=5)
    other = select_exemplars(bank, torch.randn(8), m=4, difficulty=3.0, strategy="random", seed=6)
    assert first == again
    assert first.indices != other.indices
    assert all(bank.exemplars[i].difficulty == 3.0 for i in first.indices)
