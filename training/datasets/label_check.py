"""Does the diving rule reproduce each labelled final score from its judges?

The rule (FINA/World Aquatics, individual events): with seven judges the two highest and two lowest
awards are dropped, with five judges one at each end; the sum of the middle three is multiplied by
the degree of difficulty. Other panel sizes (synchronised diving's 9 or 11 judges) are skipped.

Tolerance, :data:`TOLERANCE` = 0.05: awards are in half points and difficulties have one decimal, so
the rule's value is a multiple of 0.05. Results are published to 0.01, but some sources print one
decimal, which puts a correct final score up to 0.05 from the rule (MTL-AQA has three such dives:
34.7 for 34.65, 80.8 for 80.85, 57.8 for 57.75). A real disagreement, one middle award half a point
off, moves the score by 0.5 x difficulty (0.75 at MTL-AQA's lowest difficulty, 1.5), far above the
tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.datasets import finediving, folder_csv, mtl_aqa
from training.datasets.records import DatasetError, DiveRecord

TOLERANCE = 0.05
EXACT = 1e-6
DROPPED_PER_END = {7: 2, 5: 1}  # panel size -> awards dropped at each end
_FLOAT_SLACK = 1e-9


@dataclass(frozen=True)
class Mismatch:
    """A dive whose final score the rule does not reproduce."""

    key: str
    judge_scores: tuple[float, ...]
    difficulty: float
    final_score: float
    expected: float

    @property
    def difference(self) -> float:
        """Labelled final score minus the rule's value."""
        return self.final_score - self.expected


@dataclass(frozen=True)
class LabelCheckReport:
    """The outcome over a dataset. ``mismatches`` are sorted largest ``|difference|`` first."""

    source: str
    total: int
    checked: int
    matched: int
    exact: int
    tolerance: float
    mismatches: list[Mismatch]
    skipped: list[tuple[str, str]]  # (key, reason)


def panel_score(judge_scores: Sequence[float], difficulty: float) -> float:
    """The rule's final score: trimmed sum of the awards x difficulty (7 or 5 judges)."""
    n = len(judge_scores)
    if n not in DROPPED_PER_END:
        raise ValueError(f"no rule for a panel of {n} judges (only {', '.join(map(str, DROPPED_PER_END))})")
    drop = DROPPED_PER_END[n]
    return sum(sorted(judge_scores)[drop : n - drop]) * difficulty


def check_records(
    records: Sequence[DiveRecord], tolerance: float = TOLERANCE, source: str = "records"
) -> LabelCheckReport:
    """Apply the rule to every record with judge scores and a difficulty."""
    mismatches: list[Mismatch] = []
    skipped: list[tuple[str, str]] = []
    matched = exact = 0
    for record in records:
        if not record.judge_scores:
            skipped.append((record.key, "no judge scores"))
            continue
        if record.difficulty is None:
            skipped.append((record.key, "no difficulty"))
            continue
        if len(record.judge_scores) not in DROPPED_PER_END:
            skipped.append((record.key, f"{len(record.judge_scores)} judges: no rule for this panel size"))
            continue
        expected = panel_score(record.judge_scores, record.difficulty)
        difference = abs(record.final_score - expected)
        if difference <= tolerance + _FLOAT_SLACK:
            matched += 1
            exact += difference < EXACT
        else:
            mismatches.append(
                Mismatch(
                    record.key, tuple(record.judge_scores), record.difficulty, record.final_score, expected
                )
            )
    mismatches.sort(key=lambda m: (-abs(m.difference), m.key))
    return LabelCheckReport(
        source=source,
        total=len(records),
        checked=len(records) - len(skipped),
        matched=matched,
        exact=exact,
        tolerance=tolerance,
        mismatches=mismatches,
        skipped=skipped,
    )


def check_dataset(
    dataset: str | Path | Sequence[DiveRecord], tolerance: float = TOLERANCE
) -> LabelCheckReport:
    """Check a dataset given as records or as a path, whose layout is detected:

    - a ``.csv`` file: the folder + CSV layout (videos are not required to exist);
    - an MTL-AQA annotation pickle, or a folder holding one (directly or in ``info/``): all its dives;
    - a FineDiving annotation pickle, or a folder holding them (directly or in ``Annotations/``).
    """
    if not isinstance(dataset, (str, Path)):
        return check_records(list(dataset), tolerance)
    path = Path(dataset)
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    if path.is_file() and path.suffix.lower() == ".csv":
        records = folder_csv.load_folder_csv(path, check_files=False)
        return check_records(records, tolerance, f"folder + CSV {path}")
    if path.is_file() and path.name in mtl_aqa.ANNOTATION_FILES:
        return _check_mtl_aqa(path, tolerance)
    if path.is_file() and path.name in (finediving.FINE_GRAINED_FILE, finediving.COARSE_FILE):
        path = path.parent
    if path.is_dir():
        for folder in (path, path / "info"):
            if any((folder / name).is_file() for name in mtl_aqa.ANNOTATION_FILES):
                return _check_mtl_aqa(mtl_aqa.find_annotation_file(folder), tolerance)
        if finediving.find_annotation_files(path):
            records = list(finediving.read_finediving_annotations(path).values())
            return check_records(records, tolerance, f"FineDiving annotations in {path}")
    raise DatasetError(
        f"{path}: not a dataset layout the label check knows: give a labels .csv, an MTL-AQA folder "
        f"with {mtl_aqa.ANNOTATION_FILES[0]} (or info/), or a FineDiving folder with "
        f"{finediving.FINE_GRAINED_FILE}"
    )


def _check_mtl_aqa(annotation_file: Path, tolerance: float) -> LabelCheckReport:
    records = list(mtl_aqa.read_mtl_aqa_annotations(annotation_file).values())
    return check_records(records, tolerance, f"MTL-AQA annotations {annotation_file}")


def format_report(report: LabelCheckReport, max_listed: int = 20) -> str:
    """A plain-text report for the command line."""
    lines = [
        f"Label check: {report.source}",
        ("Rule: 7 judges drop 2 highest + 2 lowest, 5 judges drop 1 at each end; sum of the middle 3 x "
        f"difficulty; match within {report.tolerance:g}"),
        (f"{report.checked} of {report.total} dives checked: {report.matched} match "
        f"({report.exact} exactly), {len(report.mismatches)} do not; {len(report.skipped)} skipped"),
    ]
    if report.mismatches:
        lines += [
            "",
            "Mismatches, largest first ('awards' = diff / DD: -0.5 is one middle award half a point low):",
            f"  {'dive':<24} {'final':>8} {'rule':>8} {'diff':>8} {'DD':>4} {'awards':>7}  judges",
        ]
        for m in report.mismatches[:max_listed]:
            judges = " ".join(f"{s:g}" for s in m.judge_scores)
            lines.append(
                f"  {m.key:<24} {m.final_score:8.2f} {m.expected:8.2f} {m.difference:+8.2f} "
                f"{m.difficulty:4.1f} {m.difference / m.difficulty:+7.2f}  {judges}"
            )
        if len(report.mismatches) > max_listed:
            lines.append(f"  ... {len(report.mismatches) - max_listed} more")
    if report.skipped:
        lines += ["", "Skipped:"]
        lines += [f"  {key}: {reason}" for key, reason in report.skipped[:max_listed]]
        if len(report.skipped) > max_listed:
            lines.append(f"  ... {len(report.skipped) - max_listed} more")
    return "\n".join(lines)
