"""Train PCLN (basic regression + pairwise contrastive module) on cached per-clip feature sequences.

PCLN's time axis is the clip axis here: the backbone's per-clip features (N, C, D) are PCLN's feature
sequences (N, D, T = C) (``PCLN.encode_features``). Its temporal encoder pools time by 4 and its pair map
by 4 more, so it needs C >= 16 clips; the CoRe protocol's 10 clips are too few. We give PCLN TPT's clip
protocol instead (the ``*-tpt`` training profiles: 20 clips of 8 frames over 103 frames), so PCLN and TPT
read the same features and the same cache; no interpolation of the sequence is involved.

Pairs <V_p, V_q> are drawn at random among all training dives (the paper samples from all C(n, 2)
pairs), each dive once per epoch as V_p. The objective is ``models.pcln.pcln_losses`` = L_bs + L_ds +
L_rs in label units; ``label_offset`` / ``label_scale`` of the network are the training labels' mean and
standard deviation (see ``models/pcln.py``). At serve time only the basic regressor runs: no exemplar
votes. The epoch with the best ``validate(model)`` is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from models.pcln import MIN_FRAMES, PCLN, pcln_losses
from models.subnormals import flush_subnormals_while_training
from training.pairs import BestEpoch


@dataclass
class PCLNTrainConfig:
    """Architecture (``PCLN`` widths; paper: regression_hidden 4096, 2048) and recipe."""

    temporal_channels: int = 512
    regression_hidden: tuple[int, int] = (4096, 2048)
    pair_channels: int = 256
    conv_channels: tuple[int, int] = (16, 32)
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-5
    eval_every: int = 5
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PCLNTrainResult:
    model: PCLN
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0


def train_pcln(
    clip_features: torch.Tensor,
    labels: torch.Tensor,
    config: PCLNTrainConfig,
    validate: Callable[[PCLN], float] | None = None,
    progress: bool = True,
) -> PCLNTrainResult:
    """Fit PCLN on (N, C, D) per-clip features and (N,) labels; keep the epoch ``validate`` likes best."""
    if clip_features.dim() != 3 or clip_features.shape[1] < MIN_FRAMES:
        raise ValueError(f"PCLN trains on per-clip features (N, C, D) with C >= {MIN_FRAMES} clips, got shape "
                         f"{tuple(clip_features.shape)}; use a profile with TPT's clip protocol (e.g. cpu-tpt)")
    if len(labels) < 2:
        raise ValueError("PCLN training needs at least two labelled dives")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    labels = labels.float()
    model = PCLN(feature_dim=clip_features.shape[2], num_frames=clip_features.shape[1],
                 temporal_channels=config.temporal_channels, regression_hidden=config.regression_hidden,
                 pair_channels=config.pair_channels, conv_channels=config.conv_channels,
                 label_offset=float(labels.mean()), label_scale=max(float(labels.std()), 1e-3))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    flush_subnormals_while_training(optimizer)
    sequences = clip_features.float().transpose(1, 2)  # (N, D, T)
    count = len(labels)

    best, history = BestEpoch(), []
    terms = ("bs", "ds", "rs")
    for epoch in tqdm(range(1, config.epochs + 1), desc="PCLN", unit="epoch", disable=not progress):
        model.train()
        order = rng.permutation(count)
        totals = dict.fromkeys(terms, 0.0)
        for start in range(0, count, config.batch_size):
            p = order[start : start + config.batch_size]
            q = (p + rng.integers(1, count, size=len(p))) % count  # a random other dive
            p, q = torch.as_tensor(p), torch.as_tensor(q)
            loss = pcln_losses(model.forward_features(sequences[p], sequences[q]), labels[p], labels[q])
            optimizer.zero_grad(set_to_none=True)
            loss["total"].backward()
            optimizer.step()
            for term in terms:
                totals[term] += loss[term].item() * len(p)
        record: dict[str, float] = {"epoch": epoch, **{f"loss_{t}": v / count for t, v in totals.items()}}
        if validate is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
            model.eval()
            record["validation"] = validate(model)
            best.update(model, record["validation"], epoch)
        history.append(record)
    best_epoch = best.restore(model, config.epochs)
    return PCLNTrainResult(model=model.eval(), history=history, best_epoch=best_epoch)
