"""TPT head: temporal parsing transformer + part-aware contrastive regression (Bai et al., "Action Quality
Assessment with Temporal Parsing Transformer", ECCV 2022).

A video's per-clip features ``V = {v_t}_{t=1..T}`` are parsed into ``K`` ordered temporal parts by a
transformer DECODER (no encoder, no positional embedding of the clips); query and exemplar go through
the same decoder, each on its own. Their parts are compared part by part and the fused comparison feeds a
group-aware classifier + in-group regressor (paper Sec. 3.2-3.3)::

    P = Decoder(V), P0 = Decoder(V0)                        p_k, p0_k in R^d, k = 1..K
    r_k = f_r(concat(p0_k, p_k))                            one MLP shared by all parts
    r = 1/K sum_k r_k
    log P_g = log_softmax(cls(r))_g,  sigma_hat_g = sigmoid(reg(r))_g,   g = 1..G groups
    delta_hat = sigma_hat_{g*} (max^{g*} - min^{g*}) + min^{g*},  g* = argmax_g P_g   (GART rule)
    s_query_hat = s_exemplar + delta_hat

Decoder layer i (parts ``p_k`` start at 0, ``q_k`` are the learnable atomic-pattern queries)::

    alpha_kt = softmax_t( <W_k v_t, W_q (p_k + q_k)> / (d tau_i) )       cross-attention, one head
    p_k <- LN(p_k + sum_t alpha_kt W_v v_t)                               part update
    p_k <- LN(p_k + W_2 ReLU(W_1 p_k))                                    feed-forward
    p <- LN(p + MHSA(p + q, p + q, p))                                    first layer only (reference)

Losses (Sec. 3.3): attention centre ``alpha_bar_k = sum_t t alpha_kt`` (t = 1..T), ranking hinge on the
centres, sparsity ``sum_t |t - alpha_bar_k| alpha_kt``, and the GART classification + regression terms
(``models/gart.py``); see :func:`tpt_loss`.

Choices the paper and the seed notes leave open, taken from the reference code (baiyang4/aqa_tpt,
``models_cluster_2layer_pairencode1_clsreg_decoder_1selfatt_self8head_ffn``, train script
``train_pairencode1_decoder_1selfatt_self8head_ffn_sp_new.py``):

* Cross-attention is single-head with learned key/value/query projections; the logits are divided by
  ``d`` as well as by the learnable temperature (init 0.07, one per layer, unconstrained). With identity
  projections this is the paper's ``(p_k + q_k) . v_t / tau`` scaled by ``1 / d``.
* Post-norm residuals (DETR style) with dropout 0.1; the first layer adds 8-head self-attention among the
  parts after its feed-forward block (``query_self_attention``). Decoder matrices: Xavier-uniform init.
* Pair order: exemplar parts first, ``f_r(concat(p0_k, p_k))`` predicts ``s_query - s_exemplar``
  (reference ``pair_encoder(x2, x1)`` at test time). Unlike CoRe, no exemplar label enters the network.
* Classifier and regressor: ``Linear(d, 128) - ReLU - Linear(128, G)``; a flat softmax over the G groups
  (no tree); sigmoid leaf values. Groups: the CoRe bin rule (``GroupBoundaries.from_deltas``, 16 groups,
  |delta| quantiles mirrored, outer bound 30 for MTL-AQA execution scores).
* Ranking margin 2 (the first README training command, 7 parts; the current README uses 3.2 with 5 parts,
  the ``kinetics-tpt`` profile's); ``T = 20`` clips; centres are not normalised. The attention losses are
  applied to every decoder layer and to both videos of a pair; the reference trains each pair in both
  directions (``training/train_tpt.py`` does too).
* Sparsity is averaged over parts (reference ``var.mean()``), i.e. the paper's sum over parts / K; the
  reference weight 0.05 multiplies that mean.
* The README's MTL-AQA command uses 7 parts; ``methods.md`` lists 5, our default.

State-dict layout: the names of the reference ``PairModel`` (``in_dim`` replaces its hard-coded 1024), so
a reference state dict loads with ``strict=True``. ``d`` = d_model, ``f`` = ffn_dim, ``h`` = head_hidden,
``i = 0 .. num_layers - 1``::

    action_decoder.query_embed.weight (K, d)                      atomic-pattern queries q_k
    action_decoder.layers.{i}.temp ()                             temperature tau_i
    action_decoder.layers.{i}.key_embed.{weight (d, in_dim), bias (d,)}      W_k
    action_decoder.layers.{i}.value_embed.{weight (d, in_dim), bias (d,)}    W_v
    action_decoder.layers.{i}.query_embed.{weight (d, d), bias (d,)}         W_q
    action_decoder.layers.{i}.norm1.{weight, bias} (d,)           LN after the part update
    action_decoder.layers.{i}.linear1.{weight (f, d), bias (f,)}  W_1
    action_decoder.layers.{i}.linear2.{weight (d, f), bias (d,)}  W_2
    action_decoder.layers.{i}.norm2.{weight, bias} (d,)           LN after the feed-forward
    action_decoder.layers.0.self_attn.{in_proj_weight (3d, d), in_proj_bias (3d,),
                                       out_proj.weight (d, d), out_proj.bias (d,)}   if query_self_attention
    action_decoder.layers.0.norm3.{weight, bias} (d,)             if query_self_attention
    pair_encoder.mlp.0.{weight (d, 2d), bias (d,)}                f_r, first Linear
    pair_encoder.mlp.3.{weight (d, d), bias (d,)}                 f_r, second Linear
    cls.0.{weight (h, d), bias (h,)}, cls.2.{weight (G, h), bias (G,)}     group logits
    reg.0.{weight (h, d), bias (h,)}, reg.2.{weight (G, h), bias (G,)}     raw leaf values (pre-sigmoid)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.gart import (
    CLASSIFICATION_LOSSES,
    ClassificationLoss,
    GroupBoundaries,
    Reduction,
    activate_leaves,
    gart_loss,
)

RANKING_MARGIN = 2.0
SPAN_MASS = 0.8


class PartParse(NamedTuple):
    """Decoder output for a batch of videos."""

    parts: torch.Tensor  # (B, K, d) part representations p_k after the last layer
    attention: torch.Tensor  # (num_layers, B, K, T) cross-attention alpha_kt of every layer (rows sum to 1)


class TPTOutput(NamedTuple):
    """One pass over a batch of (query, exemplar) pairs."""

    leaf_log_probs: torch.Tensor  # (B, G) log P_g of the fused relative representation r
    leaf_values: torch.Tensor  # (B, G) raw regressor outputs (sigmoid gives sigma_hat_g)
    part_pairs: torch.Tensor  # (B, K, d) relative part representations r_k
    query_parse: PartParse
    exemplar_parse: PartParse


class TPTRelative(NamedTuple):
    """Relative scores for a batch of pairs, fused (B,) and per part (B, K; evidence only)."""

    relative: torch.Tensor  # delta_hat = s_query - s_exemplar, label units
    group: torch.Tensor  # g* (int64)
    group_prob: torch.Tensor  # P_{g*}
    part_relative: torch.Tensor  # (B, K): the same classifier/regressor applied to each r_k alone
    part_group: torch.Tensor  # (B, K) int64


class TPTVote(NamedTuple):
    """Multi-exemplar voting for one query: ``votes = exemplar_labels + relative`` (M,)."""

    votes: torch.Tensor  # (M,)
    relative: torch.Tensor  # (M,)
    group: torch.Tensor  # (M,)
    group_prob: torch.Tensor  # (M,)
    part_relative: torch.Tensor  # (M, K)
    query_attention: torch.Tensor  # (num_layers, K, T): the query's parse (independent of the exemplars)

    @property
    def score(self) -> torch.Tensor:
        """The voted label ``1/M sum_m votes_m`` (0-d)."""
        return self.votes.mean()


@dataclass(frozen=True)
class TPTLossWeights:
    """``L = l_cls L_cls + l_reg L_reg + l_rank sum_i L_rank^i + l_sparsity sum_i L_sparsity^i`` (Sec. 3.3).

    Defaults: the reference training script (``loss_cls + loss_reg + hinge_loss + 0.05 * var_loss``).
    """

    cls: float = 1.0
    reg: float = 1.0
    rank: float = 1.0
    sparsity: float = 0.05


# ---------------------------------------------------------------- attention statistics and losses


def attention_centres(attention: torch.Tensor) -> torch.Tensor:
    """Attention centres ``alpha_bar_k = sum_{t=1}^T t alpha_kt`` in [1, T] (1-based t): (..., K, T) -> (..., K)."""
    positions = torch.arange(1, attention.shape[-1] + 1, dtype=attention.dtype, device=attention.device)
    return attention @ positions


def attention_spans(attention: torch.Tensor, mass: float = SPAN_MASS) -> torch.Tensor:
    """Central clip range holding at least ``mass`` of each part's attention: (..., K, T) -> (..., K, 2).

    ``[first, last]`` are 0-based, inclusive clip indices: ``first`` is the first clip where the cumulative
    attention exceeds ``(1 - mass) / 2`` and ``last`` the first where it reaches ``1 - (1 - mass) / 2``
    (equal tails cut on both sides).
    """
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    tail = (1.0 - mass) / 2
    cumulative = attention.cumsum(-1).contiguous()
    bound_shape = (*cumulative.shape[:-1], 1)
    first = torch.searchsorted(cumulative, cumulative.new_full(bound_shape, tail), right=True)
    last = torch.searchsorted(cumulative, cumulative.new_full(bound_shape, 1.0 - tail), right=False)
    return torch.cat([first, last], dim=-1).clamp(max=attention.shape[-1] - 1)


def ranking_loss(centres: torch.Tensor, num_clips: int, margin: float = RANKING_MARGIN) -> torch.Tensor:
    """Ordering hinge on the centres of one layer (B, K), summed over terms, averaged over the batch::

        L_rank = sum_{k=1}^{K-1} max(0, c_k - c_{k+1} + m) + max(0, 1 - c_1 + m) + max(0, c_K - T + m)

    (the seed notes' last term has ``c_k``; the reference uses the last part's centre ``c_K``).
    """
    if centres.dim() != 2:
        raise ValueError(f"centres must have shape (B, K), got {tuple(centres.shape)}")
    order = F.relu(centres[:, :-1] - centres[:, 1:] + margin).sum(1)
    first = F.relu(1.0 - centres[:, 0] + margin)
    last = F.relu(centres[:, -1] - num_clips + margin)
    return (order + first + last).mean()


def sparsity_loss(attention: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Attention spread around each centre, ``sum_t |t - c_k| alpha_kt``, averaged over batch and parts.

    attention (B, K, T), centres (B, K). The paper sums over parts; the reference (``var.mean()``) averages,
    which is the paper's value / K; the reference weight 0.05 goes with this mean.
    """
    if attention.dim() != 3 or centres.shape != attention.shape[:2]:
        raise ValueError(
            f"attention must be (B, K, T) and centres (B, K), got {tuple(attention.shape)} and "
            f"{tuple(centres.shape)}"
        )
    positions = torch.arange(1, attention.shape[-1] + 1, dtype=attention.dtype, device=attention.device)
    return ((positions - centres[..., None]).abs() * attention).sum(-1).mean()


def tpt_loss(
    output: TPTOutput,
    group_idx: torch.Tensor,
    reg_target: torch.Tensor,
    weights: TPTLossWeights = TPTLossWeights(),
    margin: float = RANKING_MARGIN,
    classification: ClassificationLoss = "nll",
    reduction: Reduction = "pair",
    directions: int = 1,
) -> dict[str, torch.Tensor]:
    """TPT objective for pairs labelled by ``GroupBoundaries.assign(s_query - s_exemplar)``.

    ``cls`` and ``reg`` come from :func:`models.gart.gart_loss` on the fused prediction (``"nll"`` over the
    softmax groups as in the reference code; ``"bce"`` is the formula in the seed notes), reduced as
    ``reduction`` says: ``"leaf"`` with ``directions=2`` is the reference's (the two directions' NLL means
    added, plus every direction's per-leaf MSE means added), ``"pair"`` averages both over the pairs. ``rank``
    and ``sparsity`` are summed over decoder layers and averaged over the parsed videos (query and exemplar),
    as the reference averages them over the 2B videos of a step. Returns
    ``{"cls", "reg", "rank", "sparsity", "total"}`` scalars; ``total`` is weighted.
    """
    if classification not in CLASSIFICATION_LOSSES:
        raise ValueError(f"classification must be one of {CLASSIFICATION_LOSSES}, got {classification!r}")
    terms = gart_loss(output.leaf_log_probs, output.leaf_values, group_idx, reg_target, classification,
                      reduction=reduction, directions=directions)
    attention = torch.cat([output.query_parse.attention, output.exemplar_parse.attention], dim=1)
    num_clips = attention.shape[-1]
    rank = attention.new_zeros(())
    sparsity = attention.new_zeros(())
    for layer_attention in attention:
        centres = attention_centres(layer_attention)
        rank = rank + ranking_loss(centres, num_clips, margin)
        sparsity = sparsity + sparsity_loss(layer_attention, centres)
    total = (
        weights.cls * terms["cls"] + weights.reg * terms["reg"] + weights.rank * rank
        + weights.sparsity * sparsity
    )
    return {"cls": terms["cls"], "reg": terms["reg"], "rank": rank, "sparsity": sparsity, "total": total}


# ---------------------------------------------------------------- modules


class TemporalParsingLayer(nn.Module):
    """One decoder layer: single-head cross-attention of the parts to the clips, feed-forward, and
    (optionally) multi-head self-attention among the parts. See the module docstring for the equations."""

    def __init__(
        self,
        in_dim: int,
        d_model: int,
        ffn_dim: int,
        temperature: float,
        dropout: float,
        self_attention_heads: int | None,
    ) -> None:
        super().__init__()
        self.temp = nn.Parameter(torch.tensor(float(temperature)))
        self.key_embed = nn.Linear(in_dim, d_model)
        self.value_embed = nn.Linear(in_dim, d_model)
        self.query_embed = nn.Linear(d_model, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        if self_attention_heads is not None:
            self.self_attn = nn.MultiheadAttention(d_model, self_attention_heads, dropout=dropout,
                                                   batch_first=True)
            self.norm3 = nn.LayerNorm(d_model)
        else:
            self.self_attn = None

    def cross_attention(
        self, clips: torch.Tensor, parts: torch.Tensor, queries: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """clips (B, T, in_dim), parts (B, K, d), queries (K, d) -> (sum_t alpha_kt W_v v_t (B, K, d), alpha (B, K, T)).

        ``alpha_kt = softmax_t(<W_k v_t, W_q (p_k + q_k)> / (d tau))``; no positional term enters, so
        permuting the clips permutes alpha's columns and leaves the sum unchanged.
        """
        keys = self.key_embed(clips)
        values = self.value_embed(clips)
        query = self.query_embed(parts + queries)
        logits = query @ keys.transpose(1, 2) / (keys.shape[-1] * self.temp)
        attention = logits.softmax(dim=-1)
        return attention @ values, attention

    def forward(
        self, clips: torch.Tensor, parts: torch.Tensor, queries: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Updated parts (B, K, d) and this layer's attention (B, K, T)."""
        attended, attention = self.cross_attention(clips, parts, queries)
        parts = self.norm1(parts + self.dropout(attended))
        feed_forward = self.linear2(self.dropout(F.relu(self.linear1(parts))))
        parts = self.norm2(parts + self.dropout(feed_forward))
        if self.self_attn is not None:
            positioned = parts + queries
            mixed = self.self_attn(positioned, positioned, parts, need_weights=False)[0]
            parts = self.norm3(parts + self.dropout(mixed))
        return parts, attention


class TemporalParsingDecoder(nn.Module):
    """K learnable atomic-pattern queries decoded against the clip features by ``num_layers`` layers."""

    def __init__(
        self,
        in_dim: int,
        d_model: int,
        num_parts: int,
        num_layers: int,
        ffn_dim: int,
        temperature: float,
        dropout: float,
        self_attention_heads: int | None,
    ) -> None:
        super().__init__()
        self.query_embed = nn.Embedding(num_parts, d_model)
        self.layers = nn.ModuleList(
            TemporalParsingLayer(in_dim, d_model, ffn_dim, temperature, dropout,
                                 self_attention_heads if i == 0 else None)
            for i in range(num_layers)
        )
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)

    def forward(self, clips: torch.Tensor) -> PartParse:
        queries = self.query_embed.weight
        parts = clips.new_zeros(clips.shape[0], *queries.shape)
        attention = []
        for layer in self.layers:
            parts, layer_attention = layer(clips, parts, queries)
            attention.append(layer_attention)
        return PartParse(parts, torch.stack(attention))


class PartPairEncoder(nn.Module):
    """Relative part representations ``r_k = f_r(concat(p0_k, p_k))`` with one MLP for all parts."""

    def __init__(self, d_model: int, dropout: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(2 * d_model, d_model), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_model, d_model)
        )

    def forward(self, exemplar_parts: torch.Tensor, query_parts: torch.Tensor) -> torch.Tensor:
        """(B, K, d), (B, K, d) -> (B, K, d)."""
        return self.mlp(torch.cat([exemplar_parts, query_parts], dim=-1))


class TPTHead(nn.Module):
    """Temporal parsing transformer + part-aware contrastive regressor over per-clip features.

    Args:
        in_dim: per-clip backbone feature size (1024 for I3D; smaller for reduced-width backbones).
        d_model: part feature size d (reference 512).
        num_parts: K queries / temporal parts (reference configuration 5).
        num_layers: decoder layers (reference 2).
        ffn_dim: decoder feed-forward width (reference 512).
        num_groups: G relative-score groups (reference 16).
        temperature: initial attention temperature of every layer (reference 0.07, learnable).
        head_hidden: hidden width of the classifier and regressor MLPs (reference 128).
        query_self_attention: self-attention among the parts in the first layer (reference: yes).
        self_attention_heads: its heads (reference 8); must divide d_model.
        dropout: dropout everywhere in the decoder and pair encoder (reference 0.1).
    """

    def __init__(
        self,
        in_dim: int = 1024,
        d_model: int = 512,
        num_parts: int = 5,
        num_layers: int = 2,
        ffn_dim: int = 512,
        num_groups: int = 16,
        temperature: float = 0.07,
        head_hidden: int = 128,
        query_self_attention: bool = True,
        self_attention_heads: int = 8,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        sizes = {"in_dim": in_dim, "d_model": d_model, "num_parts": num_parts, "num_layers": num_layers,
                 "ffn_dim": ffn_dim, "num_groups": num_groups, "head_hidden": head_hidden,
                 "self_attention_heads": self_attention_heads}
        for name, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if query_self_attention and d_model % self_attention_heads:
            raise ValueError(f"self_attention_heads ({self_attention_heads}) must divide d_model ({d_model})")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim = in_dim
        self.d_model = d_model
        self.num_parts = num_parts
        self.num_layers = num_layers
        self.ffn_dim = ffn_dim
        self.num_groups = num_groups
        self.temperature = float(temperature)
        self.head_hidden = head_hidden
        self.query_self_attention = bool(query_self_attention)
        self.self_attention_heads = self_attention_heads
        self.dropout = float(dropout)

        self.action_decoder = TemporalParsingDecoder(
            in_dim, d_model, num_parts, num_layers, ffn_dim, temperature, dropout,
            self_attention_heads if query_self_attention else None,
        )
        self.pair_encoder = PartPairEncoder(d_model, dropout)
        self.cls = nn.Sequential(nn.Linear(d_model, head_hidden), nn.ReLU(), nn.Linear(head_hidden, num_groups))
        self.reg = nn.Sequential(nn.Linear(d_model, head_hidden), nn.ReLU(), nn.Linear(head_hidden, num_groups))

    def config(self) -> dict[str, Any]:
        """Constructor arguments, JSON-ready (``TPTHead(**head.config())`` rebuilds the architecture)."""
        return {
            "in_dim": self.in_dim,
            "d_model": self.d_model,
            "num_parts": self.num_parts,
            "num_layers": self.num_layers,
            "ffn_dim": self.ffn_dim,
            "num_groups": self.num_groups,
            "temperature": self.temperature,
            "head_hidden": self.head_hidden,
            "query_self_attention": self.query_self_attention,
            "self_attention_heads": self.self_attention_heads,
            "dropout": self.dropout,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TPTHead:
        """Inverse of :meth:`config`; unknown keys are a ``ValueError`` (a config from another head?)."""
        unknown = set(config) - set(inspect.signature(cls.__init__).parameters) - {"self"}
        if unknown:
            raise ValueError(f"unknown TPT head config keys: {sorted(unknown)}")
        return cls(**config)

    # ------------------------------------------------------------ input checks

    def _clips(self, name: str, clips: torch.Tensor, leading: tuple[int, ...]) -> torch.Tensor:
        """Check (*leading, T, in_dim) per-clip features (any T >= 1) and cast to the weights' dtype."""
        if not isinstance(clips, torch.Tensor) or not clips.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor of shape {(*leading, 'T', self.in_dim)}")
        if clips.dim() != len(leading) + 2 or tuple(clips.shape[: len(leading)]) != leading \
                or clips.shape[-1] != self.in_dim or clips.shape[-2] < 1:
            raise ValueError(
                f"{name} must have shape {(*leading, 'T', self.in_dim)} with T >= 1, got {tuple(clips.shape)}"
            )
        if not torch.isfinite(clips).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return clips.to(self.cls[0].weight.dtype)

    def _boundaries(self, boundaries: GroupBoundaries) -> GroupBoundaries:
        if boundaries.num_groups != self.num_groups:
            raise ValueError(
                f"boundaries have {boundaries.num_groups} groups but the head predicts {self.num_groups}"
            )
        return boundaries

    # ------------------------------------------------------------ network

    def parse(self, clips: torch.Tensor) -> PartParse:
        """Per-clip features (B, T, in_dim) -> parts (B, K, d) and attention (num_layers, B, K, T)."""
        if not isinstance(clips, torch.Tensor) or clips.dim() != 3:
            raise ValueError("clips must be a (B, T, in_dim) tensor")
        return self.action_decoder(self._clips("clips", clips, (clips.shape[0],)))

    def _compare(
        self, query_parts: torch.Tensor, exemplar_parts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Parts (B, K, d) x 2 -> fused leaf log-probs (B, G), raw leaf values (B, G), r_k (B, K, d)."""
        part_pairs = self.pair_encoder(exemplar_parts, query_parts)
        fused = part_pairs.mean(1)
        return F.log_softmax(self.cls(fused), dim=-1), self.reg(fused), part_pairs

    def forward(self, query_clips: torch.Tensor, exemplar_clips: torch.Tensor) -> TPTOutput:
        """Pairs of per-clip features (B, T, in_dim) -> :class:`TPTOutput`; one decoder pass over all 2B videos.

        The prediction target is ``s_query - s_exemplar``.
        """
        if not isinstance(query_clips, torch.Tensor) or query_clips.dim() != 3:
            raise ValueError("query_clips must be a (B, T, in_dim) tensor")
        batch = query_clips.shape[0]
        query_clips = self._clips("query_clips", query_clips, (batch,))
        exemplar_clips = self._clips("exemplar_clips", exemplar_clips, (batch,))
        if exemplar_clips.shape != query_clips.shape:
            raise ValueError(
                f"exemplar_clips {tuple(exemplar_clips.shape)} must match query_clips {tuple(query_clips.shape)}"
            )
        parts, attention = self.action_decoder(torch.cat([query_clips, exemplar_clips]))
        query_parse = PartParse(parts[:batch], attention[:, :batch])
        exemplar_parse = PartParse(parts[batch:], attention[:, batch:])
        leaf_log_probs, leaf_values, part_pairs = self._compare(query_parse.parts, exemplar_parse.parts)
        return TPTOutput(leaf_log_probs, leaf_values, part_pairs, query_parse, exemplar_parse)

    # ------------------------------------------------------------ inference

    def _decode(
        self, leaf_log_probs: torch.Tensor, leaf_values: torch.Tensor, boundaries: GroupBoundaries
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """GART rule on (..., G): relative ``sigma_hat_{g*} (max - min) + min``, g*, P_{g*} (all (...))."""
        best_log_prob, group = leaf_log_probs.max(dim=-1)
        sigma_hat = activate_leaves(leaf_values.gather(-1, group[..., None])[..., 0], "sigmoid")
        relative = boundaries.decode(group.reshape(-1), sigma_hat.reshape(-1)).view_as(sigma_hat)
        return relative, group, best_log_prob.exp()

    def _relative(
        self,
        leaf_log_probs: torch.Tensor,
        leaf_values: torch.Tensor,
        part_pairs: torch.Tensor,
        boundaries: GroupBoundaries,
    ) -> TPTRelative:
        relative, group, group_prob = self._decode(leaf_log_probs, leaf_values, boundaries)
        part_log_probs = F.log_softmax(self.cls(part_pairs), dim=-1)
        part_relative, part_group, _ = self._decode(part_log_probs, self.reg(part_pairs), boundaries)
        return TPTRelative(relative, group, group_prob, part_relative, part_group)

    def predict_relative(
        self, query_clips: torch.Tensor, exemplar_clips: torch.Tensor, boundaries: GroupBoundaries
    ) -> TPTRelative:
        """Relative score ``s_query - s_exemplar`` per pair (B,), plus per-part scores (B, K) as evidence.

        A part's relative score applies the classifier/regressor to its ``r_k`` alone; the fused score
        (from the part average) is the prediction, the part scores only explain it.
        """
        boundaries = self._boundaries(boundaries)
        output = self(query_clips, exemplar_clips)
        return self._relative(output.leaf_log_probs, output.leaf_values, output.part_pairs, boundaries)

    def vote(
        self,
        query_clips: torch.Tensor,
        exemplar_clips: torch.Tensor,
        exemplar_labels: torch.Tensor,
        boundaries: GroupBoundaries,
    ) -> TPTVote:
        """Multi-exemplar voting: query (T, in_dim) against M exemplars (M, T, in_dim) with labels (M,).

        One decoder pass parses the query and the M exemplars together (a video's parse does not depend on
        its partner, so the query is parsed once); ``votes_m = s_m + delta_hat_m``.
        """
        boundaries = self._boundaries(boundaries)
        if not isinstance(query_clips, torch.Tensor) or query_clips.dim() != 2:
            raise ValueError("query_clips must be a (T, in_dim) tensor")
        query_clips = self._clips("query_clips", query_clips, ())
        if not isinstance(exemplar_clips, torch.Tensor) or exemplar_clips.dim() != 3 \
                or exemplar_clips.shape[0] < 1:
            raise ValueError("exemplar_clips must be a non-empty (M, T, in_dim) tensor")
        count = exemplar_clips.shape[0]
        exemplar_clips = self._clips("exemplar_clips", exemplar_clips, (count,))
        if exemplar_clips.shape[1] != query_clips.shape[0]:
            raise ValueError(
                f"exemplar_clips have {exemplar_clips.shape[1]} clips per video, the query has "
                f"{query_clips.shape[0]}"
            )
        labels = torch.as_tensor(exemplar_labels, device=exemplar_clips.device)
        if labels.shape != (count,):
            raise ValueError(f"exemplar_labels must have shape ({count},), got {tuple(labels.shape)}")
        if not torch.isfinite(labels.double()).all():
            raise ValueError("exemplar_labels contains NaN or infinite values")
        labels = labels.to(exemplar_clips.dtype)

        parts, attention = self.action_decoder(torch.cat([query_clips[None], exemplar_clips]))
        query_parts = parts[:1].expand(count, -1, -1)
        leaf_log_probs, leaf_values, part_pairs = self._compare(query_parts, parts[1:])
        result = self._relative(leaf_log_probs, leaf_values, part_pairs, boundaries)
        return TPTVote(labels + result.relative, result.relative, result.group, result.group_prob,
                       result.part_relative, attention[:, 0])
