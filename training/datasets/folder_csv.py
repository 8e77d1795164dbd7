"""The plain layout: a folder of videos and one CSV of labels, plus a deterministic train/test split.

CSV columns (header required, order free)::

    video,final_score,difficulty[,action_class][,judge_1,...,judge_k]

``video`` is a path relative to the CSV's folder; ``difficulty`` may be left empty; ``action_class``
and the judge columns are optional, with any number of judges. A row may leave trailing judge cells
empty (a five-judge dive in a file with seven judge columns), but not a gap in the middle.
"""

from __future__ import annotations

import csv
import math
import random
import re
from collections import defaultdict
from dataclasses import fields
from pathlib import Path

from training.datasets.records import DatasetError, DiveRecord, Split

REQUIRED_COLUMNS = ("video", "final_score", "difficulty")
_JUDGE_COLUMN = re.compile(r"judge_(\d+)")
_MAX_LISTED = 5


def load_folder_csv(csv_path: str | Path, check_files: bool = True) -> list[DiveRecord]:
    """Read the label CSV at ``csv_path`` into records keyed by the ``video`` cell.

    With ``check_files`` every video must exist (content is not inspected); the error lists the first
    few missing ones. Raises :class:`DatasetError` for missing columns, duplicate videos and cells that
    are not numbers (naming the CSV line).
    """
    csv_path = Path(csv_path)
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or []]
            rows = [
                ({k.strip(): (v or "").strip() for k, v in row.items() if k}, reader.line_num)
                for row in reader
            ]
    except OSError as err:
        raise DatasetError(f"cannot read {csv_path}: {err.strerror or err}") from None
    except (csv.Error, UnicodeDecodeError) as err:
        raise DatasetError(f"{csv_path} is not a readable UTF-8 CSV: {err}") from None

    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise DatasetError(
            f"{csv_path}: missing column(s) {', '.join(missing)}; the header must contain "
            f"{','.join(REQUIRED_COLUMNS)}[,action_class,judge_1..judge_k], "
            f"found {','.join(header) or 'nothing'}"
        )
    judge_columns = sorted((c for c in header if _JUDGE_COLUMN.fullmatch(c)), key=lambda c: int(c[6:]))
    has_class = "action_class" in header

    folder = csv_path.parent
    records: list[DiveRecord] = []
    seen: dict[str, int] = {}
    for row, line in rows:
        name = row.get("video", "")
        if not name:
            raise DatasetError(f"{csv_path}, line {line}: empty video cell")
        if name in seen:
            raise DatasetError(f"{csv_path}, line {line}: video {name!r} already listed on line {seen[name]}")
        seen[name] = line
        difficulty_cell = row.get("difficulty", "")
        records.append(
            DiveRecord(
                key=name,
                final_score=_number(row.get("final_score", ""), "final_score", csv_path, line),
                difficulty=_number(difficulty_cell, "difficulty", csv_path, line)
                if difficulty_cell
                else None,
                action_class=(row.get("action_class") or None) if has_class else None,
                judge_scores=_judges(row, judge_columns, csv_path, line),
                video=folder / name,
            )
        )
    if not records:
        raise DatasetError(f"{csv_path}: no rows below the header")
    if check_files:
        absent = [r.key for r in records if r.video is not None and not r.video.is_file()]
        if absent:
            listed = ", ".join(absent[:_MAX_LISTED]) + (", ..." if len(absent) > _MAX_LISTED else "")
            raise DatasetError(
                f"{csv_path}: {len(absent)} of {len(records)} videos not found under {folder}: {listed}"
            )
    return records


def _number(cell: str, column: str, csv_path: Path, line: int) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise DatasetError(f"{csv_path}, line {line}: {column} {cell!r} is not a number") from None
    if not math.isfinite(value):
        raise DatasetError(f"{csv_path}, line {line}: {column} {cell!r} is not a finite number")
    return value


def _judges(row: dict[str, str], columns: list[str], csv_path: Path, line: int) -> tuple[float, ...] | None:
    cells = [row.get(c, "") for c in columns]
    while cells and not cells[-1]:
        cells.pop()
    if not cells:
        return None
    if "" in cells:
        gap = columns[cells.index("")]
        raise DatasetError(f"{csv_path}, line {line}: {gap} is empty but a later judge column is filled")
    return tuple(
        _number(cell, column, csv_path, line)
        for cell, column in zip(cells, columns[: len(cells)], strict=True)
    )


def split_records(
    records: list[DiveRecord],
    test_fraction: float,
    seed: int = 0,
    stratify_by: str | None = "action_class",
) -> Split:
    """Split ``records`` into train and test, the same way for the same keys, seed and fraction.

    Records are grouped by the ``stratify_by`` field (``None`` values form their own group; pass
    ``stratify_by=None`` for no grouping). Each group is sorted by key and shuffled with a generator
    seeded by ``(seed, group)``, so the result does not depend on input order and adding a group does
    not reshuffle the others. The test set has ``round(len(records) * test_fraction)`` records, shared
    among the groups in proportion to their size (largest remainders get the rounding).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    names = {f.name for f in fields(DiveRecord)}
    if stratify_by is not None and stratify_by not in names:
        raise ValueError(
            f"cannot stratify by {stratify_by!r}: DiveRecord fields are {', '.join(sorted(names))}"
        )
    keys = [r.key for r in records]
    if len(set(keys)) != len(keys):
        raise DatasetError("record keys are not unique; cannot split deterministically")

    groups: dict[str, list[DiveRecord]] = defaultdict(list)
    for record in records:
        groups[repr(getattr(record, stratify_by)) if stratify_by else ""].append(record)
    names_sorted = sorted(groups)
    quotas = {g: len(groups[g]) * test_fraction for g in names_sorted}
    n_test = {g: int(quotas[g]) for g in names_sorted}
    leftover = round(len(records) * test_fraction) - sum(n_test.values())
    for g in sorted(names_sorted, key=lambda g: (-(quotas[g] - n_test[g]), g))[: max(leftover, 0)]:
        n_test[g] += 1

    train: list[DiveRecord] = []
    test: list[DiveRecord] = []
    for g in names_sorted:
        members = sorted(groups[g], key=lambda r: r.key)
        random.Random(f"{seed}:{g}").shuffle(members)
        test.extend(members[: n_test[g]])
        train.extend(members[n_test[g] :])
    return Split(train=sorted(train, key=lambda r: r.key), test=sorted(test, key=lambda r: r.key))
