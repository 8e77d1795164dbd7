"""CoRe contrastive regression head (Yu et al., "Group-aware Contrastive Regression for Action Quality
Assessment", ICCV 2021).

The head scores a query video relative to an exemplar with a known label (paper Eq. 1-2)::

    f_pair = concat(f_exemplar, f_query, s_exemplar / eps)                 (2D + 1,)
    delta  = R(f_pair) ~ s_query - s_exemplar,       s_query_hat = delta + s_exemplar

and votes over M exemplars (paper Sec. 3.4): ``s_hat = 1/M sum_m (R(f, f_m) + s_m)``.
``R`` is an MLP (one Linear + ReLU) feeding the group-aware regression tree (GART, Sec. 3.3).

Pair order: the exemplar comes FIRST, as in the reference code (``models/Backbone.py``:
``cat(feature_exemplar, feature_target, label_exemplar / theta)``); the paper's
``concat([f_n, f_m, s_n / eps])`` with exemplar ``n`` says the same. ``eps`` is ``label_scale``:
30 for MTL-AQA execution labels, 100 for AQA-7 (scores rescaled to 0-100).

Labels and difficulty (MTL-AQA with difficulty): the label is the execution score ``final / difficulty``;
the pair feature carries the exemplar's execution / eps; the caller multiplies the voted execution by
the QUERY's difficulty. The head itself only sees "labels" and is unit-agnostic.

Tree and state-dict layout (identical names and shapes to the reference ``RegressTree``, so a reference
regressor state dict loads with ``strict=True``). ``h`` = hidden, ``n_i = 2**i`` nodes at level i::

    first_layer.0.{weight (h, 2D+1), bias (h,)}                     Linear + ReLU (the root MLP)
    clf_layers.{i}.{weight (2 n_i, h, 1), bias (2 n_i,)}             n_i groups: 2 logits/node
    feature_layers.{i}.0.{weight (2 n_i h, h, 1), bias (2 n_i h,)}   n_i groups, + ReLU
    reg_layer.{weight (2**depth, h, 1), bias (2**depth,)}            2**depth groups: leaf values

for i = 0 .. depth-1. The grouped layers are the reference's ``Conv1d(kernel_size=1, groups=...)``,
computed as batched matrix products (:class:`GroupedLinear`, same parameters). Node k at level i has
children 2k (left, lower delta) and 2k+1; each node's two logits go through log-softmax and a leaf's
log-probability is the sum along its path (the leaf probability is the product of the branch
probabilities). ``depth`` here counts binary decision levels
(2**depth leaves); the reference's ``RT_depth`` counts levels including the leaves, so reference
``RT_depth=5`` (16 leaves) is ``depth=4`` here.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.gart import (
    CLASSIFICATION_LOSSES,
    LEAF_ACTIVATIONS,
    ClassificationLoss,
    GroupBoundaries,
    LeafActivation,
    activate_leaves,
    gart_loss,
)


class RelativePrediction(NamedTuple):
    """GART inference for a batch of pairs (all (B,))."""

    relative: torch.Tensor  # delta_hat = s_query - s_exemplar, in label units
    leaf: torch.Tensor  # r* = argmax_r P_r (int64)
    leaf_prob: torch.Tensor  # P_{r*}


class VoteResult(NamedTuple):
    """Multi-exemplar voting for one query (all (M,)): ``votes = exemplar_labels + relative``."""

    votes: torch.Tensor
    relative: torch.Tensor
    leaf: torch.Tensor
    leaf_prob: torch.Tensor

    @property
    def score(self) -> torch.Tensor:
        """The voted label ``1/M sum_m votes_m`` (0-d); multiply by the query's difficulty if labels are
        execution scores."""
        return self.votes.mean()


class GroupedLinear(nn.Module):
    """``groups`` independent linear maps side by side: (B, in_features) -> (B, out_features).

    The reference tree's ``Conv1d(in, out, kernel_size=1, groups=g)`` over a length-1 sequence, computed as one
    batched matrix product (``y[b, g] = W_g x[b, g] + b_g``): a training step of the demo's head is 1.6 x
    cheaper on the CPU than with the grouped convolution (``benchmarks/bench_core_head.py``). Parameters keep the Conv1d's names, shapes (``weight (out, in / g, 1)``, ``bias
    (out,)``) and initialisation, so reference state dicts load unchanged.
    """

    def __init__(self, in_features: int, out_features: int, groups: int) -> None:
        super().__init__()
        if in_features % groups or out_features % groups:
            raise ValueError(f"in_features {in_features} and out_features {out_features} must divide by {groups}")
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(out_features, in_features // groups, 1))
        self.bias = nn.Parameter(torch.empty(out_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv1d's default initialisation
        bound = 1 / math.sqrt(in_features // groups)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        weight = self.weight.view(self.groups, -1, self.weight.shape[1])  # (g, out / g, in / g)
        y = torch.einsum("bgi,goi->bgo", x.view(batch, self.groups, -1), weight)
        return y.reshape(batch, -1) + self.bias


class CoReHead(nn.Module):
    """Contrastive regressor + GART over video-level features (clip features already averaged).

    Args:
        feature_dim: D, the video feature size (1024 for I3D).
        hidden: width of the MLP and of every tree node (reference 256).
        depth: binary decision levels; 2**depth leaves (reference ``RT_depth - 1``).
        label_scale: eps in ``s_exemplar / eps`` (30 MTL-AQA execution, 100 AQA-7).
        leaf_activation: ``"sigmoid"`` (paper) or ``"identity"`` (reference code / its checkpoints).
    """

    def __init__(
        self,
        feature_dim: int,
        hidden: int = 256,
        depth: int = 4,
        label_scale: float = 30.0,
        leaf_activation: LeafActivation = "sigmoid",
    ) -> None:
        super().__init__()
        if feature_dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(
                f"feature_dim, hidden and depth must be >= 1, got {feature_dim}, {hidden}, {depth}"
            )
        if not label_scale > 0:
            raise ValueError(f"label_scale must be positive, got {label_scale}")
        if leaf_activation not in LEAF_ACTIVATIONS:
            raise ValueError(f"leaf_activation must be one of {LEAF_ACTIVATIONS}, got {leaf_activation!r}")
        self.feature_dim = feature_dim
        self.hidden = hidden
        self.depth = depth
        self.label_scale = float(label_scale)
        self.leaf_activation: LeafActivation = leaf_activation

        self.first_layer = nn.Sequential(nn.Linear(2 * feature_dim + 1, hidden), nn.ReLU())
        self.feature_layers = nn.ModuleList(
            nn.Sequential(GroupedLinear(2**i * hidden, 2 ** (i + 1) * hidden, groups=2**i), nn.ReLU())
            for i in range(depth)
        )
        self.clf_layers = nn.ModuleList(
            GroupedLinear(2**i * hidden, 2 ** (i + 1), groups=2**i) for i in range(depth)
        )
        self.reg_layer = GroupedLinear(2**depth * hidden, 2**depth, groups=2**depth)

    @property
    def num_leaves(self) -> int:
        return 2**self.depth

    def config(self) -> dict[str, Any]:
        """Constructor arguments, JSON-ready (``CoReHead(**head.config())`` rebuilds the architecture)."""
        return {
            "feature_dim": self.feature_dim,
            "hidden": self.hidden,
            "depth": self.depth,
            "label_scale": self.label_scale,
            "leaf_activation": self.leaf_activation,
        }

    def _features(self, name: str, features: torch.Tensor, leading: tuple[int, ...]) -> torch.Tensor:
        expected = (*leading, self.feature_dim)
        if not isinstance(features, torch.Tensor) or not features.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor of shape {expected}")
        if tuple(features.shape) != expected:
            raise ValueError(f"{name} must have shape {expected}, got {tuple(features.shape)}")
        if not torch.isfinite(features).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return features.to(self.reg_layer.weight.dtype)

    def _labels(self, name: str, labels: torch.Tensor, batch: int) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=self.reg_layer.weight.device)
        if labels.shape != (batch,):
            raise ValueError(f"{name} must have shape ({batch},), got {tuple(labels.shape)}")
        if not torch.isfinite(labels.double()).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return labels.to(self.reg_layer.weight.dtype)

    def _boundaries(self, boundaries: GroupBoundaries) -> GroupBoundaries:
        if boundaries.num_groups != self.num_leaves:
            raise ValueError(
                f"boundaries have {boundaries.num_groups} groups but the tree has {self.num_leaves} leaves"
            )
        return boundaries

    def pair_features(
        self, query: torch.Tensor, exemplar: torch.Tensor, exemplar_label: torch.Tensor
    ) -> torch.Tensor:
        """(B, D), (B, D), (B,) -> ``concat(f_exemplar, f_query, s_exemplar / eps)`` (B, 2D + 1)."""
        if not isinstance(query, torch.Tensor) or query.dim() != 2:
            raise ValueError("query must be a (B, D) tensor")
        batch = query.shape[0]
        query = self._features("query", query, (batch,))
        exemplar = self._features("exemplar", exemplar, (batch,))
        label = self._labels("exemplar_label", exemplar_label, batch)
        return torch.cat([exemplar, query, (label / self.label_scale)[:, None]], dim=1)

    def forward(self, pair_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2D + 1) -> leaf log-probabilities (B, 2**depth) and RAW leaf regressor outputs (B, 2**depth).

        ``log P_leaf = sum over the path of log-softmax(node logits)[branch]`` (paper Sec. 3.3).
        """
        x = self.first_layer(pair_features)  # (B, h): the root's input
        batch = x.shape[0]
        log_probs = x.new_zeros(batch, 1)  # log-probability of reaching each node of the current level
        for classify, expand in zip(self.clf_layers, self.feature_layers, strict=True):
            branch = F.log_softmax(classify(x).view(batch, -1, 2), dim=-1)  # (B, nodes, 2)
            log_probs = (log_probs.unsqueeze(-1) + branch).flatten(1)  # children 2k, 2k+1 of node k
            x = expand(x)
        return log_probs, self.reg_layer(x)

    def predict_relative(
        self,
        query: torch.Tensor,
        exemplar: torch.Tensor,
        exemplar_label: torch.Tensor,
        boundaries: GroupBoundaries,
    ) -> RelativePrediction:
        """Relative score ``delta_hat = sigma_hat_{r*} (max^{r*} - min^{r*}) + min^{r*}`` per pair (Eq. 5)."""
        boundaries = self._boundaries(boundaries)
        log_probs, leaf_values = self(self.pair_features(query, exemplar, exemplar_label))
        best_log_prob, leaf = log_probs.max(dim=1)
        sigma_hat = activate_leaves(leaf_values.gather(1, leaf[:, None])[:, 0], self.leaf_activation)
        return RelativePrediction(boundaries.decode(leaf, sigma_hat), leaf, best_log_prob.exp())

    def vote(
        self,
        query: torch.Tensor,
        exemplars: torch.Tensor,
        exemplar_labels: torch.Tensor,
        boundaries: GroupBoundaries,
    ) -> VoteResult:
        """Multi-exemplar voting: one query (D,) against M exemplars (M, D) with labels (M,).

        The M pairs run as one batch; ``votes_m = s_m + R(f, f_m)`` and ``result.score`` is their mean.
        """
        query = self._features("query", query, ())
        if not isinstance(exemplars, torch.Tensor) or exemplars.dim() != 2 or exemplars.shape[0] < 1:
            raise ValueError("exemplars must be a non-empty (M, D) tensor")
        count = exemplars.shape[0]
        exemplars = self._features("exemplars", exemplars, (count,))
        labels = self._labels("exemplar_labels", exemplar_labels, count)
        relative, leaf, leaf_prob = self.predict_relative(
            query.expand(count, -1), exemplars, labels, boundaries
        )
        return VoteResult(labels + relative, relative, leaf, leaf_prob)

    def loss(
        self,
        query: torch.Tensor,
        exemplar: torch.Tensor,
        exemplar_label: torch.Tensor,
        query_label: torch.Tensor,
        boundaries: GroupBoundaries,
        classification: ClassificationLoss = "bce",
    ) -> dict[str, torch.Tensor]:
        """GART loss for pairs whose target is ``query_label - exemplar_label`` (see ``gart_loss``)."""
        if classification not in CLASSIFICATION_LOSSES:
            raise ValueError(f"classification must be one of {CLASSIFICATION_LOSSES}, got {classification!r}")
        boundaries = self._boundaries(boundaries)
        pairs = self.pair_features(query, exemplar, exemplar_label)
        batch = pairs.shape[0]
        query_labels = self._labels("query_label", query_label, batch)
        target = query_labels - self._labels("exemplar_label", exemplar_label, batch)
        group_idx, reg_target = boundaries.assign(target)
        log_probs, leaf_values = self(pairs)
        return gart_loss(log_probs, leaf_values, group_idx, reg_target, classification, self.leaf_activation)
