"""Train the CoRe head on cached, clip-averaged features.

Each step draws a batch of queries and, for each, one exemplar with the same pairing key
(:mod:`training.pairs`; CoRe pairs same-difficulty MTL-AQA dives), and minimises J = J_cls + J_reg of the
group-aware regression tree on the relative label s_query - s_exemplar (CoRe, Sec. 3.2).
The tree's group boundaries come from the |delta| of all training pairs within groups (symmetric rule of
the reference code, outer bound = the label scale).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from models.core import CoReHead
from models.gart import GroupBoundaries, gart_loss
from training.pairs import BestEpoch, PairSampler


@dataclass
class CoReTrainConfig:
    hidden: int = 256
    depth: int = 4
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    leaf_activation: str = "sigmoid"
    classification_loss: str = "bce"
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
    pairs = PairSampler(group_keys, config.seed)
    boundaries = GroupBoundaries.from_deltas(
        pairs.deltas(labels.double().numpy()), num_groups=2**config.depth, symmetric=True, score_range=label_scale,
    )
    head = CoReHead(feature_dim=features.shape[1], hidden=config.hidden, depth=config.depth,
                    label_scale=label_scale, leaf_activation=config.leaf_activation)
    # foreach: one multi-tensor update instead of a loop over parameters (benchmarks/bench_core_head.py).
    optimizer = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True)

    best, history = BestEpoch(), []
    for epoch in tqdm(range(1, config.epochs + 1), desc="CoRe head", unit="epoch", disable=not progress):
        head.train()
        totals = np.zeros(3)
        for q, e in pairs.epoch(config.batch_size):
            group_idx, reg_target = boundaries.assign((labels[q] - labels[e]).float())
            log_probs, leaf_values = head(head.pair_features(features[q], features[e], labels[e]))
            loss = gart_loss(log_probs, leaf_values, group_idx, reg_target,
                             classification=config.classification_loss, leaf_activation=config.leaf_activation)
            optimizer.zero_grad(set_to_none=True)
            loss["total"].backward()
            optimizer.step()
            totals += [loss["cls"].item() * len(q), loss["reg"].item() * len(q), len(q)]
        record = {"epoch": epoch, "loss_cls": totals[0] / totals[2], "loss_reg": totals[1] / totals[2]}
        if validate is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
            head.eval()
            record["validation"] = validate(head, boundaries)
            best.update(head, record["validation"], epoch)
        history.append(record)
    best_epoch = best.restore(head, config.epochs)
    return CoReTrainResult(head=head.eval(), boundaries=boundaries, history=history, best_epoch=best_epoch)
