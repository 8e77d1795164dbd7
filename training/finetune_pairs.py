"""End-to-end fine-tuning of the backbone together with a pairwise head, by the head's own loss: the CoRe
and TPT training recipes (``kinetics`` and ``kinetics-tpt`` profiles, ``training/profiles.py``).

Each epoch, every training dive is a query once, with a random exemplar from its pairing group
(``training.pairs``); both videos are drawn with the recipe's augmentations (``training.loader``), decoded by
DataLoader workers. A micro-batch of B queries runs the backbone once on its 2B videos (CoRe: the clip
features averaged per video; TPT: one feature per clip), and the head's loss is taken on both directions of
every pair, (exemplar, query) and (query, exemplar), with the reference's reductions:

    CoRe (``tools/helper.py``):  J = sum_dir [ NLL_dir + sum_leaf MSE_dir,leaf ]        (models.gart.gart_loss)
    TPT (train script):          J = that + sum_layer L_rank + 0.05 sum_layer L_sparsity (models.tpt.tpt_loss)

The gradients of ``accumulate`` micro-batches are summed into one Adam step, whose parameter groups give the
backbone ``backbone_lr_factor`` times the head's learning rate. BatchNorm layers stay in eval mode when
``freeze_batchnorm`` (CoRe's ``fix_bn``): their statistics are the imported ones throughout, their affine
parameters train. The backbone's forward pass runs under autocast in the precision the device does fast
(``training.device``).

After every ``eval_every`` epochs (and the last) the model is scored on the validation dives, never the test
split: the epoch with the best validation Spearman is kept (``best.safetensors``). A checkpoint is written
after every epoch (``last.safetensors``, ``training.checkpoints``) and ``resume`` continues from it. Each
epoch's pairs, augmentations and dropout are seeded by (seed, epoch), so a resumed run computes the same
weights as an uninterrupted one (on the CPU bit for bit; GPU kernels are not all deterministic).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.core import CoReHead
from models.gart import GroupBoundaries
from models.i3d import I3D
from models.subnormals import flush_subnormals_while_training
from training.checkpoints import (
    TrainingState,
    load_best,
    load_checkpoint,
    save_best,
    save_checkpoint,
)
from training.datasets.records import DiveRecord
from training.device import choose_precision
from training.loader import Augmentation, InferenceClips, PairClips, ViewSource, make_loader
from training.pairs import PairSampler, pairing_keys
from training.profiles import EndToEndConfig, HeadName, TrainingProfile
from training.train_core import CoReTrainConfig, core_pair_loss
from training.train_tpt import (
    TPTTrainConfig,
    build_tpt_head,
    ranking_margin,
    tpt_pair_loss,
    tpt_parameter_groups,
)

VALIDATION_BATCH = 8  # videos per backbone call when validating

Validate = Callable[[nn.Module, GroupBoundaries, torch.Tensor, torch.Tensor], float]
"""(head, boundaries, training dives' per-clip features, validation dives' per-clip features) -> score."""


@dataclass
class EndToEndResult:
    """The jointly trained head (the backbone is trained in place) and what the run recorded."""

    head: nn.Module
    boundaries: GroupBoundaries
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    precision: str = "float32"
    device: str = "cpu"
    seconds: float = 0.0


def frozen_batchnorm_train(backbone: nn.Module, freeze_batchnorm: bool) -> None:
    """Training mode, with every BatchNorm in eval mode when ``freeze_batchnorm`` (statistics kept)."""
    backbone.train()
    if freeze_batchnorm:
        for module in backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


class PairStep:
    """One micro-batch of pairs through backbone and head: the loss terms, with both directions."""

    def __init__(self, head_kind: HeadName, backbone: I3D, head: nn.Module, boundaries: GroupBoundaries,
                 profile: TrainingProfile, num_clips: int) -> None:
        self.head_kind, self.backbone, self.head, self.boundaries = head_kind, backbone, head, boundaries
        self.preprocessing = profile.preprocessing
        self.clips = replace(profile.clips, mirror=False)  # training flips at random; mirror averaging is for inference
        self.core_config: CoReTrainConfig = profile.head
        self.tpt_config: TPTTrainConfig = profile.tpt
        self.margin = ranking_margin(num_clips, profile.tpt.num_parts, profile.tpt.ranking_margin,
                                     profile.tpt.cap_ranking_margin)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (N, T, H, W, 3) on the device -> per-clip features (N, C, D) in float32."""
        video = self.preprocessing.normalize(frames)
        return self.clips.run(self.backbone.forward_features, video).float()

    def loss(self, query: torch.Tensor, exemplar: torch.Tensor, query_labels: torch.Tensor,
             exemplar_labels: torch.Tensor, autocast: Any) -> dict[str, torch.Tensor]:
        """Query and exemplar frames (B, T, H, W, 3) uint8 with labels (B,) -> the head's loss terms."""
        batch = len(query)
        with autocast:
            clip_features = self.features(torch.cat([query, exemplar]))
        f_query, f_exemplar = clip_features[:batch], clip_features[batch:]
        if self.head_kind == "core" and not self.core_config.both_directions:
            return core_pair_loss(self.head, self.boundaries, f_query.mean(1), f_exemplar.mean(1), query_labels,
                                  exemplar_labels, self.core_config)
        both_q, both_e = torch.cat([f_query, f_exemplar]), torch.cat([f_exemplar, f_query])
        labels_q = torch.cat([query_labels, exemplar_labels])
        labels_e = torch.cat([exemplar_labels, query_labels])
        if self.head_kind == "tpt":  # TPT always trains both directions (train_tpt.py, the reference)
            return tpt_pair_loss(self.head, self.boundaries, both_q, both_e, labels_q, labels_e, self.tpt_config,
                                 self.margin)
        return core_pair_loss(self.head, self.boundaries, both_q.mean(1), both_e.mean(1), labels_q, labels_e,
                              self.core_config)


def _head_config(head_kind: HeadName, profile: TrainingProfile) -> CoReTrainConfig | TPTTrainConfig:
    if head_kind == "core":
        return profile.head
    if head_kind == "tpt":
        return profile.tpt
    raise ValueError(f"end-to-end fine-tuning trains the CoRe or TPT head, not {head_kind!r}")


def _build_head(head_kind: HeadName, feature_dim: int, label_scale: float, profile: TrainingProfile) -> nn.Module:
    if head_kind == "core":
        config = profile.head
        return CoReHead(feature_dim=feature_dim, hidden=config.hidden, depth=config.depth, label_scale=label_scale,
                        leaf_activation=config.leaf_activation)  # type: ignore[arg-type]
    return build_tpt_head(feature_dim, profile.tpt)


def _optimizer(head_kind: HeadName, backbone: I3D, head: nn.Module, profile: TrainingProfile,
               end_to_end: EndToEndConfig) -> torch.optim.Adam:
    """Adam with the reference's parameter groups: the backbone at ``backbone_lr_factor`` x the head's lr."""
    if head_kind == "core":
        head_lr, weight_decay = profile.head.lr, profile.head.weight_decay
        head_groups: list[dict[str, Any]] = [{"params": list(head.parameters()), "lr": head_lr}]
    else:
        head_lr, weight_decay = profile.tpt.lr_heads, profile.tpt.weight_decay
        head_groups = tpt_parameter_groups(head, profile.tpt)  # type: ignore[arg-type]
    groups = [{"params": list(backbone.parameters()), "lr": head_lr * end_to_end.backbone_lr_factor}, *head_groups]
    return torch.optim.Adam(groups, weight_decay=weight_decay)


def view_source(records: Sequence[DiveRecord], profile: TrainingProfile, cache_dir: Path) -> ViewSource:
    """The records' training views under the profile's augmentations (cached in ``cache_dir/views`` when the
    profile caches frames)."""
    end_to_end = profile.end_to_end
    assert end_to_end is not None
    augmentation = Augmentation(temporal_jitter=end_to_end.temporal_jitter, random_crop=end_to_end.random_crop,
                                crop_margin=end_to_end.crop_margin, horizontal_flip=end_to_end.horizontal_flip)
    return ViewSource(records, profile.preprocessing, augmentation,
                      Path(cache_dir) / "views" if end_to_end.cache_frames else None)


def _recipe_of(profile: TrainingProfile) -> dict[str, Any]:
    """The profile as a checkpoint's identity: everything but the worker count, which changes no result."""
    recipe = profile.to_dict()
    recipe["end_to_end"] = {k: v for k, v in recipe["end_to_end"].items() if k != "workers"}
    return recipe


def training_labels(records: Sequence[DiveRecord], execution: bool) -> torch.Tensor:
    return torch.tensor([r.execution_score if execution else r.final_score for r in records], dtype=torch.float32)


@torch.no_grad()
def clip_features(step: PairStep, source: ViewSource, batch_size: int, workers: int, device: torch.device,
                  mirror: bool) -> torch.Tensor:
    """Per-clip features (N, C, D) on the CPU of ``source``'s records, unaugmented, in float32 (validation)."""
    features = []
    for frames in make_loader(InferenceClips(source), batch_size, workers, device):
        frames = frames.to(device, non_blocking=True)
        out = step.features(frames)
        if mirror:
            out = (out + step.features(frames.flip(-2))) / 2
        features.append(out.cpu())
    return torch.cat(features)


def finetune_pairs(
    backbone: I3D,
    head_kind: HeadName,
    train: Sequence[DiveRecord],
    val: Sequence[DiveRecord],
    profile: TrainingProfile,
    label_scale: float,
    execution_labels: bool,
    checkpoint_dir: Path,
    cache_dir: Path,
    validate: Validate,
    device: torch.device,
    resume: bool = False,
    progress: bool = True,
    recipe: dict[str, Any] | None = None,
) -> EndToEndResult:
    """Train ``backbone`` (in place) and a new ``head_kind`` head end to end; see the module docstring."""
    started = time.perf_counter()
    end_to_end = profile.end_to_end
    if end_to_end is None:
        raise ValueError(f"profile {profile.name!r} has no end_to_end configuration")
    config = _head_config(head_kind, profile)
    if end_to_end.accumulate < 1 or config.batch_size < 1 or config.epochs < 1 or config.eval_every < 1:
        raise ValueError("accumulate, batch_size, epochs and eval_every must all be >= 1")
    seed = config.seed
    labels = training_labels(train, execution_labels)
    sampler = PairSampler(pairing_keys([r.action_class for r in train], [r.difficulty for r in train],
                                       config.pairing),  # type: ignore[arg-type]
                          seed, pair_singletons=config.pair_singletons)
    boundaries = GroupBoundaries.from_deltas(sampler.deltas(labels.double().numpy()),
                                             num_groups=2**config.depth if head_kind == "core" else config.num_groups,
                                             symmetric=True, score_range=label_scale)
    torch.manual_seed(seed)
    head = _build_head(head_kind, backbone.feature_dim, label_scale, profile)
    backbone.to(device)
    head.to(device)
    optimizer = _optimizer(head_kind, backbone, head, profile, end_to_end)
    flush_subnormals_while_training(optimizer)
    precision = choose_precision(device, end_to_end.precision)  # type: ignore[arg-type]
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scales_loss)
    modules = {"backbone": backbone, "head": head}
    recipe = {"profile": _recipe_of(profile), "head": head_kind, **(recipe or {})}
    state = TrainingState(recipe=recipe)
    if resume:
        state = load_checkpoint(checkpoint_dir, modules, optimizer, scaler, recipe)
        if progress:
            tqdm.write(f"resumed after epoch {state.epoch} of {config.epochs} from {checkpoint_dir}")

    train_views, val_views = view_source(train, profile, cache_dir), view_source(val, profile, cache_dir)
    step = PairStep(head_kind, backbone, head, boundaries, profile, profile.clips.num_clips)
    steps_per_epoch = math.ceil(len(sampler.queries) / config.batch_size)
    bar = tqdm(total=config.epochs * steps_per_epoch, initial=state.epoch * steps_per_epoch, unit="batch",
               desc=f"end-to-end {head_kind}", disable=not progress, smoothing=0.05)
    for epoch in range(state.epoch + 1, config.epochs + 1):
        epoch_started = time.perf_counter()
        torch.manual_seed(seed * 100_003 + epoch)  # dropout (TPT) and anything else drawn from torch
        queries, exemplars = sampler.epoch_pairs(np.random.default_rng([seed, epoch]))
        loader = make_loader(PairClips(train_views, queries, exemplars, seed, epoch), config.batch_size,
                             end_to_end.workers, device)
        frozen_batchnorm_train(backbone, end_to_end.freeze_batchnorm)
        head.train()
        totals: dict[str, float] = {}
        optimizer.zero_grad(set_to_none=True)
        for index, batch in enumerate(loader, start=1):
            pair = batch["pair"].numpy()
            loss = step.loss(batch["query"].to(device, non_blocking=True),
                             batch["exemplar"].to(device, non_blocking=True),
                             labels[queries[pair]].to(device), labels[exemplars[pair]].to(device),
                             precision.autocast())
            scaler.scale(loss["total"]).backward()
            if index % end_to_end.accumulate == 0 or index == steps_per_epoch:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
            for name, value in loss.items():
                totals[name] = totals.get(name, 0.0) + value.item() * len(pair)
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{totals['total'] / min(index * config.batch_size, len(queries)):.3f}")
        record: dict[str, float] = {"epoch": epoch, **{f"loss_{k}": v / len(queries) for k, v in totals.items()}}
        record["train_seconds"] = time.perf_counter() - epoch_started
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            backbone.eval()
            mirror = profile.clips.mirror
            features = [clip_features(step, views, VALIDATION_BATCH, end_to_end.workers, device, mirror)
                        for views in (train_views, val_views)]
            record["validation"] = validate(copy.deepcopy(head).cpu().eval(), boundaries, *features)
            if state.best_score is None or record["validation"] > state.best_score:
                state.best_score, state.best_epoch = record["validation"], epoch
                save_best(checkpoint_dir, modules, epoch, record["validation"])
        record["seconds"] = time.perf_counter() - epoch_started
        state.history.append(record)
        state.epoch = epoch
        save_checkpoint(checkpoint_dir, modules, optimizer, scaler, state)
        if progress:
            remaining = (config.epochs - epoch) * np.mean([r["seconds"] for r in state.history[-5:]])
            tqdm.write(f"epoch {epoch}/{config.epochs}: " + ", ".join(
                f"{k.replace('_', ' ')} {v:.4f}" for k, v in record.items() if k not in ("epoch", "seconds",
                                                                                        "train_seconds"))
                + f"; {record['seconds']:.0f} s, about {remaining / 60:.0f} min to go")
    bar.close()
    best_epoch = load_best(checkpoint_dir, modules) or state.epoch
    backbone.eval()
    head.eval()
    return EndToEndResult(head=head.cpu(), boundaries=boundaries, history=state.history, best_epoch=best_epoch,
                          precision=precision.name, device=str(device), seconds=time.perf_counter() - started)
