"""Scoring heads behind one interface, so the scorer serves whichever head a model directory names.

A head compares the query's per-clip features with M exemplars' per-clip features and returns one vote
per exemplar (exemplar label + predicted relative score), plus evidence of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from models.core import CoReHead
from models.gart import GroupBoundaries


@dataclass
class HeadVotes:
    """Per-exemplar votes in label units, the relative scores behind them and head evidence."""

    votes: torch.Tensor  # (M,)
    relative: torch.Tensor  # (M,)
    per_exemplar_evidence: list[dict[str, Any]] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)


class ScoringHead(Protocol):
    def vote(self, query_clips: torch.Tensor, exemplar_clips: torch.Tensor, exemplar_labels: torch.Tensor) -> HeadVotes:
        """query_clips (C, D), exemplar_clips (M, C, D), exemplar_labels (M,) -> votes."""
        ...


class CoReScoringHead:
    """CoRe: clip features are averaged per video (Yu et al. 2021, Sec. 3.1), then the tree votes."""

    def __init__(self, head: CoReHead, boundaries: GroupBoundaries) -> None:
        self.head = head.eval()
        self.boundaries = boundaries

    @classmethod
    def from_config(cls, feature_dim: int, label_scale: float, config: dict[str, Any],
                    state: dict[str, torch.Tensor]) -> CoReScoringHead:
        head = CoReHead(
            feature_dim=feature_dim,
            hidden=int(config["hidden"]),
            depth=int(config["depth"]),
            label_scale=label_scale,
            leaf_activation=config.get("leaf_activation", "sigmoid"),
        )
        head.load_state_dict(state, strict=True)
        return cls(head, GroupBoundaries.from_list(config["boundaries"]))

    @torch.inference_mode()
    def vote(self, query_clips: torch.Tensor, exemplar_clips: torch.Tensor, exemplar_labels: torch.Tensor) -> HeadVotes:
        result = self.head.vote(query_clips.mean(0), exemplar_clips.mean(1), exemplar_labels, self.boundaries)
        per_exemplar = [
            {"leaf": int(leaf), "leaf_probability": round(float(p), 4)}
            for leaf, p in zip(result.leaf, result.leaf_prob)
        ]
        return HeadVotes(votes=result.votes, relative=result.relative, per_exemplar_evidence=per_exemplar)
