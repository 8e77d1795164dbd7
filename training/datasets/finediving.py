"""FineDiving (Xu et al., CVPR 2022) in its published layout.

Annotations, in the dataset folder itself, its ``Annotations/`` or (splits) ``train_test_split/``::

    FineDiving_fine-grained_annotation.pkl   # {(video_name, idx): {...}}
    FineDiving_coarse_annotation.pkl         # {(video_name, idx): {...}}
    train_split.pkl, test_split.pkl          # lists of (video_name, idx)

Each dive's dict holds, per the dataset README, ``action_type`` (dive number, e.g. ``"407C"``),
``dive_score``, ``difficulty``, ``judge_scores``, ``start_frame``/``end_frame`` (in the untrimmed
source video) and, fine-grained, ``steps_transit_frames`` (frame numbers where one step of the
procedure gives way to the next), ``frames_labels`` (a step label per frame) and ``sub-action_types``.
Both files are merged per dive, the fine-grained values winning.

Frames (optional ``frames_root``): ``{frames_root}/{video_name}/{idx}/`` holding only the dive's JPEGs,
named by source frame number (``00489.jpg`` ...). The records therefore leave ``start_frame``/
``end_frame`` unset (the whole folder is the dive) and keep the source frame range in ``extra``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from training.datasets import safe_pickle
from training.datasets.records import DatasetError, DiveRecord, Split

FINE_GRAINED_FILE = "FineDiving_fine-grained_annotation.pkl"
COARSE_FILE = "FineDiving_coarse_annotation.pkl"
SPLIT_FILES = {"train": "train_split.pkl", "test": "test_split.pkl"}
_ANNOTATION_DIRS = (".", "Annotations")
_SPLIT_DIRS = (".", "Annotations", "train_test_split")
_MAX_LISTED = 5


def dive_key(video_name: str, idx: int) -> str:
    """The record key of dive ``idx`` of competition video ``video_name``: ``"{video_name}_{idx}"``."""
    return f"{video_name}_{idx}"


def find_annotation_files(root: str | Path) -> list[Path]:
    """The FineDiving annotation pickles under ``root`` (fine-grained first); empty when there are none."""
    root = Path(root)
    found = []
    for name in (FINE_GRAINED_FILE, COARSE_FILE):
        for sub in _ANNOTATION_DIRS:
            if (root / sub / name).is_file():
                found.append((root / sub / name).resolve())
                break
    return found


def read_finediving_annotations(root: str | Path) -> dict[tuple[str, int], DiveRecord]:
    """Every annotated dive under ``root`` as a media-less record, keyed by ``(video_name, idx)``."""
    root = Path(root)
    files = find_annotation_files(root)
    if not files:
        raise DatasetError(f"{root}: no FineDiving annotation file ({FINE_GRAINED_FILE} or {COARSE_FILE})")
    merged: dict[tuple[str, int], dict[str, object]] = {}
    for path in reversed(files):  # coarse first, so fine-grained values overwrite
        raw = safe_pickle.load(path)
        if not isinstance(raw, dict):
            raise DatasetError(
                f"{path}: expected a dict keyed by (video_name, idx), got {type(raw).__name__}"
            )
        for raw_key, entry in raw.items():
            key = _video_idx(raw_key, path)
            if not isinstance(entry, dict):
                raise DatasetError(
                    f"{path}, dive {dive_key(*key)}: expected a dict, got {type(entry).__name__}"
                )
            merged.setdefault(key, {}).update(entry)
    return {key: _record(key, entry, root) for key, entry in merged.items()}


def load_finediving(root: str | Path, frames_root: str | Path | None = None) -> Split:
    """FineDiving's train/test split; with ``frames_root`` every dive's frames folder must exist."""
    root = Path(root)
    annotations = read_finediving_annotations(root)
    splits: dict[str, list[DiveRecord]] = {}
    for name, filename in SPLIT_FILES.items():
        path = next((root / d / filename for d in _SPLIT_DIRS if (root / d / filename).is_file()), None)
        if path is None:
            raise DatasetError(f"{root}: split file {filename} not found in {', '.join(_SPLIT_DIRS)}")
        raw = safe_pickle.load(path)
        if not isinstance(raw, (list, tuple)):
            raise DatasetError(
                f"{path}: expected a list of (video_name, idx) pairs, got {type(raw).__name__}"
            )
        keys = [_video_idx(k, path) for k in raw]
        unknown = [dive_key(*k) for k in keys if k not in annotations]
        if unknown:
            raise DatasetError(
                f"{path}: {len(unknown)} dives are not in the annotations: {_listing(unknown)}"
            )
        splits[name] = [annotations[k] for k in keys]
    overlap = {r.key for r in splits["train"]} & {r.key for r in splits["test"]}
    if overlap:
        raise DatasetError(f"{root}: {len(overlap)} dives are in both splits: {_listing(sorted(overlap))}")
    if frames_root is not None:
        frames_root = Path(frames_root)
        if not frames_root.is_dir():
            raise DatasetError(f"FineDiving frames root {frames_root} is not a folder")
        splits = {name: [_with_frames(r, frames_root) for r in records] for name, records in splits.items()}
        absent = [r.key for records in splits.values() for r in records if not r.frames_dir.is_dir()]
        if absent:
            raise DatasetError(
                f"{frames_root}: {len(absent)} dives have no frames folder "
                f"(expected {{video_name}}/{{idx}}/): {_listing(absent)}"
            )
    return Split(train=splits["train"], test=splits["test"])


def _record(key: tuple[str, int], entry: dict[str, object], root: Path) -> DiveRecord:
    name = dive_key(*key)
    try:
        judges = entry.get("judge_scores")
        judge_scores = (
            tuple(float(s) for s in np.asarray(judges, dtype=float).ravel()) if judges is not None else ()
        )
        difficulty = entry.get("difficulty")
        extra: dict[str, object] = {"video_name": key[0], "idx": key[1]}
        for field, target in (("start_frame", "source_start_frame"), ("end_frame", "source_end_frame")):
            if entry.get(field) is not None:
                extra[target] = int(entry[field])  # type: ignore[arg-type]
        if entry.get("steps_transit_frames") is not None:
            extra["steps_transit_frames"] = tuple(
                int(f) for f in np.asarray(entry["steps_transit_frames"]).ravel()
            )
        if entry.get("frames_labels") is not None:
            extra["frames_labels"] = tuple(int(f) for f in np.asarray(entry["frames_labels"]).ravel())
        if isinstance(entry.get("sub-action_types"), dict):
            extra["sub_action_types"] = dict(entry["sub-action_types"])  # type: ignore[arg-type]
        return DiveRecord(
            key=name,
            final_score=float(entry["dive_score"]),  # type: ignore[arg-type]
            difficulty=float(difficulty) if difficulty is not None else None,  # type: ignore[arg-type]
            action_class=str(entry["action_type"]) if entry.get("action_type") is not None else None,
            judge_scores=judge_scores or None,
            extra=extra,
        )
    except KeyError as err:
        raise DatasetError(f"{root}, dive {name}: missing field {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{root}, dive {name}: a label is not a number ({err})") from None


def _with_frames(record: DiveRecord, frames_root: Path) -> DiveRecord:
    return replace(
        record, frames_dir=frames_root / str(record.extra["video_name"]) / str(record.extra["idx"])
    )


def _video_idx(raw_key: object, path: Path) -> tuple[str, int]:
    if isinstance(raw_key, (tuple, list)) and len(raw_key) == 2 and isinstance(raw_key[0], str):
        try:
            return raw_key[0], int(raw_key[1])
        except (TypeError, ValueError):
            pass
    raise DatasetError(f"{path}: expected (video_name, idx) pairs as keys, found {raw_key!r}")


def _listing(items: list[str]) -> str:
    return ", ".join(items[:_MAX_LISTED]) + (
        f", ... ({len(items)} in all)" if len(items) > _MAX_LISTED else ""
    )
