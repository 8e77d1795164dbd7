"""AQA-7 (Parmar and Morris, WACV 2019) in the layout CoRe reads, one action class at a time.

::

    Split_4/split_4_train_list.mat   # variable consolidated_train_list: rows [class_idx, sample_idx, score]
    Split_4/split_4_test_list.mat    # variable consolidated_test_list
    frames/{class_name}-out/{sample:03d}/img_00001.jpg ...   # or {class_name}-out/ at the top level

``class_idx`` counts from 1 in :data:`AQA7_CLASSES` order. Scores are on each sport's own scale; CoRe
trains and reports on ``(score - low) / (high - low) x 100`` with the ranges in
:data:`AQA7_SCORE_RANGES` (its ``utils/misc.py``), which covers classes 1-6: it has no range for
trampoline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from training.datasets.records import DatasetError, DiveRecord, Split

AQA7_CLASSES = (
    "diving",
    "gym_vault",
    "ski_big_air",
    "snowboard_big_air",
    "sync_diving_3m",
    "sync_diving_10m",
    "trampoline",
)
AQA7_SCORE_RANGES: dict[int, tuple[float, float]] = {
    1: (21.6, 102.6),
    2: (12.3, 16.87),
    3: (8.0, 50.0),
    4: (8.0, 50.0),
    5: (46.2, 104.88),
    6: (49.8, 99.36),
}
SPLIT_FILES = {"train": "split_4_train_list.mat", "test": "split_4_test_list.mat"}
SPLIT_VARIABLES = {"train": "consolidated_train_list", "test": "consolidated_test_list"}
_MAX_LISTED = 5


def class_index(action: int | str) -> int:
    """The 1-based AQA-7 class index of ``action`` (an index or a name from :data:`AQA7_CLASSES`)."""
    if isinstance(action, str):
        if action not in AQA7_CLASSES:
            raise DatasetError(f"unknown AQA-7 class {action!r}; classes are {', '.join(AQA7_CLASSES)}")
        return AQA7_CLASSES.index(action) + 1
    if not 1 <= action <= len(AQA7_CLASSES):
        raise DatasetError(f"AQA-7 class index must be 1..{len(AQA7_CLASSES)}, got {action}")
    return action


def scale_to_100(score: float, class_idx: int) -> float:
    """CoRe's per-class scaling: ``(score - low) / (high - low) x 100``."""
    if class_idx not in AQA7_SCORE_RANGES:
        raise DatasetError(
            f"no CoRe score range for AQA-7 class {AQA7_CLASSES[class_idx - 1]} (index {class_idx})"
        )
    low, high = AQA7_SCORE_RANGES[class_idx]
    return (score - low) / (high - low) * 100.0


def load_aqa7(root: str | Path, action: int | str, scaled: bool = True, check_frames: bool = True) -> Split:
    """The split-4 train/test records of one AQA-7 class.

    ``final_score`` is CoRe's 0-100 scaled score when ``scaled`` (the raw score stays in
    ``extra["raw_score"]``), else the raw score. With ``check_frames`` every sample's frames folder
    must exist; the error lists the first few missing.
    """
    root = Path(root)
    idx = class_index(action)
    name = AQA7_CLASSES[idx - 1]
    if scaled and idx not in AQA7_SCORE_RANGES:
        raise DatasetError(f"no CoRe score range for AQA-7 class {name}; load it with scaled=False")
    frames_dir = next(
        (d for d in (root / "frames" / f"{name}-out", root / f"{name}-out") if d.is_dir()), None
    )
    if check_frames and frames_dir is None:
        raise DatasetError(
            f"{root}: no frames folder for {name} (expected frames/{name}-out/ or {name}-out/)"
        )
    splits: dict[str, list[DiveRecord]] = {}
    for subset, filename in SPLIT_FILES.items():
        rows = _read_split(root, filename, SPLIT_VARIABLES[subset])
        records = []
        for class_value, sample_value, score in rows[rows[:, 0] == idx]:
            sample = int(sample_value)
            raw = float(score)
            records.append(
                DiveRecord(
                    key=f"{name}_{sample:03d}",
                    final_score=scale_to_100(raw, idx) if scaled else raw,
                    action_class=name,
                    frames_dir=frames_dir / f"{sample:03d}" if frames_dir is not None else None,
                    extra={"raw_score": raw, "class_idx": int(class_value), "sample_idx": sample},
                )
            )
        splits[subset] = records
    if not splits["train"]:
        raise DatasetError(f"{root}: the split lists have no training samples of class {name} (index {idx})")
    if check_frames:
        absent = [
            r.key for rs in splits.values() for r in rs if r.frames_dir is None or not r.frames_dir.is_dir()
        ]
        if absent:
            listed = ", ".join(absent[:_MAX_LISTED]) + (
                f", ... ({len(absent)} in all)" if len(absent) > _MAX_LISTED else ""
            )
            raise DatasetError(f"{frames_dir}: {len(absent)} samples have no frames folder: {listed}")
    return Split(train=splits["train"], test=splits["test"])


def _read_split(root: Path, filename: str, variable: str) -> np.ndarray:
    path = next((p for p in (root / "Split_4" / filename, root / filename) if p.is_file()), None)
    if path is None:
        raise DatasetError(f"{root}: split file {filename} not found (expected Split_4/{filename})")
    try:
        contents = scipy.io.loadmat(path)
    except (OSError, ValueError, TypeError, NotImplementedError) as err:
        raise DatasetError(f"{path}: not a readable MATLAB file ({err})") from None
    if variable not in contents:
        found = ", ".join(k for k in contents if not k.startswith("__")) or "nothing"
        raise DatasetError(f"{path}: no variable {variable} (found {found})")
    try:
        rows = np.asarray(contents[variable], dtype=float)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: {variable} holds values that are not numbers") from None
    if rows.ndim != 2 or rows.shape[1] != 3:
        raise DatasetError(
            f"{path}: {variable} should have rows [class_idx, sample_idx, score], shape {rows.shape}"
        )
    return rows
