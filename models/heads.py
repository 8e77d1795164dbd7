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
from models.pcln import PCLN
from models.subnormals import flush_subnormals
from models.tpt import SPAN_MASS, TPTHead, attention_centres, attention_spans


@dataclass
class HeadVotes:
    """Per-exemplar votes in label units, the relative scores behind them and head evidence."""

    votes: torch.Tensor  # (M,)
    relative: torch.Tensor  # (M,)
    per_exemplar_evidence: list[dict[str, Any]] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)


class ScoringHead(Protocol):
    uses_exemplars: bool
    """False for exemplar-free heads (PCLN): the scorer then selects no exemplars and expects one vote."""

    def vote(self, query_clips: torch.Tensor, exemplar_clips: torch.Tensor, exemplar_labels: torch.Tensor) -> HeadVotes:
        """query_clips (C, D), exemplar_clips (M, C, D), exemplar_labels (M,) -> votes."""
        ...


class CoReScoringHead:
    """CoRe: clip features are averaged per video (Yu et al. 2021, Sec. 3.1), then the tree votes."""

    uses_exemplars = True

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


class PCLNScoringHead:
    """PCLN at serve time: basic regression only (PCLN, 2022), ONE exemplar-free vote.

    The scorer feeds the query's per-step feature sequence as ``query_clips`` (T, D): the backbone's
    per-clip features when the PCLN was trained on them (``feature_dim`` = backbone D, ``num_frames`` =
    the clip protocol's clip count, which must be >= 16), or per-frame features of PCLN's own
    frame encoder. Exemplars are ignored (pass empty (0, T, D) / (0,) tensors and skip selection): the
    result is ``votes = [score]``, ``relative = [0]``, evidence ``{"exemplar_free": True}``.
    """

    uses_exemplars = False

    def __init__(self, model: PCLN) -> None:
        self.model = model.eval()

    @classmethod
    def from_config(cls, feature_dim: int, config: dict[str, Any], state: dict[str, torch.Tensor]) -> PCLNScoringHead:
        """``config`` is :meth:`PCLN.config` (it carries PCLN's own label offset and scale); ``state`` is a
        feature-sequence PCLN's state dict (no ``frame_encoder.*``). ``feature_dim`` is the backbone's."""
        if int(config["feature_dim"]) != feature_dim:
            raise ValueError(f"PCLN was trained on {config['feature_dim']}-d features, the backbone gives {feature_dim}")
        model = PCLN(**config)
        model.load_state_dict(state, strict=True)
        return cls(model)

    @torch.inference_mode()
    def vote(self, query_clips: torch.Tensor, exemplar_clips: torch.Tensor, exemplar_labels: torch.Tensor) -> HeadVotes:
        expected = (self.model.num_frames, self.model.feature_dim)
        if not isinstance(query_clips, torch.Tensor) or tuple(query_clips.shape) != expected:
            shape = tuple(query_clips.shape) if isinstance(query_clips, torch.Tensor) else type(query_clips).__name__
            raise ValueError(f"PCLN expects query features of shape {expected}, got {shape}")
        sequence = query_clips.to(self.model.regressor[0].weight.dtype).T.unsqueeze(0)  # (1, D, T)
        score = self.model.regress(self.model.encode_features(sequence))
        return HeadVotes(votes=score, relative=torch.zeros_like(score), evidence={"exemplar_free": True})


class TPTScoringHead:
    """TPT: per-clip features are parsed into K temporal parts (Bai et al. 2022, Sec. 3.2), then the
    part-aware regressor votes.

    Evidence for the query: per part, the attention centre and the central clip range holding ``span_mass``
    of the attention (last decoder layer; 0-based clip indices, the caller maps them to seconds), and the
    part's own relative score averaged over the M exemplars. The query's parse does not depend on the
    exemplars, so its attention is the same for every pair.
    """

    uses_exemplars = True

    def __init__(self, head: TPTHead, boundaries: GroupBoundaries, span_mass: float = SPAN_MASS) -> None:
        self.head = head.eval()
        self.boundaries = boundaries
        self.span_mass = span_mass

    @classmethod
    def from_config(cls, feature_dim: int, label_scale: float, config: dict[str, Any],
                    state: dict[str, torch.Tensor]) -> TPTScoringHead:
        """``config`` = ``TPTHead.config()`` plus ``"boundaries"``; ``in_dim`` and ``num_groups`` may be left
        out (they follow ``feature_dim`` and the boundaries). ``label_scale`` is not used: TPT's pair
        representation carries no exemplar label."""
        if "boundaries" not in config:
            raise ValueError("TPT head config needs 'boundaries'")
        boundaries = GroupBoundaries.from_list(config["boundaries"])
        arch = {key: value for key, value in config.items() if key != "boundaries"}
        if arch.setdefault("in_dim", feature_dim) != feature_dim:
            raise ValueError(f"TPT head expects {arch['in_dim']}-d clip features, the backbone gives {feature_dim}")
        if arch.setdefault("num_groups", boundaries.num_groups) != boundaries.num_groups:
            raise ValueError(f"TPT head predicts {arch['num_groups']} groups, boundaries have {boundaries.num_groups}")
        head = TPTHead.from_config(arch)
        head.load_state_dict(state, strict=True)
        return cls(head, boundaries)

    @torch.inference_mode()
    def vote(self, query_clips: torch.Tensor, exemplar_clips: torch.Tensor, exemplar_labels: torch.Tensor) -> HeadVotes:
        result = self.head.vote(query_clips, exemplar_clips, exemplar_labels, self.boundaries)
        attention = result.query_attention[-1]  # (K, T), last decoder layer
        centres = attention_centres(attention) - 1  # 0-based clip index
        spans = attention_spans(attention, self.span_mass)
        part_relative = result.part_relative.mean(0)
        parts = [
            {"part": k, "centre_clip": round(float(centres[k]), 3), "span_clips": spans[k].tolist(),
             "relative": round(float(part_relative[k]), 4)}
            for k in range(attention.shape[0])
        ]
        per_exemplar = [
            {"leaf": int(group), "leaf_probability": round(float(p), 4),
             "part_relative": [round(float(r), 4) for r in rel]}
            for group, p, rel in zip(result.group, result.group_prob, result.part_relative)
        ]
        return HeadVotes(votes=result.votes, relative=result.relative, per_exemplar_evidence=per_exemplar,
                         evidence={"span_mass": self.span_mass, "parts": parts})


def build_head(name: str, feature_dim: int, label_scale: float, config: dict[str, Any],
               state: dict[str, torch.Tensor]) -> ScoringHead:
    """The scoring head a model directory names (``core``, ``tpt`` or ``pcln``), with its weights (subnormal
    ones flushed to zero: ``models.subnormals``)."""
    state = flush_subnormals(state)
    if name == "core":
        return CoReScoringHead.from_config(feature_dim, label_scale, config, state)
    if name == "tpt":
        return TPTScoringHead.from_config(feature_dim, label_scale, config, state)
    if name == "pcln":
        return PCLNScoringHead.from_config(feature_dim, config, state)
    raise ValueError(f"unknown head {name!r}; expected core, tpt or pcln")
