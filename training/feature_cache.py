"""Decode and run the backbone once per video; keep the per-clip features on disk.

Cache entries live under ``cache_dir/<feature fingerprint>/`` and are named by the sha256 of the video
file and the frame range, so a changed video, a changed backbone or changed preprocessing never reuses
a stale entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from models.file_hash import file_sha256
from training.datasets.records import DiveRecord
from video.decode import DecodedVideo, decode_video
from video.frame_folder import decode_frame_folder
from video.preprocessing import Preprocessing

FeatureFn = Callable[[DecodedVideo], torch.Tensor]
BatchFeatureFn = Callable[[np.ndarray], torch.Tensor]
"""uint8 frames of B videos (B, T, H, W, 3) -> per-clip features (B, num_clips, D)."""


def decode_record(record: DiveRecord, preprocessing: Preprocessing) -> DecodedVideo:
    """Decode a record's dive (a video file, or a folder of extracted frames) with ``preprocessing``."""
    if record.video is not None:
        return decode_video(record.video, preprocessing, start_frame=record.start_frame, end_frame=record.end_frame)
    if record.frames_dir is not None:
        return decode_frame_folder(record.frames_dir, preprocessing, start_frame=record.start_frame,
                                   end_frame=record.end_frame)
    raise ValueError(f"record {record.key} has neither a video nor a frames folder")


class FeatureCache:
    """Per-clip features (num_clips, D) of dataset records, computed once and stored as safetensors."""

    def __init__(self, cache_dir: Path, fingerprint: str, preprocessing: Preprocessing, features: FeatureFn):
        self.folder = Path(cache_dir) / fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)
        self.preprocessing = preprocessing
        self.features = features

    def _entry(self, record: DiveRecord) -> Path:
        source = record.video if record.video is not None else record.frames_dir
        if source is None:
            raise ValueError(f"record {record.key} has neither a video nor a frames folder")
        ident = file_sha256(source) if source.is_file() else hashlib.sha256(str(source.resolve()).encode()).hexdigest()
        return self.folder / f"{ident[:32]}_{record.start_frame}_{record.end_frame}.safetensors"

    def get_many(self, records: Sequence[DiveRecord], progress: bool = True) -> torch.Tensor:
        """Stacked per-clip features (N, num_clips, D) in record order; missing entries are computed.

        Decoding of the next video overlaps with the backbone on the current one.
        """
        entries = [self._entry(r) for r in records]
        missing = [i for i, e in enumerate(entries) if not e.is_file()]
        if missing:
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending = pool.submit(decode_record, records[missing[0]], self.preprocessing)
                for n, i in enumerate(tqdm(missing, desc="features", unit="video", disable=not progress)):
                    decoded = pending.result()
                    if n + 1 < len(missing):
                        pending = pool.submit(decode_record, records[missing[n + 1]], self.preprocessing)
                    save_file({"clip_features": self.features(decoded).contiguous()}, str(entries[i]))
        return _load(entries)

    def get_many_from_frames(self, records: Sequence[DiveRecord], frames: np.ndarray, batch_features: BatchFeatureFn,
                             batch_size: int = 16, progress: bool = True) -> torch.Tensor:
        """As :meth:`get_many`, computing missing entries from already decoded frames ``(N, T, H, W, 3)``
        (the fine-tuning's frame cache), ``batch_size`` videos per backbone call, instead of decoding again."""
        entries = [self._entry(r) for r in records]
        missing = [i for i, e in enumerate(entries) if not e.is_file()]
        for first in tqdm(range(0, len(missing), batch_size), desc="features", unit="batch", disable=not progress):
            chunk = missing[first : first + batch_size]
            for i, features in zip(chunk, batch_features(frames[chunk])):
                save_file({"clip_features": features.contiguous()}, str(entries[i]))
        return _load(entries)


def _load(entries: Sequence[Path]) -> torch.Tensor:
    return torch.stack([load_file(str(e))["clip_features"] for e in entries])
