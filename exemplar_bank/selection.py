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

:class:`ExemplarIndex` is the bank laid out for this, once per loaded bank: its unit-normalised features
(one matrix product gives every distance, for one query or a batch) and the rows of each difficulty,
class and (class, difficulty). A query then sorts only the few rows a tier can still place, not the bank.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from exemplar_bank.bank import ExemplarBank

Strategy = Literal["nearest", "random"]

TIER_REASONS = (
    "same action class and difficulty",
    "same difficulty",
    "same action class",
    "nearest in feature space",
)
DIFFICULTY_ATOL = 1e-6
"""Difficulties match as ``np.isclose(bank, query, atol=1e-6)`` (and numpy's default rtol, 1e-5)."""
TIER_CACHE_SIZE = 1024
"""Distinct (difficulty, class) query labels whose tiers an index keeps (a meet has a few dozen)."""


@dataclass(frozen=True)
class Selection:
    """Indices into the bank, with the tier that admitted each one."""

    indices: list[int]
    reasons: list[str]


class ExemplarIndex:
    """A bank's selection index: unit-normalised pooled features and the rows of each label, built once."""

    def __init__(self, bank: ExemplarBank) -> None:
        self.size = len(bank)
        self.normalized = F.normalize(bank.pooled_features, dim=1)
        self.row_of_id = {e.id: i for i, e in enumerate(bank.exemplars)}
        by_difficulty: dict[float, list[int]] = defaultdict(list)
        by_class: dict[str, list[int]] = defaultdict(list)
        by_both: dict[tuple[str, float], list[int]] = defaultdict(list)
        for row, exemplar in enumerate(bank.exemplars):
            known = exemplar.difficulty is not None and not np.isnan(exemplar.difficulty)
            if known:
                by_difficulty[float(exemplar.difficulty)].append(row)
            if exemplar.action_class is not None:
                by_class[exemplar.action_class].append(row)
                if known:
                    by_both[(exemplar.action_class, float(exemplar.difficulty))].append(row)
        self._difficulty_values = np.array(sorted(by_difficulty), dtype=float)
        self._by_difficulty = {value: np.array(rows) for value, rows in by_difficulty.items()}
        self._by_class = {name: np.array(rows) for name, rows in by_class.items()}
        self._by_both = {key: np.array(rows) for key, rows in by_both.items()}
        self._all_rows = np.arange(self.size)
        self._tiers = functools.lru_cache(maxsize=TIER_CACHE_SIZE)(self._find_tiers)

    def distances(self, queries: torch.Tensor) -> np.ndarray:
        """Cosine distances 1 - <f_i, q> / (|f_i| |q|) of clip-averaged features: (D,) -> (N,), or a batch
        (B, D) -> (B, N), from one matrix product."""
        batch = queries.float().reshape(-1, self.normalized.shape[1])
        distance = 1.0 - self.normalized @ F.normalize(batch, dim=1).T
        return distance.T.numpy() if queries.dim() == 2 else distance.squeeze(1).numpy()

    def select(
        self,
        distances: np.ndarray,
        m: int,
        difficulty: float | None = None,
        action_class: str | None = None,
        strategy: Strategy = "nearest",
        seed: int = 0,
        exclude_ids: frozenset[str] = frozenset(),
    ) -> Selection:
        """Up to ``m`` exemplars for a query whose :meth:`distances` to the bank are ``distances`` (N,)."""
        if self.size == 0:
            raise ValueError("the exemplar bank is empty")
        if strategy == "random":
            rank = np.empty(self.size, dtype=np.int64)
            rank[np.random.default_rng(seed).permutation(self.size)] = self._all_rows
        elif strategy == "nearest":
            rank = None
        else:
            raise ValueError(f"unknown selection strategy {strategy!r}")
        blocked = np.zeros(self.size, dtype=bool)  # taken, or excluded by the caller
        blocked[[self.row_of_id[i] for i in exclude_ids if i in self.row_of_id]] = True
        chosen: list[int] = []
        reasons: list[str] = []
        for rows, reason in zip(self._tiers(difficulty, action_class), TIER_REASONS):
            wanted = m - len(chosen)
            if wanted <= 0:
                break
            if rows is None:
                continue
            open_rows = rows[~blocked[rows]]
            best = _first_by_rank(open_rows, rank, wanted) if rank is not None else _nearest(open_rows, distances, wanted)
            blocked[best] = True
            chosen.extend(int(row) for row in best)
            reasons.extend([reason] * len(best))
        return Selection(chosen, reasons)

    def _find_tiers(self, difficulty: float | None, action_class: str | None) -> list[np.ndarray | None]:
        """The candidate rows of each tier, ascending (None: the tier's key is unknown for the query); kept per
        (difficulty, class) by ``_tiers``, so a query with labels seen before only looks them up."""
        values = [] if difficulty is None else self._difficulty_values[
            np.isclose(self._difficulty_values, difficulty, atol=DIFFICULTY_ATOL)]
        empty = np.empty(0, dtype=np.int64)
        same_difficulty = _union([self._by_difficulty[v] for v in values]) if difficulty is not None else None
        same_class = self._by_class.get(action_class, empty) if action_class is not None else None
        both = None
        if difficulty is not None and action_class is not None:
            both = _union([self._by_both.get((action_class, v), empty) for v in values])
        return [both, same_difficulty, same_class, self._all_rows]


def _union(groups: list[np.ndarray]) -> np.ndarray:
    if len(groups) == 1:
        return groups[0]
    return np.unique(np.concatenate(groups)) if groups else np.empty(0, dtype=np.int64)


def _nearest(rows: np.ndarray, distances: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` rows of least distance, ties broken by row (a stable sort of the whole bank, restricted)."""
    if len(rows) > k:
        candidate = distances[rows]
        kth = candidate[np.argpartition(candidate, k - 1)[:k]].max()
        rows = rows[candidate <= kth]  # every row tied with the k-th stays in the running
    return rows[np.lexsort((rows, distances[rows]))][:k]


def _first_by_rank(rows: np.ndarray, rank: np.ndarray, k: int) -> np.ndarray:
    return rows[np.argsort(rank[rows], kind="stable")][:k]


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
    """Pick up to ``m`` exemplars for a query with clip-averaged feature ``query_feature`` (D,).

    Builds the bank's :class:`ExemplarIndex` for this one call; hold an index to select many times.
    """
    index = ExemplarIndex(bank)
    return index.select(index.distances(query_feature), m, difficulty, action_class, strategy, seed, exclude_ids)
