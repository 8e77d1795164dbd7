"""Frames for end-to-end training, decoded in parallel DataLoader workers, with the reference augmentations.

A dive's *training view* is what its augmentations draw from: the source frames of every allowed temporal
shift, spatially preprocessed but not centre-cropped (:func:`decode_training_view`). Each time a dive is
drawn, one shift, one crop position and one flip are chosen (:func:`augment`), as CoRe's and TPT's training
transforms do (``tools/builder.py`` ``get_video_trans``: RandomHorizontalFlip, Resize, RandomCrop(224);
``datasets/MTLPair.py``: the 103-frame window's end moved by ``random.randint(-3, 3)``):

- temporal jitter: every sampled frame index moves by the same shift ``s`` in ``[-J, J]``; shifts that would
  read past either end of the video are not drawn (the reference fails past the last frame and wraps round
  to the last frames before the first);
- random crop: a ``crop`` x ``crop`` square anywhere in the preprocessed frame (``crop_margin=None``, the
  reference's 224 of a 256 x 455 stretched frame), or within ``crop_margin`` pixels of the centre crop;
- horizontal flip with probability 1/2, per video (a dive filmed from the other side scores the same).

Every draw comes from a generator seeded by (seed, epoch, position in the epoch, role), so a batch does not
depend on which worker loaded it, and a resumed run draws what an uninterrupted one did.

Views are decoded by the DataLoader's worker processes on every draw (the reference's way: no disk beyond
the dataset), or, with a ``cache_dir``, decoded once into one ``.npy`` per dive that later epochs memory-map.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from models.file_hash import file_sha256
from training.datasets.records import DiveRecord
from video.decode import decode_frames, sample_video
from video.frame_folder import load_frames, sample_frame_folder
from video.preprocessing import Preprocessing

_ROLES = {"query": 0, "exemplar": 1}


@dataclass(frozen=True)
class Augmentation:
    """Training augmentations (module docstring); all off: the inference input."""

    temporal_jitter: int = 0
    random_crop: bool = False
    crop_margin: int | None = None  # None: anywhere in the frame; k: within k pixels of the centre crop
    horizontal_flip: bool = False

    def __post_init__(self) -> None:
        if self.temporal_jitter < 0 or (self.crop_margin is not None and self.crop_margin < 0):
            raise ValueError(f"temporal_jitter and crop_margin must be >= 0, got {self}")


class TrainingView(NamedTuple):
    """Frames (U, H, W, 3) uint8 and, for each allowed shift (S,), the row of T positions into them (S, T)."""

    frames: np.ndarray
    positions: np.ndarray
    shifts: np.ndarray


def _view_preprocessing(preprocessing: Preprocessing, augmentation: Augmentation) -> tuple[Preprocessing, bool]:
    """The preprocessing the view is decoded with, and whether it keeps the whole frame (no centre crop)."""
    if not augmentation.random_crop:
        return preprocessing, False
    if augmentation.crop_margin is None:
        return preprocessing, True
    view = preprocessing.crop + 2 * augmentation.crop_margin
    return replace(preprocessing, crop=view), False


def decode_training_view(record: DiveRecord, preprocessing: Preprocessing,
                         augmentation: Augmentation) -> TrainingView:
    """Decode the frames every augmented draw of ``record`` may read (module docstring)."""
    view_preprocessing, full_frame = _view_preprocessing(preprocessing, augmentation)
    if record.video is not None:
        info, base = sample_video(record.video, preprocessing, start_frame=record.start_frame,
                                  end_frame=record.end_frame)
        count = info.frame_count
    elif record.frames_dir is not None:
        files, base = sample_frame_folder(record.frames_dir, preprocessing, record.start_frame, record.end_frame)
        count = len(files)
    else:
        raise ValueError(f"record {record.key} has neither a video nor a frames folder")
    jitter = augmentation.temporal_jitter
    shifts = np.array([s for s in range(-jitter, jitter + 1) if base.min() + s >= 0 and base.max() + s < count])
    wanted, positions = np.unique(base[None, :] + shifts[:, None], return_inverse=True)
    if record.video is not None:
        frames = decode_frames(record.video, wanted, view_preprocessing, info=info, full_frame=full_frame).frames
    else:
        frames = load_frames(files, wanted, view_preprocessing, full_frame=full_frame)
    return TrainingView(frames, positions.reshape(len(shifts), len(base)), shifts)


def centre_offsets(preprocessing: Preprocessing, height: int, width: int) -> tuple[int, int]:
    """(top, left) of the centre crop in a preprocessed frame of this size, by the decoder's own rounding."""
    crop = preprocessing.crop
    if preprocessing.stretch_to is not None:
        return round((height - crop) / 2), round((width - crop) / 2)
    return (height - crop) // 2, (width - crop) // 2


def augment(view: TrainingView, preprocessing: Preprocessing, augmentation: Augmentation,
            rng: np.random.Generator | None) -> np.ndarray:
    """One draw (T, crop, crop, 3) from ``view``; ``rng=None`` gives the unaugmented inference frames."""
    row = int(np.flatnonzero(view.shifts == 0)[0])
    if rng is not None and augmentation.temporal_jitter:
        row = int(rng.integers(len(view.shifts)))
    frames = view.frames[view.positions[row]]
    height, width, crop = frames.shape[1], frames.shape[2], preprocessing.crop
    top, left = centre_offsets(preprocessing, height, width)
    if rng is not None and augmentation.random_crop:
        top, left = int(rng.integers(height - crop + 1)), int(rng.integers(width - crop + 1))
    frames = frames[:, top : top + crop, left : left + crop]
    if rng is not None and augmentation.horizontal_flip and rng.random() < 0.5:
        frames = frames[:, :, ::-1]
    return np.ascontiguousarray(frames)


class ViewSource:
    """Training views of records: decoded on each call, or through a per-dive ``.npy`` cache."""

    def __init__(self, records: Sequence[DiveRecord], preprocessing: Preprocessing, augmentation: Augmentation,
                 cache_dir: Path | None = None) -> None:
        self.records, self.preprocessing, self.augmentation = list(records), preprocessing, augmentation
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)

    def _entry(self, record: DiveRecord) -> Path:
        assert self.cache_dir is not None
        recipe = json.dumps({"preprocessing": self.preprocessing.to_dict(),
                             "jitter": self.augmentation.temporal_jitter, "random_crop": self.augmentation.random_crop,
                             "crop_margin": self.augmentation.crop_margin}, sort_keys=True)
        source = record.video if record.video is not None else record.frames_dir
        ident = file_sha256(source) if source is not None and source.is_file() else str(source)
        digest = hashlib.sha256(f"{recipe}|{ident}|{record.start_frame}|{record.end_frame}".encode()).hexdigest()
        return self.cache_dir / f"view_{digest[:24]}"

    def __call__(self, index: int) -> TrainingView:
        record = self.records[index]
        if self.cache_dir is None:
            return decode_training_view(record, self.preprocessing, self.augmentation)
        entry = self._entry(record)
        frames_path, index_path = entry.with_suffix(".frames.npy"), entry.with_suffix(".index.npy")
        if not index_path.is_file():
            view = decode_training_view(record, self.preprocessing, self.augmentation)
            for path, array in ((frames_path, view.frames), (index_path, np.vstack([view.shifts, view.positions.T]))):
                partial = path.with_suffix(".partial.npy")
                np.save(partial, array)
                partial.replace(path)
            return view
        table = np.load(index_path)
        return TrainingView(np.load(frames_path, mmap_mode="r"), np.ascontiguousarray(table[1:].T), table[0])


class PairClips(Dataset):
    """One epoch's (query, exemplar) pairs as augmented uint8 frames: item i is
    ``{"query": (T, crop, crop, 3), "exemplar": ..., "pair": i}``."""

    def __init__(self, source: ViewSource, queries: np.ndarray, exemplars: np.ndarray, seed: int, epoch: int) -> None:
        self.source, self.queries, self.exemplars = source, queries, exemplars
        self.seed, self.epoch = seed, epoch

    def __len__(self) -> int:
        return len(self.queries)

    def _draw(self, index: int, item: int, role: str) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, self.epoch, item, _ROLES[role]])
        return torch.from_numpy(augment(self.source(index), self.source.preprocessing, self.source.augmentation, rng))

    def __getitem__(self, item: int) -> dict[str, torch.Tensor | int]:
        return {"query": self._draw(int(self.queries[item]), item, "query"),
                "exemplar": self._draw(int(self.exemplars[item]), item, "exemplar"), "pair": item}


class InferenceClips(Dataset):
    """Records' unaugmented input frames (T, crop, crop, 3): the centre of their unshifted views."""

    def __init__(self, source: ViewSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source.records)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(augment(self.source(index), self.source.preprocessing, self.source.augmentation, None))


def make_loader(dataset: Dataset, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    """A DataLoader over ``dataset`` in order, decoding in ``workers`` processes (0: in this process)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=False)
