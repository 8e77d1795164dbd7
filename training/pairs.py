"""What the pairwise trainers share: drawing (query, exemplar) pairs within groups, and keeping the
epoch that validates best.

Pairs are drawn within a *pairing key*, by one of these rules:

- ``"difficulty"``: the difficulty degree, as CoRe and TPT pair MTL-AQA dives (CoRe
  ``datasets/MTLPair.py`` with ``usingDD: True``, ``dive_number_choosing: False``; TPT
  ``dataloader_pair_MLT.py``, ``contrastive_key = 'difficulty'``); dives without one share a group.
- ``"action_class"``: the action class (dive number; CoRe's ``dive_number_choosing``, TSA's rule).
- ``"class_then_difficulty"`` (this project's default): the action class when another training dive shares
  it, else the difficulty when another dive shares that, else one catch-all group.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

PairingRule = Literal["class_then_difficulty", "difficulty", "action_class"]
PAIRING_RULES: tuple[str, ...] = ("class_then_difficulty", "difficulty", "action_class")


def pairing_keys(action_classes: Sequence[str | None], difficulties: Sequence[float | None],
                 rule: PairingRule = "class_then_difficulty") -> list[str]:
    """Each dive's pairing key under ``rule`` (module docstring)."""
    if rule == "difficulty":
        return [f"difficulty:{d}" if d is not None else "all" for d in difficulties]
    if rule == "action_class":
        return [f"class:{c}" if c is not None else "all" for c in action_classes]
    if rule != "class_then_difficulty":
        raise ValueError(f"unknown pairing rule {rule!r}; choose from {', '.join(PAIRING_RULES)}")
    class_counts = Counter(action_classes)
    difficulty_counts = Counter(difficulties)
    keys = []
    for cls, difficulty in zip(action_classes, difficulties):
        if cls is not None and class_counts[cls] > 1:
            keys.append(f"class:{cls}")
        elif difficulty is not None and difficulty_counts[difficulty] > 1:
            keys.append(f"difficulty:{difficulty}")
        else:
            keys.append("all")
    return keys


def pair_groups(group_keys: Sequence[str | None]) -> list[np.ndarray]:
    """Indices of items sharing a pairing key; items without a key form one group together."""
    keys = np.asarray([k if k is not None else "" for k in group_keys], dtype=object)
    return [np.flatnonzero(keys == k) for k in sorted(set(keys))]


def within_group_deltas(labels: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """|s_i - s_j| for all pairs i < j of each group (CoRe's delta list)."""
    deltas = [np.abs(labels[g][:, None] - labels[g][None, :])[np.triu_indices(len(g), 1)] for g in groups]
    return np.concatenate(deltas) if deltas else np.zeros(0)


class PairSampler:
    """Each epoch, every dive that has a partner is a query once, with a random other member of its group.

    ``pair_singletons``: a dive alone in its group is a query too, paired with itself (relative score 0),
    as the reference loaders do (CoRe ``datasets/MTLPair.py``: the query is removed from its difficulty's list
    only ``if len(file_list) > 1``); otherwise such dives are left out of pair training.
    """

    def __init__(self, group_keys: Sequence[str | None], seed: int, pair_singletons: bool = False) -> None:
        groups = pair_groups(group_keys)
        self.groups = [g for g in groups if len(g) > 1]
        if not self.groups:
            raise ValueError("pairwise training needs at least one group with two or more dives")
        paired = groups if pair_singletons else self.groups
        self._group_of = {int(i): g for g in paired for i in g}
        self.queries = np.array(sorted(self._group_of))
        self.rng = np.random.default_rng(seed)

    def deltas(self, labels: np.ndarray) -> np.ndarray:
        return within_group_deltas(labels, self.groups)

    def partner(self, index: int, rng: np.random.Generator | None = None) -> int:
        """A random other member of ``index``'s group (itself when it is alone)."""
        rng = rng or self.rng
        group = self._group_of[index]
        if len(group) == 1:
            return index
        while True:
            j = int(group[rng.integers(len(group))])
            if j != index:
                return j

    def epoch_pairs(self, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One epoch's (query, exemplar) indices: a fresh permutation of the queries, each with a partner."""
        rng = rng or self.rng
        order = rng.permutation(self.queries)
        return order, np.array([self.partner(int(i), rng) for i in order], dtype=np.int64)

    def epoch(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(query indices, exemplar indices) batches over a fresh permutation of the queries."""
        order = self.rng.permutation(self.queries)
        for start in range(0, len(order), batch_size):
            query = order[start : start + batch_size]
            exemplar = np.array([self.partner(int(i)) for i in query])
            yield torch.as_tensor(query), torch.as_tensor(exemplar)


class BestEpoch:
    """Keeps a copy of a module's weights at the epoch with the highest validation score."""

    def __init__(self) -> None:
        self.score = -np.inf
        self.epoch = 0
        self._state: dict[str, torch.Tensor] | None = None

    def update(self, module: nn.Module, score: float, epoch: int) -> None:
        if score > self.score:
            self.score, self.epoch = score, epoch
            self._state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def restore(self, module: nn.Module, last_epoch: int) -> int:
        """Load the best weights (if any epoch was validated) and return the epoch they are from."""
        if self._state is None:
            return last_epoch
        module.load_state_dict(self._state)
        return self.epoch
