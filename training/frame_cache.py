"""Decoded, preprocessed frames of many videos in one memory-mapped file, for end-to-end training.

Fine-tuning the backbone reads every training video once per epoch; decoding it each time would cost
as much as the training step. The frames are decoded once into ``uint8 (N, T, H, W, 3)`` on disk and
memory-mapped, so the operating system pages them in as needed instead of holding them all in RAM.
The file is named by the preprocessing and the videos' content hashes, so it is reused across runs.
Videos are decoded by a pool of ``workers`` processes (PyAV's own threads help little on small frames).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.file_hash import file_sha256
from training.datasets.records import DiveRecord
from training.feature_cache import decode_record
from video.preprocessing import Preprocessing


def oversampled(preprocessing: Preprocessing) -> Preprocessing:
    """The same preprocessing with 2T - 1 frames, whose even frames are exactly ``preprocessing``'s T frames.

    Uniform sampling rounds ``first + t (last - first) / (T - 1)`` half up; frame 2t of 2T - 1 sits at the
    same position, so it is the same source frame (tests check it over many lengths). The odd frames lie
    half a sampling step between them, for temporal resampling during fine-tuning.
    """
    if preprocessing.sampling != "uniform":
        raise ValueError(f"oversampling needs uniform frame sampling, not {preprocessing.sampling!r}")
    return replace(preprocessing, num_frames=2 * preprocessing.num_frames - 1)


def _decode_frames(record: DiveRecord, preprocessing: Preprocessing) -> np.ndarray:
    return decode_record(record, preprocessing).frames


def cached_frames(records: Sequence[DiveRecord], preprocessing: Preprocessing, cache_dir: Path,
                  progress: bool = True, workers: int = 2) -> np.memmap:
    """Read-only memmap of the records' frames ``(N, T, crop, crop, 3)``, decoding what is missing."""
    identity = hashlib.sha256(json.dumps(preprocessing.to_dict(), sort_keys=True).encode())
    for record in records:
        source = record.video if record.video is not None else record.frames_dir
        identity.update(f"{file_sha256(source) if source.is_file() else source}:{record.start_frame}:"
                        f"{record.end_frame}".encode())
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"frames_{identity.hexdigest()[:20]}.u8"
    shape = (len(records), preprocessing.num_frames, preprocessing.crop, preprocessing.crop, 3)
    if not path.is_file():
        unfinished = path.with_suffix(".partial")
        frames = np.lib.format.open_memmap(unfinished, mode="w+", dtype=np.uint8, shape=shape)
        decode = partial(_decode_frames, preprocessing=preprocessing)
        pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else nullcontext()
        with pool:
            decoded = pool.map(decode, records, chunksize=8) if workers > 1 else map(decode, records)
            for i, video in enumerate(tqdm(decoded, total=len(records), desc="decode frames", unit="video",
                                           disable=not progress)):
                frames[i] = video
        frames.flush()
        del frames
        unfinished.rename(path)
    return np.load(path, mmap_mode="r")
