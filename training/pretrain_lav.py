"""Self-supervised backbone pretraining on unlabelled videos with LAV (Haresh et al., CVPR 2021).

Pairs of videos of the same action are aligned in time: the I3D backbone turns S sampled clips of each
video into per-clip features, ``models.lav.LAVEmbedder`` maps them to 128-d unit vectors, and
``models.lav.lav_loss`` (soft-DTW alignment + alpha x contrastive IDM, LAV Eq. 8) is minimised over the
backbone AND the embedder end to end. The trained backbone is the product (a backbone initialisation
for ``train_model(init_backbone=...)``); the embedder is discarded.

- Data: every video file under a folder (recursively). Scores are never read; when the folder holds a
  ``labels.csv`` with an ``action_class`` column, pairs are drawn within an action class (the videos of
  one class share their stages, as LAV's datasets do), otherwise among all videos.
- Time steps: LAV embeds 20 sampled FRAMES per video; our backbone is a clip network, so one time step is
  one clip of the profile's clip length, at S = 20 start frames drawn without replacement and sorted
  (fewer when the preprocessed video has fewer possible starts). A step's time is its clip's centre
  frame, in frames of the preprocessed video (the profile's ``num_frames``): ``sigma`` (reference 10)
  is counted in those frames.
- Reference configuration (methods.md): gamma 0.1, sigma 10, margin 2.0, alpha 0.5, 128-d embeddings,
  Adam lr 1e-4, weight decay 1e-5. BatchNorm statistics are re-estimated by ``train_model`` afterwards.

Writes ``out/backbone.safetensors`` (I3D, the usual key layout) and ``out/pretrain.json`` (method,
profile, configuration, per-epoch and per-step loss).
"""

from __future__ import annotations

import csv
import json
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from models.i3d import I3D
from models.lav import (
    REFERENCE_ALPHA,
    REFERENCE_EMBEDDING_DIM,
    REFERENCE_FRAMES_PER_VIDEO,
    REFERENCE_GAMMA,
    REFERENCE_MARGIN,
    REFERENCE_SIGMA_FRAMES,
    LAVEmbedder,
    SampledFrames,
    lav_loss,
)
from models.model_dir import BACKBONE_WEIGHTS, ModelDirError
from models.subnormals import flush_subnormals_while_training
from training.datasets.records import DatasetError
from training.pairs import PairSampler, pairing_keys
from training.profiles import TrainingProfile
from video.decode import decode_video
from video.errors import VideoError
from video.preprocessing import Preprocessing
from video.probe import probe_video

PRETRAIN_REPORT = "pretrain.json"
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg"})


@dataclass(frozen=True)
class LAVPretrainConfig:
    """LAV's reference configuration; ``steps_per_video`` clips stand for its sampled frames."""

    epochs: int = 10
    pairs_per_step: int = 1
    steps_per_video: int = REFERENCE_FRAMES_PER_VIDEO
    gamma: float = REFERENCE_GAMMA
    sigma: float = REFERENCE_SIGMA_FRAMES
    margin: float = REFERENCE_MARGIN
    alpha: float = REFERENCE_ALPHA
    hidden: int = 256
    embedding_dim: int = REFERENCE_EMBEDDING_DIM
    lr: float = 1e-4
    weight_decay: float = 1e-5
    seed: int = 0


@dataclass(frozen=True)
class UnlabelledVideo:
    path: Path
    action_class: str | None = None


@dataclass
class LAVPretrainResult:
    backbone_path: Path
    history: list[dict[str, float]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)


def find_videos(folder: Path) -> list[UnlabelledVideo]:
    """Video files under ``folder`` (sorted), with action classes from ``folder/labels.csv`` when it has them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder of videos")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    classes = _action_classes(folder / "labels.csv")
    return [UnlabelledVideo(p, classes.get(p.resolve())) for p in paths]


def _action_classes(labels_csv: Path) -> dict[Path, str]:
    """video path -> action class from a labels CSV's ``video`` and ``action_class`` columns (nothing else read)."""
    if not labels_csv.is_file():
        return {}
    with labels_csv.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    return {(labels_csv.parent / row["video"].strip()).resolve(): row["action_class"].strip()
            for row in rows if (row.get("video") or "").strip() and (row.get("action_class") or "").strip()}


def pretrain_lav(videos_dir: Path, out: Path, profile: TrainingProfile, config: LAVPretrainConfig = LAVPretrainConfig(),
                 init_backbone: Path | None = None, progress: bool = True) -> LAVPretrainResult:
    """Train the profile's I3D with the LAV loss on the videos under ``videos_dir``; see the module docstring."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    videos, skipped = _usable(find_videos(videos_dir))
    if len(videos) < 2:
        raise DatasetError(f"{videos_dir}: LAV pretraining needs at least two readable videos, found {len(videos)}")
    backbone = I3D(width=profile.backbone_width)
    if init_backbone is not None:
        load_backbone_init(backbone, init_backbone)
    embedder = LAVEmbedder(backbone.feature_dim, hidden=config.hidden, embedding_dim=config.embedding_dim)
    optimizer = torch.optim.Adam([*backbone.parameters(), *embedder.parameters()], lr=config.lr,
                                 weight_decay=config.weight_decay)
    flush_subnormals_while_training(optimizer)
    preprocessing, length = profile.preprocessing, profile.clips.length
    positions = preprocessing.num_frames - length + 1
    if positions < 2:
        raise ValueError(f"profile {profile.name!r}: {preprocessing.num_frames} frames leave no room to sample clips "
                         f"of {length} frames")
    steps = min(config.steps_per_video, positions)
    sampler = PairSampler(pairing_keys([v.action_class for v in videos], [None] * len(videos)), config.seed)

    history: list[dict[str, float]] = []
    step_losses: list[float] = []
    for epoch in range(1, config.epochs + 1):
        backbone.train()
        embedder.train()
        pairs = [torch.cat([anchor, partner]).numpy() for anchor, partner in sampler.epoch(config.pairs_per_step)]
        totals = defaultdict(float)
        bar = tqdm(zip(pairs, _decoded_batches(videos, pairs, preprocessing)), total=len(pairs), unit="step",
                   desc=f"LAV epoch {epoch}/{config.epochs}", disable=not progress)
        for pair, frames in bar:
            starts = np.sort(np.stack([rng.choice(positions, steps, replace=False) for _ in pair]), axis=1)
            clips = torch.stack([video[:, s : s + length] for video, row in
                                 zip(map(preprocessing.normalize, frames), starts) for s in row])
            embeddings = embedder(backbone.forward_features(clips).view(len(pair), steps, -1))
            half = len(pair) // 2
            centres = torch.as_tensor(starts + (length - 1) / 2)  # time of each step, in preprocessed frames
            video_length = torch.full((half,), float(preprocessing.num_frames))
            loss = lav_loss(embeddings[:half], embeddings[half:], config.gamma, config.sigma, config.margin,
                            config.alpha, SampledFrames(centres[:half], video_length),
                            SampledFrames(centres[half:], video_length))
            optimizer.zero_grad(set_to_none=True)
            loss["total"].backward()
            optimizer.step()
            step_losses.append(loss["total"].item())
            for name, value in loss.items():
                totals[name] += value.item() * half
            totals["pairs"] += half
            bar.set_postfix(loss=f"{totals['total'] / totals['pairs']:.3f}")
        history.append({"epoch": epoch, **{f"loss_{k}": v / totals["pairs"] for k, v in totals.items() if k != "pairs"}})
    backbone.eval()

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    backbone_path = out / BACKBONE_WEIGHTS
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(backbone_path))
    report = {
        "method": "lav", "videos_dir": str(videos_dir), "num_videos": len(videos),
        "skipped": skipped, "pairs_within_action_class": any(v.action_class for v in videos),
        "profile": profile.name, "backbone": {"width": profile.backbone_width, "feature_dim": backbone.feature_dim},
        "preprocessing": preprocessing.to_dict(), "clip_length": length, "steps_per_video": steps,
        "init_backbone": str(init_backbone) if init_backbone is not None else None,
        "config": asdict(config), "embedder": embedder.config(), "history": history, "step_losses": step_losses,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / PRETRAIN_REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return LAVPretrainResult(backbone_path=backbone_path, history=history, step_losses=step_losses)


def load_backbone_init(backbone: I3D, path: Path) -> dict[str, Any] | None:
    """Load a ``backbone.safetensors`` (or a folder holding one) into ``backbone`` with ``strict=True``;
    return the pretraining report beside it (``pretrain.json``), if there is one."""
    path = Path(path)
    if path.is_dir():
        path = path / BACKBONE_WEIGHTS
    if not path.is_file():
        raise ModelDirError(f"{path}: no backbone weights file")
    try:
        backbone.load_state_dict(load_file(str(path)), strict=True)
    except SafetensorError as exc:
        raise ModelDirError(f"{path} is not a readable safetensors file: {exc}") from exc
    except RuntimeError as exc:
        raise ModelDirError(f"{path} does not fit this profile's I3D (width {backbone.width}): {exc}") from exc
    report = path.parent / PRETRAIN_REPORT
    if not report.is_file():
        return None
    try:
        return json.loads(report.read_text())
    except json.JSONDecodeError as exc:
        raise ModelDirError(f"{report} is not valid JSON: {exc}") from exc


def _usable(videos: list[UnlabelledVideo]) -> tuple[list[UnlabelledVideo], list[dict[str, str]]]:
    """Split videos into those the decoder accepts and (path, reason) of the others."""
    usable, skipped = [], []
    for video in videos:
        try:
            probe_video(video.path, count_frames=True)
            usable.append(video)
        except VideoError as exc:
            skipped.append({"video": str(video.path), "reason": exc.reason})
    return usable, skipped


def _decoded_batches(videos: Sequence[UnlabelledVideo], batches: Sequence[np.ndarray],
                     preprocessing: Preprocessing) -> Iterator[list[np.ndarray]]:
    """uint8 frames (T, H, W, 3) of each batch's videos; the next batch decodes while the current one trains."""
    def decode(batch: np.ndarray) -> list[np.ndarray]:
        return [decode_video(videos[int(i)].path, preprocessing).frames for i in batch]

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(decode, batches[0]) if batches else None
        for n in range(len(batches)):
            frames = pending.result()
            if n + 1 < len(batches):
                pending = pool.submit(decode, batches[n + 1])
            yield frames
