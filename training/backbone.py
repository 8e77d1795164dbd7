"""Preparing the I3D backbone before features are cached.

Two paths, chosen by the profile:

- ``recalibrate_batchnorm``: keep the backbone's weights and re-estimate every BatchNorm's running
  mean/variance on training videos (a cumulative average over batches), so that features of a
  randomly initialised or imported backbone are well scaled for this data.
- ``train_backbone``: fine-tune the backbone end to end on the labelled training dives. The objective
  is direct regression of the label (execution score when difficulty is known) from the clip-averaged
  feature through a linear probe: the cheapest signal that makes the features encode execution. Each
  step sees ``clips_per_step`` random clips of every video (clip features are averaged, so a random
  subset is an unbiased estimate of the mean); the CoRe head is trained afterwards on cached features.
  Optionally the same feature also classifies the dive's action class (``action_class_weight``), the
  auxiliary "what was performed" task of MTL-AQA's multitask learning (Parmar & Morris, CVPR 2019).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.i3d import I3D
from models.model_dir import LabelConfig
from models.subnormals import flush_subnormals_while_training
from training.compute_dtype import DtypeChoice, choose_compute_dtype
from training.datasets.records import DiveRecord
from training.feature_cache import decode_record
from training.frame_cache import cached_frames, oversampled
from training.metrics import spearman
from training.profiles import TrainingProfile


def _clip_batch(frames: np.ndarray | torch.Tensor, starts: Sequence[int], length: int,
                profile: TrainingProfile) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 and clip starts -> (B * len(starts), 3, length, H, W) normalised clips."""
    clips = [profile.preprocessing.normalize(video[s : s + length]) for video in frames for s in starts]
    return torch.stack(clips)


def _jittered_starts(starts: np.ndarray, count: int, jitter: int, last_start: int,
                     rng: np.random.Generator) -> list[int]:
    """``count`` clip starts drawn from the protocol, each shifted by up to +-``jitter`` frames."""
    chosen = rng.choice(starts, size=min(count, len(starts)), replace=False)
    shifted = chosen + rng.integers(-jitter, jitter + 1, size=len(chosen))
    return np.clip(shifted, 0, last_start).tolist()


def fine_tuning_frames(records: Sequence[DiveRecord], profile: TrainingProfile, cache_dir: Path,
                       progress: bool = True) -> np.ndarray:
    """The frame cache fine-tuning reads: (N, T, H, W, 3), or (N, 2T - 1, ...) when it resamples frames."""
    preprocessing = profile.preprocessing
    if profile.backbone.resample_jitter > 0:
        preprocessing = oversampled(preprocessing)
    return cached_frames(records, preprocessing, cache_dir, progress)


def inference_frames(frames: np.ndarray, profile: TrainingProfile) -> np.ndarray:
    """The profile's T frames of every video in a :func:`fine_tuning_frames` cache (a view, no copy)."""
    return frames[:, ::2] if profile.backbone.resample_jitter > 0 else frames


def resample_frames(videos: np.ndarray, num_frames: int, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """T frames of each oversampled video (B, 2T - 1, H, W, 3), spread over a randomly shrunk window.

    The window's start is drawn from [0, jitter] and its end from [2T - 2 - jitter, 2T - 2] (in cached
    frames, half a sampling step each), and T frames are spread uniformly over it, rounding half up: a random
    temporal shift and stretch of a few percent. ``jitter = 0`` gives the even frames, the inference sampling.
    """
    last = videos.shape[1] - 1
    starts = rng.uniform(0.0, jitter, size=len(videos))
    ends = last - rng.uniform(0.0, jitter, size=len(videos))
    positions = np.linspace(starts, ends, num_frames, axis=1)
    indices = np.clip(np.floor(positions + 0.5).astype(np.int64), 0, last)
    return videos[np.arange(len(videos))[:, None], indices]


@torch.no_grad()
def recalibrate_batchnorm(backbone: I3D, records: Sequence[DiveRecord], profile: TrainingProfile,
                          seed: int = 0, progress: bool = True) -> None:
    """Re-estimate BatchNorm running statistics on up to ``batchnorm_videos`` training videos."""
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(records))[: profile.backbone.batchnorm_videos]
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved_momentum = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all batches
    backbone.train()
    for i in tqdm(chosen, desc="batchnorm statistics", unit="video", disable=not progress):
        frames = decode_record(records[int(i)], profile.preprocessing).frames
        backbone.forward_features(_clip_batch(frames[None], profile.clips.starts, profile.clips.length, profile))
    for m, momentum in zip(norms, saved_momentum):
        m.momentum = momentum
    backbone.eval()


@dataclass(frozen=True)
class FineTuning:
    """What :func:`train_backbone` did: per-epoch history and the dtype its steps computed in."""

    history: list[dict[str, float]]
    compute: DtypeChoice


def _probe_step(backbone: I3D, clips: torch.Tensor) -> Callable[[bool], None]:
    """One fine-tuning step's forward and backward (no optimizer step) on a copy of ``backbone``."""
    model = copy.deepcopy(backbone).train()
    probe = nn.Linear(model.feature_dim, 1)

    def step(bfloat16: bool) -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(clips.device.type, dtype=torch.bfloat16, enabled=bfloat16):
            pooled = model.forward_features(clips).float()
        probe(pooled).square().mean().backward()

    return step


def choose_fine_tuning_dtype(backbone: I3D, train_frames: np.ndarray, profile: TrainingProfile) -> DtypeChoice:
    """Resolve the profile's ``compute_dtype`` here, probing with the first batch of the real data.

    The probe leaves the backbone, its BatchNorm statistics and every random stream as they were.
    """
    config = profile.backbone
    videos = train_frames[: config.batch_size]
    if config.resample_jitter > 0:
        videos = inference_frames(videos, profile)
    starts = list(profile.clips.starts)[: config.clips_per_step]
    with torch.random.fork_rng(devices=[]):
        step = _probe_step(backbone, _clip_batch(videos, starts, profile.clips.length, profile))
        return choose_compute_dtype(config.compute_dtype, step)


def train_backbone(backbone: I3D, train: Sequence[DiveRecord], val: Sequence[DiveRecord],
                   profile: TrainingProfile, labels: LabelConfig, cache_dir: Path,
                   progress: bool = True) -> FineTuning:
    """Fine-tune ``backbone`` in place by label regression; returns its per-epoch history and compute dtype.

    Augmentation: with ``resample_jitter > 0`` each video's T frames are resampled from 2T - 1 cached
    ones over a random window (:func:`resample_frames`); a random subset of ``clips_per_step`` clips per
    video, each start jittered by up to +-``temporal_jitter`` frames (CoRe jitters by +-3; a single clip
    over all T frames cannot move); horizontal flips (a dive seen from the other side scores the same).

    Loss: ``MSE(probe(f), z)`` of the standardised label ``z`` from the pooled feature ``f``, plus, with
    ``action_class_weight = w > 0``, ``w * CE(W f, c)``: a linear classifier of the action class ``c`` over the
    classes seen in training (dives without one add nothing). The history reports the two terms apart.

    Compute dtype (``compute_dtype``, :mod:`training.compute_dtype`): float32, or the forward pass under
    bfloat16 autocast (parameters, loss and optimizer in float32) where the CPU runs it faster; ``"auto"``
    checks and times it here. Validation and the features cached afterwards stay float32.
    """
    config = profile.backbone
    if config.validate_every < 1:
        raise ValueError(f"validate_every must be >= 1, got {config.validate_every}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    target = torch.tensor([r.execution_score if labels.kind == "execution" else r.final_score for r in train])
    mean, std = float(target.mean()), float(target.std())
    train_frames = fine_tuning_frames(train, profile, cache_dir, progress)
    val_frames = inference_frames(fine_tuning_frames(val, profile, cache_dir, progress), profile)
    compute = choose_fine_tuning_dtype(backbone, train_frames, profile)
    if progress:
        tqdm.write(f"backbone fine-tuning computes in {compute.dtype}: {compute.reason}")
    probe = nn.Linear(backbone.feature_dim, 1)
    classes = sorted({r.action_class for r in train if r.action_class is not None})
    class_index = torch.tensor([classes.index(r.action_class) if r.action_class in classes else -100 for r in train])
    classifier = nn.Linear(backbone.feature_dim, len(classes)) if config.action_class_weight > 0 and classes else None
    params = list(backbone.parameters()) + list(probe.parameters())
    if classifier is not None:
        params += list(classifier.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    flush_subnormals_while_training(optimizer)
    steps = config.epochs * math.ceil(len(train) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps, pct_start=0.15)
    starts = np.array(profile.clips.starts)
    last_start = profile.preprocessing.num_frames - profile.clips.length
    history = []
    for epoch in range(1, config.epochs + 1):
        backbone.train()
        epoch_started = time.perf_counter()
        order = rng.permutation(len(train))
        total = total_class = 0.0
        bar = tqdm(range(0, len(order), config.batch_size), desc=f"backbone epoch {epoch}/{config.epochs}",
                   unit="batch", disable=not progress)
        for first in bar:
            index = np.sort(order[first : first + config.batch_size])
            chosen = _jittered_starts(starts, config.clips_per_step, config.temporal_jitter, last_start, rng)
            videos = train_frames[index]
            if config.resample_jitter > 0:
                videos = resample_frames(videos, profile.preprocessing.num_frames, config.resample_jitter, rng)
            clips = _clip_batch(videos, chosen, profile.clips.length, profile)
            if rng.random() < 0.5:
                clips = clips.flip(-1)
            with torch.autocast(clips.device.type, dtype=torch.bfloat16, enabled=compute.bfloat16):
                pooled = backbone.forward_features(clips).view(len(index), len(chosen), -1).mean(1).float()
            prediction = probe(pooled).squeeze(1)
            mse = nn.functional.mse_loss(prediction, (target[index] - mean) / std)
            loss = mse
            classes_seen = class_index[index]
            labelled = classes_seen >= 0
            if classifier is not None and labelled.any():
                class_loss = nn.functional.cross_entropy(classifier(pooled[labelled]), classes_seen[labelled])
                loss = loss + config.action_class_weight * class_loss
                total_class += class_loss.item() * int(labelled.sum())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += mse.item() * len(index)
            bar.set_postfix(mse=f"{total / (first + len(index)):.3f}")
        record = {"epoch": epoch, "train_seconds": time.perf_counter() - epoch_started, "train_mse": total / len(train)}
        if classifier is not None:
            record["train_class_cross_entropy"] = total_class / int((class_index >= 0).sum())
        if epoch % config.validate_every == 0 or epoch == config.epochs:
            record["val_spearman"] = _probe_spearman(backbone, probe, val_frames, val, labels, profile)
        history.append(record)
        if progress:
            tqdm.write(f"backbone epoch {epoch}: " + ", ".join(f"{k.replace('_', ' ')} {v:.3f}"
                                                               for k, v in record.items() if k != "epoch"))
    backbone.eval()
    return FineTuning(history, compute)


@torch.no_grad()
def _probe_spearman(backbone: I3D, probe: nn.Linear, frames: np.ndarray, records: Sequence[DiveRecord],
                    labels: LabelConfig, profile: TrainingProfile) -> float:
    backbone.eval()
    predictions = []
    for first in range(0, len(frames), profile.backbone.batch_size):
        videos = profile.preprocessing.normalize(frames[first : first + profile.backbone.batch_size])
        pooled = backbone.extract_clip_features(videos, profile.clips, check_range=False).mean(1)
        predictions.extend(probe(pooled).squeeze(1).tolist())
    truth = [r.execution_score if labels.kind == "execution" else r.final_score for r in records]
    return spearman(predictions, truth)
