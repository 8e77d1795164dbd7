"""What the pairwise trainers share: drawing (query, exemplar) pairs within groups, and keeping the
epoch that validates best.

CoRe compares a dive with exemplars of the same difficulty on MTL-AQA; we pair within a *pairing key*
(the action class when another training dive shares it, else the difficulty, else one catch-all group).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn


def pairing_keys(action_classes: Sequence[str | None], difficulties: Sequence[float | None]) -> list[str]:
    """Each dive's pairing key: its action class when another training dive shares it, else its
    difficulty when another dive shares that, else one catch-all group."""
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
    """Each epoch, every dive that has a partner is a query once, with a random other member of its group."""

    def __init__(self, group_keys: Sequence[str | None], seed: int) -> None:
        self.groups = [g for g in pair_groups(group_keys) if len(g) > 1]
        if not self.groups:
            raise ValueError("pairwise training needs at least one group with two or more dives")
        self._group_of = {int(i): g for g in self.groups for i in g}
        self.queries = np.array(sorted(self._group_of))
        self.rng = np.random.default_rng(seed)

    def deltas(self, labels: np.ndarray) -> np.ndarray:
        return within_group_deltas(labels, self.groups)

    def partner(self, index: int) -> int:
        group = self._group_of[index]
        while True:
            j = int(group[self.rng.integers(len(group))])
            if j != index:
                return j

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
