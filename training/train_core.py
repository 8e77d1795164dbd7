"""Train the CoRe head on cached, clip-averaged features.

Each step draws a batch of queries and, for each, one exemplar from the same pair group (the same
action class, as CoRe pairs same-difficulty MTL-AQA dives), and minimises J = J_cls + J_reg of the
group-aware regression tree on the relative label s_query - s_exemplar (CoRe, Sec. 3.2).
The tree's group boundaries come from the |delta| of all training pairs within groups (symmetric rule of
the reference code, outer bound = the label scale).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from models.core import CoReHead
from models.gart import GroupBoundaries, gart_loss


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
    rng = np.random.default_rng(config.seed)
    groups = [g for g in pair_groups(group_keys) if len(g) > 1]
    if not groups:
        raise ValueError("CoRe training needs at least one group with two or more dives")
    partner_pool = {int(i): g for g in groups for i in g}
    trainable = np.array(sorted(partner_pool))
    labels_np = labels.double().numpy()
    boundaries = GroupBoundaries.from_deltas(
        within_group_deltas(labels_np, groups), num_groups=2**config.depth, symmetric=True,
        score_range=label_scale,
    )
    head = CoReHead(feature_dim=features.shape[1], hidden=config.hidden, depth=config.depth,
                    label_scale=label_scale, leaf_activation=config.leaf_activation)
    optimizer = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    best_score, best_state, best_epoch, history = -np.inf, None, 0, []
    for epoch in tqdm(range(1, config.epochs + 1), desc="CoRe head", unit="epoch", disable=not progress):
        head.train()
        order = rng.permutation(trainable)
        totals = np.zeros(3)
        for start in range(0, len(order), config.batch_size):
            query = order[start : start + config.batch_size]
            exemplar = np.array([_partner(partner_pool[int(i)], int(i), rng) for i in query])
            q, e = torch.as_tensor(query), torch.as_tensor(exemplar)
            delta = (labels[q] - labels[e]).float()
            group_idx, reg_target = boundaries.assign(delta)
            log_probs, leaf_values = head(head.pair_features(features[q], features[e], labels[e]))
            loss = gart_loss(log_probs, leaf_values, group_idx, reg_target,
                             classification=config.classification_loss, leaf_activation=config.leaf_activation)
            optimizer.zero_grad(set_to_none=True)
            loss["total"].backward()
            optimizer.step()
            totals += [loss["cls"].item() * len(query), loss["reg"].item() * len(query), len(query)]
        record = {"epoch": epoch, "loss_cls": totals[0] / totals[2], "loss_reg": totals[1] / totals[2]}
        if validate is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
            head.eval()
            record["validation"] = validate(head, boundaries)
            if record["validation"] > best_score:
                best_score, best_epoch = record["validation"], epoch
                best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        history.append(record)
    if best_state is not None:
        head.load_state_dict(best_state)
    else:
        best_epoch = config.epochs
    return CoReTrainResult(head=head.eval(), boundaries=boundaries, history=history, best_epoch=best_epoch)


def _partner(group: np.ndarray, index: int, rng: np.random.Generator) -> int:
    """A random other member of ``index``'s group."""
    while True:
        j = int(group[rng.integers(len(group))])
        if j != index:
            return j
