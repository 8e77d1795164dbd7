"""Train the CoRe head on cached, clip-averaged features.

Each step draws a batch of queries and, for each, one exemplar with the same pairing key
(:mod:`training.pairs`; CoRe pairs same-difficulty MTL-AQA dives), and minimises J = J_cls + J_reg of the
group-aware regression tree on the relative label s_query - s_exemplar (CoRe, Sec. 3.2); with
``both_directions`` every pair is also used the other way round, (exemplar, query), as the reference step
does (``tools/helper.py``). The tree's group boundaries come from the |delta| of all training pairs within
groups (symmetric rule of the reference code, outer bound = the label scale).

The defaults are this project's (sigmoid leaves + BCE as in the paper's text, one direction, every pair
weighing the same); the ``kinetics`` profile sets the reference code's choices (``training/profiles.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from models.core import CoReHead
from models.gart import GroupBoundaries, gart_loss
from models.subnormals import flush_subnormals_while_training
from training.pairs import BestEpoch, PairSampler


@dataclass
class CoReTrainConfig:
    """Head architecture, loss and optimisation (Adam). With end-to-end fine-tuning (``EndToEndConfig``) the
    same fields drive the joint training: ``lr`` is the head's, the backbone's is ``lr`` times its factor."""

    hidden: int = 256
    depth: int = 4
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    leaf_activation: str = "sigmoid"  # "identity": raw leaves, as the reference code
    classification_loss: str = "bce"  # "nll": the reference code's
    reduction: str = "pair"  # "leaf": the reference's per-direction, per-leaf means (models.gart.gart_loss)
    both_directions: bool = False  # every pair also as (exemplar, query), as the reference step
    pairing: str = "class_then_difficulty"  # training.pairs.PairingRule
    pair_singletons: bool = False  # a dive alone in its group pairs with itself (reference loaders)
    eval_every: int = 5
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CoReTrainResult:
    head: CoReHead
    boundaries: GroupBoundaries
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0


def train_core_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    group_keys: Sequence[str | None],
    label_scale: float,
    config: CoReTrainConfig,
    validate: Callable[[CoReHead, GroupBoundaries], float] | None = None,
    progress: bool = True,
) -> CoReTrainResult:
    """Fit a CoRe head on (N, D) video features and (N,) labels; keep the epoch ``validate`` likes best."""
    torch.manual_seed(config.seed)
    pairs = PairSampler(group_keys, config.seed, pair_singletons=config.pair_singletons)
    boundaries = GroupBoundaries.from_deltas(
        pairs.deltas(labels.double().numpy()), num_groups=2**config.depth, symmetric=True, score_range=label_scale,
    )
    head = CoReHead(feature_dim=features.shape[1], hidden=config.hidden, depth=config.depth,
                    label_scale=label_scale, leaf_activation=config.leaf_activation)
    # foreach: one multi-tensor update instead of a loop over parameters (benchmarks/bench_core_head.py).
    optimizer = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    flush_subnormals_while_training(optimizer)

    best, history = BestEpoch(), []
    for epoch in tqdm(range(1, config.epochs + 1), desc="CoRe head", unit="epoch", disable=not progress):
        head.train()
        totals = np.zeros(3)
        for query, exemplar in pairs.epoch(config.batch_size):
            q, e = (torch.cat([query, exemplar]), torch.cat([exemplar, query])) if config.both_directions \
                else (query, exemplar)
            loss = core_pair_loss(head, boundaries, features[q], features[e], labels[q], labels[e], config)
            optimizer.zero_grad(set_to_none=True)
            loss["total"].backward()
            optimizer.step()
            totals += [loss["cls"].item() * len(query), loss["reg"].item() * len(query), len(query)]
        record = {"epoch": epoch, "loss_cls": totals[0] / totals[2], "loss_reg": totals[1] / totals[2]}
        if validate is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
            head.eval()
            record["validation"] = validate(head, boundaries)
            best.update(head, record["validation"], epoch)
        history.append(record)
    best_epoch = best.restore(head, config.epochs)
    return CoReTrainResult(head=head.eval(), boundaries=boundaries, history=history, best_epoch=best_epoch)


def core_pair_loss(head: CoReHead, boundaries: GroupBoundaries, query: torch.Tensor, exemplar: torch.Tensor,
                   query_labels: torch.Tensor, exemplar_labels: torch.Tensor,
                   config: CoReTrainConfig) -> dict[str, torch.Tensor]:
    """GART loss of pairs (B, D) x 2 with labels (B,) x 2: the head predicts ``s_query - s_exemplar``.

    With ``config.both_directions`` the caller stacks the (query, exemplar) pairs and then the same pairs
    swapped, so the batch's two halves are the two directions the ``"leaf"`` reduction adds up.
    """
    group_idx, reg_target = boundaries.assign((query_labels - exemplar_labels).float())
    log_probs, leaf_values = head(head.pair_features(query, exemplar, exemplar_labels))
    return gart_loss(log_probs, leaf_values, group_idx, reg_target, classification=config.classification_loss,
                     leaf_activation=config.leaf_activation, reduction=config.reduction,
                     directions=2 if config.both_directions else 1)
