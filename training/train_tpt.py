"""Train the TPT head on cached per-clip features (N, C, D).

TPT parses every video's clip sequence into K temporal parts, so it trains on the per-clip features
(the clip axis is what its decoder attends over), never on clip averages. Each step draws a batch of
queries and, for each, one exemplar from the same pairing group (``training.pairs.pairing_keys``,
as for CoRe); every pair is used in both directions, (query, exemplar) and (exemplar, query), as the
reference training loop does. The objective is ``models.tpt.tpt_loss`` with the reference weights
(cls + reg + ranking + 0.05 sparsity; Bai et al. 2022, Sec. 3.3) on the relative label
s_query - s_exemplar; the groups are CoRe's (symmetric |delta| quantiles, outer bound = label scale).

Optimiser (methods.md): Adam, lr 1e-4 for the decoder and the pair encoder, 1e-3 for the classifier and
regressor heads. The epoch with the best ``validate(head, boundaries)`` is kept.

Ranking margin: ``ranking_margin`` is for T = 20 clips (the reference's; 2 in its first README command, 3.2 in
the current one). Centres live on the clip axis [1, T], so the margin scales with it, m = margin T / 20,
and with ``cap_ranking_margin`` is capped at (T - 1) / (K + 1): the largest margin for which all K + 1 hinge
terms (K - 1 gaps, the first centre >= 1 + m, the last <= T - m) can be zero at once. The reference does not
cap (3.2 with 5 parts and 20 clips exceeds 19 / 6 = 3.17).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from models.gart import GroupBoundaries
from models.subnormals import flush_subnormals_while_training
from models.tpt import RANKING_MARGIN, TPTHead, TPTLossWeights, tpt_loss
from training.pairs import BestEpoch, PairSampler

REFERENCE_NUM_CLIPS = 20


@dataclass
class TPTTrainConfig:
    """Architecture (``TPTHead`` arguments) and recipe; defaults are the reference configuration."""

    d_model: int = 512
    num_parts: int = 5
    num_layers: int = 2
    ffn_dim: int = 512
    num_groups: int = 16
    head_hidden: int = 128
    self_attention_heads: int = 8
    dropout: float = 0.1
    epochs: int = 60
    batch_size: int = 32
    lr_decoder: float = 1e-4
    lr_heads: float = 1e-3
    weight_decay: float = 1e-5
    sparsity_weight: float = 0.05
    ranking_margin: float = RANKING_MARGIN  # at 20 clips; scaled to the clip count
    cap_ranking_margin: bool = True
    reduction: str = "pair"  # "leaf": the reference's (models.gart.gart_loss)
    pairing: str = "class_then_difficulty"  # training.pairs.PairingRule
    pair_singletons: bool = False
    eval_every: int = 5
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TPTTrainResult:
    head: TPTHead
    boundaries: GroupBoundaries
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    ranking_margin: float = RANKING_MARGIN


def ranking_margin(num_clips: int, num_parts: int, margin: float = RANKING_MARGIN, cap: bool = True) -> float:
    """``margin`` (at 20 clips) scaled to ``num_clips``; with ``cap``, capped so that it can be met."""
    scaled = margin * num_clips / REFERENCE_NUM_CLIPS
    return min(scaled, (num_clips - 1) / (num_parts + 1)) if cap else scaled


def train_tpt_head(
    clip_features: torch.Tensor,
    labels: torch.Tensor,
    group_keys: Sequence[str | None],
    label_scale: float,
    config: TPTTrainConfig,
    validate: Callable[[TPTHead, GroupBoundaries], float] | None = None,
    progress: bool = True,
) -> TPTTrainResult:
    """Fit a TPT head on (N, C, D) per-clip features and (N,) labels; keep the epoch ``validate`` likes best."""
    if clip_features.dim() != 3:
        raise ValueError(f"TPT trains on per-clip features (N, C, D), got shape {tuple(clip_features.shape)}")
    torch.manual_seed(config.seed)
    pairs = PairSampler(group_keys, config.seed, pair_singletons=config.pair_singletons)
    boundaries = GroupBoundaries.from_deltas(
        pairs.deltas(labels.double().numpy()), num_groups=config.num_groups, symmetric=True,
        score_range=label_scale,
    )
    num_clips, feature_dim = clip_features.shape[1:]
    head = build_tpt_head(feature_dim, config)
    optimizer = torch.optim.Adam(tpt_parameter_groups(head, config), weight_decay=config.weight_decay)
    flush_subnormals_while_training(optimizer)
    margin = ranking_margin(num_clips, config.num_parts, config.ranking_margin, config.cap_ranking_margin)
    features = clip_features.float()

    best, history = BestEpoch(), []
    terms = ("cls", "reg", "rank", "sparsity")
    for epoch in tqdm(range(1, config.epochs + 1), desc="TPT head", unit="epoch", disable=not progress):
        head.train()
        totals = dict.fromkeys(terms, 0.0)
        seen = 0
        for query, exemplar in pairs.epoch(config.batch_size):
            # both directions of every pair: (q, e) then (e, q)
            q, e = torch.cat([query, exemplar]), torch.cat([exemplar, query])
            loss = tpt_pair_loss(head, boundaries, features[q], features[e], labels[q], labels[e], config, margin)
            optimizer.zero_grad(set_to_none=True)
            loss["total"].backward()
            optimizer.step()
            seen += len(query)
            for term in terms:
                totals[term] += loss[term].item() * len(query)
        record: dict[str, float] = {"epoch": epoch, **{f"loss_{t}": v / seen for t, v in totals.items()}}
        if validate is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
            head.eval()
            record["validation"] = validate(head, boundaries)
            best.update(head, record["validation"], epoch)
        history.append(record)
    best_epoch = best.restore(head, config.epochs)
    return TPTTrainResult(head=head.eval(), boundaries=boundaries, history=history, best_epoch=best_epoch,
                          ranking_margin=margin)



def build_tpt_head(feature_dim: int, config: TPTTrainConfig) -> TPTHead:
    return TPTHead(in_dim=feature_dim, d_model=config.d_model, num_parts=config.num_parts,
                   num_layers=config.num_layers, ffn_dim=config.ffn_dim, num_groups=config.num_groups,
                   head_hidden=config.head_hidden, self_attention_heads=config.self_attention_heads,
                   dropout=config.dropout)


def tpt_parameter_groups(head: TPTHead, config: TPTTrainConfig) -> list[dict]:
    """The reference's learning rates: ``lr_decoder`` for the decoder and pair encoder, ``lr_heads`` for the
    classifier and regressor (TPT train script, ``RunPair.__init__``)."""
    return [
        {"params": [*head.action_decoder.parameters(), *head.pair_encoder.parameters()], "lr": config.lr_decoder},
        {"params": [*head.cls.parameters(), *head.reg.parameters()], "lr": config.lr_heads},
    ]


def tpt_pair_loss(head: TPTHead, boundaries: GroupBoundaries, query: torch.Tensor, exemplar: torch.Tensor,
                  query_labels: torch.Tensor, exemplar_labels: torch.Tensor, config: TPTTrainConfig,
                  margin: float) -> dict[str, torch.Tensor]:
    """TPT loss of pairs of per-clip features (2B, T, D) x 2 whose halves are the two directions of B pairs."""
    group_idx, reg_target = boundaries.assign((query_labels - exemplar_labels).float())
    return tpt_loss(head(query, exemplar), group_idx, reg_target, TPTLossWeights(sparsity=config.sparsity_weight),
                    margin, reduction=config.reduction, directions=2)
