"""The vectorised exemplar selection chooses what the per-row loop it replaced chose, on the demo's bank of
9,000 and on banks built to have ties, missing labels and exclusions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exemplar_bank.bank import Exemplar, ExemplarBank
from exemplar_bank.selection import TIER_REASONS, ExemplarIndex, Selection, select_exemplars
from models.pretrained import DEMO_MODEL_DIR


def loop_selection(bank: ExemplarBank, query: torch.Tensor, m: int, difficulty: float | None = None,
                   action_class: str | None = None, strategy: str = "nearest", seed: int = 0,
                   exclude_ids: frozenset[str] = frozenset()) -> Selection:
    """The selection as it was before the index: a stable sort of the whole bank, walked row by row per tier."""
    difficulties = np.array([e.difficulty if e.difficulty is not None else np.nan for e in bank.exemplars])
    classes = np.array([e.action_class for e in bank.exemplars], dtype=object)
    usable = np.array([e.id not in exclude_ids for e in bank.exemplars])
    same_difficulty = (np.isclose(difficulties, difficulty, atol=1e-6) if difficulty is not None
                       else np.zeros(len(bank), bool))
    same_class = classes == action_class if action_class is not None else np.zeros(len(bank), bool)
    tiers = [same_class & same_difficulty, same_difficulty, same_class, np.ones(len(bank), bool)]
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(len(bank))
    else:
        pooled = torch.nn.functional.normalize(bank.pooled_features, dim=1)
        q = torch.nn.functional.normalize(query.float().reshape(1, -1), dim=1)
        order = torch.argsort(1.0 - (pooled @ q.T).squeeze(1), stable=True).numpy()
    chosen: list[int] = []
    reasons: list[str] = []
    taken = np.zeros(len(bank), bool)
    for tier, reason in zip(tiers, TIER_REASONS):
        for idx in order:
            if len(chosen) == m:
                return Selection(chosen, reasons)
            if tier[idx] and usable[idx] and not taken[idx]:
                chosen.append(int(idx))
                reasons.append(reason)
                taken[idx] = True
    return Selection(chosen, reasons)


@pytest.fixture(scope="module")
def demo_bank() -> ExemplarBank:
    return ExemplarBank.load(DEMO_MODEL_DIR / "bank")


def test_the_demo_bank_gets_the_same_exemplars_for_every_kind_of_query(demo_bank: ExemplarBank) -> None:
    index = ExemplarIndex(demo_bank)
    rng = np.random.default_rng(0)
    classes = sorted({e.action_class for e in demo_bank.exemplars if e.action_class})
    difficulties = sorted({e.difficulty for e in demo_bank.exemplars if e.difficulty})
    assert len(demo_bank) == 9000
    for k in range(60):
        # Queries near a bank row (as real ones are) and random ones; labels given, unknown or unmatched.
        row = int(rng.integers(len(demo_bank)))
        query = demo_bank.pooled_features[row] + 0.05 * torch.from_numpy(rng.standard_normal(256)).float()
        if k % 3 == 0:
            query = torch.from_numpy(rng.standard_normal(256)).float()
        difficulty = [None, float(rng.choice(difficulties)), 9.9][k % 3]
        action_class = [None, str(rng.choice(classes)), "no-such-dive"][(k // 3) % 3]
        exclude = frozenset({demo_bank.exemplars[row].id}) if k % 2 else frozenset()
        m = [10, 1, 40][k % 3]
        for strategy in ("nearest", "random"):
            expected = loop_selection(demo_bank, query, m, difficulty, action_class, strategy, k, exclude)
            got = index.select(index.distances(query), m, difficulty, action_class, strategy, k, exclude)
            assert got == expected, (k, strategy)


def test_ties_and_missing_labels_break_as_the_stable_sort_did() -> None:
    rng = np.random.default_rng(1)
    # Few distinct features (many exact ties in distance), labels sometimes missing, near-equal difficulties.
    distinct = torch.from_numpy(rng.standard_normal((4, 8))).float()
    features = distinct[rng.integers(0, 4, 300)].unsqueeze(1).repeat(1, 2, 1)
    exemplars = [Exemplar(id=f"e{i}", final_score=50.0,
                          difficulty=[None, 2.0, 3.0, 3.0 + 1e-7, 3.2][i % 5],
                          action_class=[None, "107B", "205B"][i % 3]) for i in range(300)]
    bank = ExemplarBank(exemplars=exemplars, clip_features=features, fingerprint="ties")
    for k in range(40):
        query = distinct[k % 4] if k % 2 else torch.from_numpy(rng.standard_normal(8)).float()
        exclude = frozenset(f"e{j}" for j in rng.integers(0, 300, 20))
        for difficulty in (None, 3.0, 2.0):
            for action_class in (None, "107B"):
                expected = loop_selection(bank, query, 12, difficulty, action_class, exclude_ids=exclude)
                assert select_exemplars(bank, query, 12, difficulty, action_class, exclude_ids=exclude) == expected


def test_a_batch_of_queries_gets_every_distance_from_one_product(demo_bank: ExemplarBank) -> None:
    index = ExemplarIndex(demo_bank)
    queries = demo_bank.pooled_features[:5] + 0.01
    batch = index.distances(queries)
    assert batch.shape == (5, 9000)
    for row in range(5):
        np.testing.assert_allclose(batch[row], index.distances(queries[row]), atol=1e-6)


def test_an_empty_bank_is_refused_when_asked_to_select() -> None:
    bank = ExemplarBank(exemplars=[], clip_features=torch.zeros(0, 1, 4), fingerprint="empty")
    with pytest.raises(ValueError, match="empty"):
        select_exemplars(bank, torch.ones(4), 3)
