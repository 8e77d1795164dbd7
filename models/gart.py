"""Group-aware regression tree (GART) of CoRe: group boundaries, labels, losses and the inference rule.

CoRe (Yu et al., "Group-aware Contrastive Regression for Action Quality Assessment", ICCV 2021,
Sec. 3.3) splits the range of the relative score ``delta = s_query - s_exemplar`` into ``R`` ordered,
non-overlapping groups ``G^r = [min^r, max^r]``. A binary tree classifies a pair into a group (leaf)
and a per-leaf regressor gives the position inside the group:

    delta_hat = sigma_hat_{r*} * (max^{r*} - min^{r*}) + min^{r*},   r* = argmax_r P_r     (paper Eq. 5)

The network lives in ``models/core.py``; this module holds everything that depends on the data-derived
boundaries. Group ``r`` is leaf ``r`` of the tree (ascending delta, left to right).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

LeafActivation = Literal["sigmoid", "identity"]
ClassificationLoss = Literal["bce", "nll"]
Reduction = Literal["pair", "leaf"]
LEAF_ACTIVATIONS: tuple[str, ...] = ("sigmoid", "identity")
CLASSIFICATION_LOSSES: tuple[str, ...] = ("bce", "nll")
REDUCTIONS: tuple[str, ...] = ("pair", "leaf")


def activate_leaves(leaf_values: torch.Tensor, leaf_activation: LeafActivation) -> torch.Tensor:
    """Raw leaf regressor outputs -> in-group positions sigma_hat.

    ``"sigmoid"`` is the paper's leaf (sigma_hat in [0, 1]); ``"identity"`` is what the reference code
    does (raw value in loss and inference), needed to reproduce imported reference checkpoints.
    """
    if leaf_activation == "sigmoid":
        return torch.sigmoid(leaf_values)
    if leaf_activation == "identity":
        return leaf_values
    raise ValueError(f"leaf_activation must be one of {LEAF_ACTIVATIONS}, got {leaf_activation!r}")


@dataclass(frozen=True)
class GroupBoundaries:
    """Ordered, contiguous groups ``(min^r, max^r)`` of the relative score, ascending.

    Groups may be degenerate (``min == max``, e.g. when many training pairs tie). Serialise with
    :meth:`to_list` / :meth:`from_list` (plain ``[[min, max], ...]`` for JSON model configs).
    """

    groups: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("GroupBoundaries needs at least one group")
        for r, (low, high) in enumerate(self.groups):
            if not (math.isfinite(low) and math.isfinite(high)):
                raise ValueError(f"group {r} has a non-finite bound: ({low}, {high})")
            if low > high:
                raise ValueError(f"group {r} is reversed: min {low} > max {high}")
            if r > 0 and low != self.groups[r - 1][1]:
                raise ValueError(
                    f"groups must be contiguous and ascending: group {r} starts at {low} "
                    f"but group {r - 1} ends at {self.groups[r - 1][1]}"
                )

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    @classmethod
    def from_deltas(
        cls,
        deltas: np.ndarray | Sequence[float],
        num_groups: int,
        symmetric: bool = True,
        score_range: float | None = None,
    ) -> GroupBoundaries:
        """Quantile boundaries from the relative scores of the training pairs.

        With ``a`` the ascending values (``T`` of them), group ``r = 1..R`` is (seed notes / paper)::

            min^r = a[floor((T - 1) (r - 1) / R)],   max^r = a[floor((T - 1) r / R)]

        * ``symmetric=False``: the formula as written, on the signed deltas, ``R = num_groups``.
          ``score_range`` (if given) widens the outer bounds to ``-score_range`` and ``+score_range``.
        * ``symmetric=True`` (reference CoRe rule): the formula on the sorted ``|delta|`` with
          ``R = num_groups / 2``; the innermost lower bound becomes 0 and the outermost upper bound
          ``score_range`` (or the largest ``|delta|`` if not given); these positive groups are mirrored
          to the negative side. The reference feeds ``|delta|`` of every same-difficulty training pair
          and ``score_range`` = 30 (MTL-AQA execution scores) or 100 (AQA-7).

        Indices use exact integer floor; the reference's ``int((r / R) * (T - 1))`` gives the same
        index whenever ``R`` is a power of two.
        """
        values = np.asarray(deltas, dtype=np.float64).reshape(-1)
        if values.size == 0:
            raise ValueError("cannot build group boundaries from an empty delta list")
        if not np.all(np.isfinite(values)):
            raise ValueError("delta list contains NaN or infinite values")
        if num_groups < 1 or (symmetric and num_groups % 2):
            raise ValueError(f"num_groups must be >= 1 (and even when symmetric), got {num_groups}")
        if score_range is not None and not (math.isfinite(score_range) and score_range > 0):
            raise ValueError(f"score_range must be a positive finite number, got {score_range}")

        def quantile_groups(ordered: np.ndarray, count: int) -> list[list[float]]:
            last = ordered.size - 1
            edges = [float(ordered[(last * r) // count]) for r in range(count + 1)]
            return [[edges[r], edges[r + 1]] for r in range(count)]

        if symmetric:
            positive = quantile_groups(np.sort(np.abs(values)), num_groups // 2)
            positive[0][0] = 0.0
            if score_range is not None:
                positive[-1][1] = float(score_range)
            # 0.0 - x mirrors without producing -0.0 in the JSON of a bound at zero.
            negative = [[0.0 - high, 0.0 - low] for low, high in reversed(positive)]
            groups = negative + positive
        else:
            groups = quantile_groups(np.sort(values), num_groups)
            if score_range is not None:
                groups[0][0] = min(groups[0][0], -float(score_range))
                groups[-1][1] = max(groups[-1][1], float(score_range))
        return cls(tuple((low, high) for low, high in groups))

    def to_list(self) -> list[list[float]]:
        return [[low, high] for low, high in self.groups]

    @classmethod
    def from_list(cls, groups: Sequence[Sequence[float]]) -> GroupBoundaries:
        pairs = []
        for r, group in enumerate(groups):
            if len(group) != 2:
                raise ValueError(f"group {r} must be [min, max], got {list(group)}")
            pairs.append((float(group[0]), float(group[1])))
        return cls(tuple(pairs))

    def _bounds(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        bounds = torch.tensor(self.groups, dtype=torch.float64, device=device)
        return bounds[:, 0], bounds[:, 1]

    def assign(self, deltas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Relative scores (B,) -> group index (B,) int64 and regression target sigma (B,) in [0, 1].

        Membership follows the reference code: a non-negative delta belongs to the first group with
        ``min <= delta < max``, a negative one to the first with ``min < delta <= max`` (a bound shared
        by two groups belongs to the group nearer zero). Deltas outside ``[min^1, max^R]`` are clamped
        to it, i.e. they go to the outermost group with target 0 or 1; a delta equal to an outer bound
        (which the half-open rule would leave unassigned) goes to that outermost group too.

        Target (paper Eq. 3): ``sigma = (delta - min^r) / (max^r - min^r)``; for a degenerate group the
        reference uses ``delta - min^r``, which is 0 here because its members equal ``min^r``.
        """
        if deltas.dim() != 1:
            raise ValueError(f"deltas must have shape (B,), got {tuple(deltas.shape)}")
        values = deltas.detach().to(torch.float64)
        if not torch.isfinite(values).all():
            raise ValueError("deltas contain NaN or infinite values")
        low, high = self._bounds(deltas.device)
        values = values.clamp(low[0].item(), high[-1].item())[:, None]
        non_negative = values >= 0
        half_open = torch.where(
            non_negative, (low <= values) & (values < high), (low < values) & (values <= high)
        )
        closed = (low <= values) & (values <= high)
        # Fallback for outer bounds: the outermost closed group on the delta's side.
        last_closed = self.num_groups - 1 - closed.flip(1).int().argmax(1)
        first_closed = closed.int().argmax(1)
        fallback = torch.where(non_negative[:, 0], last_closed, first_closed)
        group_idx = torch.where(half_open.any(1), half_open.int().argmax(1), fallback)

        group_low, group_high = low[group_idx], high[group_idx]
        width = group_high - group_low
        offset = values[:, 0] - group_low
        target = torch.where(width > 0, offset / torch.where(width > 0, width, 1.0), offset)
        target_dtype = deltas.dtype if deltas.is_floating_point() else torch.float32
        return group_idx, target.to(target_dtype)

    def decode(self, group_idx: torch.Tensor, leaf_values: torch.Tensor) -> torch.Tensor:
        """Paper Eq. 5: ``delta = sigma_hat * (max - min) + min`` for each chosen group (B,).

        ``leaf_values`` (B,) are the activated in-group positions of the chosen leaves. A degenerate
        group decodes to ``min + sigma_hat`` as in the reference inference.
        """
        if group_idx.shape != leaf_values.shape or group_idx.dim() != 1:
            raise ValueError(
                f"group_idx and leaf_values must both have shape (B,), got "
                f"{tuple(group_idx.shape)} and {tuple(leaf_values.shape)}"
            )
        if group_idx.numel() and (group_idx.min() < 0 or group_idx.max() >= self.num_groups):
            raise ValueError(f"group index out of range [0, {self.num_groups})")
        low, high = self._bounds(leaf_values.device)
        group_low = low[group_idx].to(leaf_values.dtype)
        width = (high - low)[group_idx].to(leaf_values.dtype)
        return torch.where(width > 0, leaf_values * width, leaf_values) + group_low


def _log1mexp(log_p: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(log_p)) for log_p < 0, stable on both sides of log(1/2)."""
    log_p = log_p.clamp(max=-torch.finfo(log_p.dtype).eps)
    return torch.where(log_p > -math.log(2), torch.log(-torch.expm1(log_p)), torch.log1p(-torch.exp(log_p)))


def gart_loss(
    leaf_log_probs: torch.Tensor,
    leaf_values: torch.Tensor,
    group_idx: torch.Tensor,
    reg_target: torch.Tensor,
    classification: ClassificationLoss = "bce",
    leaf_activation: LeafActivation = "sigmoid",
    reduction: Reduction = "pair",
    directions: int = 1,
) -> dict[str, torch.Tensor]:
    """GART objective ``J = J_cls + J_reg`` (paper Eq. 4).

    * ``"bce"`` (paper): ``J_cls = -sum_r [l_r log P_r + (1 - l_r) log(1 - P_r)]`` over all leaves,
      with ``l`` the one-hot group label and ``P_r`` the leaf probability.
    * ``"nll"`` (reference code): ``J_cls = -log P_{r_true}``.
    * ``J_reg = (sigma_hat_{r_true} - sigma_{r_true})^2``, only on the true leaf.

    Reductions over the batch:

    * ``"pair"``: both terms averaged over the batch, every pair weighs the same.
    * ``"leaf"`` (the reference training step, CoRe ``tools/helper.py`` and TPT's train script): the batch is
      ``directions`` equal consecutive chunks (the (exemplar, query) and (query, exemplar) halves of a
      step); per chunk, ``J_cls`` is averaged over its pairs and ``J_reg`` is the sum over leaves of the mean
      squared error of the chunk's pairs in that leaf; the chunks' losses are added.

    Inputs: log-probs and raw leaf values (B, R), ``group_idx``/``reg_target`` (B,) from
    :meth:`GroupBoundaries.assign`. Returns ``{"cls", "reg", "total"}`` scalars.
    """
    if classification not in CLASSIFICATION_LOSSES:
        raise ValueError(f"classification must be one of {CLASSIFICATION_LOSSES}, got {classification!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if leaf_log_probs.dim() != 2 or leaf_values.shape != leaf_log_probs.shape:
        raise ValueError(
            f"leaf_log_probs and leaf_values must both be (B, R), got "
            f"{tuple(leaf_log_probs.shape)} and {tuple(leaf_values.shape)}"
        )
    batch, leaves = leaf_log_probs.shape
    if group_idx.shape != (batch,) or reg_target.shape != (batch,):
        raise ValueError(f"group_idx and reg_target must be ({batch},)")
    if directions < 1 or batch % directions:
        raise ValueError(f"a batch of {batch} pairs does not split into {directions} equal directions")

    true_log_prob = leaf_log_probs.gather(1, group_idx[:, None])[:, 0]
    if classification == "nll":
        per_pair_cls = -true_log_prob
    else:
        log_not = _log1mexp(leaf_log_probs)
        one_hot = F.one_hot(group_idx, leaves).bool()
        per_pair_cls = -torch.where(one_hot, leaf_log_probs, log_not).sum(1)
    sigma_hat = activate_leaves(leaf_values.gather(1, group_idx[:, None])[:, 0], leaf_activation)
    squared = (sigma_hat - reg_target.to(sigma_hat.dtype)).pow(2)
    if reduction == "pair":
        cls_loss, reg_loss = per_pair_cls.mean(), squared.mean()
    else:
        chunk = torch.arange(batch, device=group_idx.device) // (batch // directions)
        cls_loss = per_pair_cls.mean() * directions  # sum of the chunks' means (equal chunk sizes)
        cell = chunk * leaves + group_idx  # (direction, leaf) of every pair
        sums = squared.new_zeros(directions * leaves).index_add(0, cell, squared)
        counts = squared.new_zeros(directions * leaves).index_add(0, cell, torch.ones_like(squared))
        reg_loss = (sums / counts.clamp(min=1)).sum()
    return {"cls": cls_loss, "reg": reg_loss, "total": cls_loss + reg_loss}
