"""Choosing the M exemplars a query is compared with.

CoRe on MTL-AQA compares a dive with exemplars of the same difficulty degree (chosen at random). We
rank candidates in tiers and fill M places tier by tier:

1. same action class and same difficulty,
2. same difficulty,
3. same action class,
4. any exemplar,

ordering each tier by cosine distance of the clip-averaged features (``strategy="nearest"``), or
shuffling it with a seeded generator (``strategy="random"``, the reference protocol). A tier whose key
is unknown for the query (no difficulty given, say) is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from exemplar_bank.bank import ExemplarBank

Strategy = Literal["nearest", "random"]

TIER_REASONS = (
    "same action class and difficulty",
    "same difficulty",
    "same action class",
    "nearest in feature space",
)


@dataclass(frozen=True)
class Selection:
    """Indices into the bank, with the tier that admitted each one."""

    indices: list[int]
    reasons: list[str]


def select_exemplars(
    bank: ExemplarBank,
    query_feature: torch.Tensor,
    m: int,
    difficulty: float | None = None,
    action_class: str | None = None,
    strategy: Strategy = "nearest",
    seed: int = 0,
    exclude_ids: frozenset[str] = frozenset(),
) -> Selection:
    """Pick up to ``m`` exemplars for a query with clip-averaged feature ``query_feature`` (D,)."""
    if len(bank) == 0:
        raise ValueError("the exemplar bank is empty")
    difficulties = np.array([e.difficulty if e.difficulty is not None else np.nan for e in bank.exemplars])
    classes = np.array([e.action_class for e in bank.exemplars], dtype=object)
    usable = np.array([e.id not in exclude_ids for e in bank.exemplars])
    same_difficulty = (
        np.isclose(difficulties, difficulty, atol=1e-6) if difficulty is not None else np.zeros(len(bank), bool)
    )
    same_class = classes == action_class if action_class is not None else np.zeros(len(bank), bool)
    tiers = [same_class & same_difficulty, same_difficulty, same_class, np.ones(len(bank), bool)]

    order = _candidate_order(bank, query_feature, strategy, seed)
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


def _candidate_order(bank: ExemplarBank, query: torch.Tensor, strategy: Strategy, seed: int) -> np.ndarray:
    if strategy == "random":
        return np.random.default_rng(seed).permutation(len(bank))
    if strategy != "nearest":
        raise ValueError(f"unknown selection strategy {strategy!r}")
    pooled = torch.nn.functional.normalize(bank.pooled_features, dim=1)
    q = torch.nn.functional.normalize(query.float().reshape(1, -1), dim=1)
    distance = 1.0 - (pooled @ q.T).squeeze(1)
    return torch.argsort(distance, stable=True).numpy()
