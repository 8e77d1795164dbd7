"""MTL-AQA (Parmar and Morris, CVPR 2019) in the layout CoRe and TPT read.

Annotations (an ``info`` folder)::

    final_annotations_dict_with_dive_number.pkl   # or final_annotations_dict.pkl (no dive_number)
    train_split_0.pkl, test_split_0.pkl          # lists of (video, clip)

The annotation dict maps ``(video, clip)`` to ``difficulty``, ``judge_scores`` (seven),
``final_score``, ``start_frame``, ``end_frame``, ``dive_number`` and the dive's parts (``position``,
``armstand``, ``rotation_type``, ``ss_no``, ``tw_no``) and ``primary_view``.

Media (optional ``data_root``), per source video ``v``, either

- ``{v:02d}/`` of JPEG frames extracted from the whole source video (CoRe's ``new_total_frames_256s``;
  CoRe reads the 103 frames ending at ``end_frame``, see :func:`reference_frame_window`), or
- ``{v:02d}.mp4`` (or .mkv/.mov/.avi/.webm), the whole source video cut by ``start_frame``/``end_frame``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from training.datasets import safe_pickle
from training.datasets.records import DatasetError, DiveRecord, Split

ANNOTATION_FILES = ("final_annotations_dict_with_dive_number.pkl", "final_annotations_dict.pkl")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm")
REFERENCE_NUM_FRAMES = 103
_PART_FIELDS = ("position", "armstand", "rotation_type", "ss_no", "tw_no", "primary_view")
_POSITION_LETTERS = {0: "D", 1: "B", 2: "C"}  # free, pike, tuck (as the dive numbers in the file show)
_GROUP_DIGITS = {0: "2", 1: "1", 2: "4", 3: "3"}  # rotation_type -> back, forward, inward, reverse
_MAX_LISTED = 5


def dive_key(video: int, clip: int) -> str:
    """The record key of dive ``clip`` in source video ``video``: ``"{video:02d}_{clip:02d}"``."""
    return f"{video:02d}_{clip:02d}"


def find_annotation_file(info_dir: str | Path) -> Path:
    """The annotation pickle in ``info_dir`` (the dive-number version when both are there)."""
    info_dir = Path(info_dir)
    for name in ANNOTATION_FILES:
        if (info_dir / name).is_file():
            return info_dir / name
    raise DatasetError(
        f"{info_dir}: no MTL-AQA annotation file (expected one of {', '.join(ANNOTATION_FILES)})"
    )


def dive_number_from_parts(armstand: int, rotation_type: int, ss_no: int, tw_no: int, position: int) -> str:
    """The FINA dive number spelled by MTL-AQA's dive parts, e.g. (0, 2, 7, 0, 2) -> ``"407C"``.

    Group digit from ``rotation_type`` (6 for an armstand, then the group; 5 for a twister, then the
    group), half somersaults ``ss_no``, half twists ``tw_no``, position letter. Used when the
    annotation file has no ``dive_number`` (the original ``final_annotations_dict.pkl``).
    """
    group = _GROUP_DIGITS[rotation_type]
    twists = str(tw_no) if tw_no else ""
    if armstand:
        body = f"6{group}{ss_no}{twists}"
    elif tw_no:
        body = f"5{group}{ss_no}{tw_no}"
    else:
        body = f"{group}0{ss_no}"
    return body + _POSITION_LETTERS[position]


def read_mtl_aqa_annotations(annotation_file: str | Path) -> dict[tuple[int, int], DiveRecord]:
    """Every dive in the annotation pickle as a media-less record, keyed by ``(video, clip)``."""
    annotation_file = Path(annotation_file)
    raw = safe_pickle.load(annotation_file)
    if not isinstance(raw, dict):
        raise DatasetError(
            f"{annotation_file}: expected a dict keyed by (video, clip), got {type(raw).__name__}"
        )
    records: dict[tuple[int, int], DiveRecord] = {}
    for raw_key, entry in raw.items():
        video, clip = _video_clip(raw_key, annotation_file)
        key = dive_key(video, clip)
        if not isinstance(entry, dict):
            raise DatasetError(
                f"{annotation_file}, dive {key}: expected a dict of labels, got {type(entry).__name__}"
            )
        try:
            judges = tuple(float(s) for s in np.asarray(entry["judge_scores"], dtype=float).ravel())
            parts = {name: int(entry[name]) for name in _PART_FIELDS if name in entry}
            dive_number = entry.get("dive_number")
            if dive_number is None and all(n in parts for n in _PART_FIELDS[:5]):
                dive_number = dive_number_from_parts(
                    parts["armstand"],
                    parts["rotation_type"],
                    parts["ss_no"],
                    parts["tw_no"],
                    parts["position"],
                )
            records[(video, clip)] = DiveRecord(
                key=key,
                final_score=float(entry["final_score"]),
                difficulty=float(entry["difficulty"]),
                action_class=str(dive_number) if dive_number is not None else None,
                judge_scores=judges or None,
                start_frame=int(entry["start_frame"]),
                end_frame=int(entry["end_frame"]),
                extra=parts,
            )
        except KeyError as err:
            raise DatasetError(f"{annotation_file}, dive {key}: missing field {err.args[0]!r}") from None
        except (TypeError, ValueError) as err:
            raise DatasetError(f"{annotation_file}, dive {key}: a label is not a number ({err})") from None
    return records


def load_mtl_aqa(info_dir: str | Path, data_root: str | Path | None = None, split_index: int = 0) -> Split:
    """The train/test split ``split_index`` of MTL-AQA, with media paths when ``data_root`` is given.

    Without ``data_root`` the records carry labels and frame ranges only. With it, every source video
    must be present as a frames folder or a video file (see the module docstring); a frames folder must
    hold at least ``end_frame`` JPEGs for each of its dives. Errors list the first few offenders.
    """
    info_dir = Path(info_dir)
    annotations = read_mtl_aqa_annotations(find_annotation_file(info_dir))
    splits = {}
    for name in ("train", "test"):
        path = info_dir / f"{name}_split_{split_index}.pkl"
        if not path.is_file():
            raise DatasetError(f"{info_dir}: split file {path.name} not found")
        keys = [_video_clip(k, path) for k in _as_list(safe_pickle.load(path), path)]
        unknown = [dive_key(*k) for k in keys if k not in annotations]
        if unknown:
            raise DatasetError(
                f"{path}: {len(unknown)} dives are not in the annotations: {_listing(unknown)}"
            )
        splits[name] = [annotations[k] for k in keys]
    overlap = {r.key for r in splits["train"]} & {r.key for r in splits["test"]}
    if overlap:
        raise DatasetError(
            f"{info_dir}: {len(overlap)} dives are in both splits: {_listing(sorted(overlap))}"
        )
    if data_root is not None:
        media = _locate_media(Path(data_root), splits["train"] + splits["test"])
        splits = {name: [media[r.key] for r in records] for name, records in splits.items()}
    return Split(train=splits["train"], test=splits["test"])


def reference_frame_window(record: DiveRecord, num_frames: int = REFERENCE_NUM_FRAMES) -> range:
    """Positions (0-based, in the sorted frame list of ``record.frames_dir``) CoRe reads for a dive.

    CoRe's MTL-AQA loader takes the ``num_frames`` frames ending just before position ``end_frame``:
    ``range(end_frame - num_frames, end_frame)``, ignoring ``start_frame``.
    """
    if record.end_frame is None:
        raise DatasetError(f"dive {record.key} has no end_frame")
    if record.end_frame < num_frames:
        raise DatasetError(f"dive {record.key}: end_frame {record.end_frame} is before frame {num_frames}")
    return range(record.end_frame - num_frames, record.end_frame)


def _locate_media(data_root: Path, records: list[DiveRecord]) -> dict[str, DiveRecord]:
    if not data_root.is_dir():
        raise DatasetError(f"MTL-AQA data root {data_root} is not a folder")
    sources: dict[str, Path | None] = {}
    frame_counts: dict[str, int] = {}
    located: dict[str, DiveRecord] = {}
    missing: list[str] = []
    short: list[str] = []
    for record in records:
        source = record.key.split("_")[0]
        if source not in sources:
            sources[source] = _find_source(data_root, source)
            if sources[source] is not None and sources[source].is_dir():
                frame_counts[source] = sum(1 for p in sources[source].iterdir() if p.suffix.lower() == ".jpg")
        path = sources[source]
        if path is None:
            missing.append(source)
            continue
        if path.is_dir():
            if record.end_frame is not None and record.end_frame > frame_counts[source]:
                short.append(f"{record.key} (end_frame {record.end_frame} > {frame_counts[source]} frames)")
            located[record.key] = replace(record, frames_dir=path)
        else:
            located[record.key] = replace(record, video=path)
    if missing:
        names = sorted(set(missing))
        raise DatasetError(
            f"{data_root}: no frames folder or video for source(s) {_listing(names)} "
            f"(expected e.g. {names[0]}/ of JPEGs or {names[0]}.mp4)"
        )
    if short:
        raise DatasetError(f"{data_root}: {len(short)} dives end past their frames folder: {_listing(short)}")
    return located


def _find_source(data_root: Path, source: str) -> Path | None:
    folder = data_root / source
    if folder.is_dir():
        return folder
    for suffix in VIDEO_SUFFIXES:
        if (data_root / f"{source}{suffix}").is_file():
            return data_root / f"{source}{suffix}"
    return None


def _video_clip(raw_key: object, path: Path) -> tuple[int, int]:
    if isinstance(raw_key, (tuple, list)) and len(raw_key) == 2:
        try:
            return int(raw_key[0]), int(raw_key[1])
        except (TypeError, ValueError):
            pass
    raise DatasetError(f"{path}: expected (video, clip) integer pairs as keys, found {raw_key!r}")


def _as_list(raw: object, path: Path) -> list[object]:
    if not isinstance(raw, (list, tuple)):
        raise DatasetError(f"{path}: expected a list of (video, clip) pairs, got {type(raw).__name__}")
    return list(raw)


def _listing(items: list[str]) -> str:
    return ", ".join(items[:_MAX_LISTED]) + (
        f", ... ({len(items)} in all)" if len(items) > _MAX_LISTED else ""
    )
