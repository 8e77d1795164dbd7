"""One flat row per scored item, for CSV/JSON exports (batch results API and ``aqa batch``).

CSV cells are made safe to open in a spreadsheet: control characters are dropped, and a text cell that
a spreadsheet would read as a formula (starting with = + - @, a tab or a carriage return) is prefixed
with a single quote (OWASP's CSV-injection rule). Numbers are written as they are.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable

from models.results import ScoreResult
from service.schemas import JobError

COLUMNS = (
    "source", "job_id", "status", "score", "interval_low", "interval_high", "interval_method", "difficulty",
    "difficulty_source", "execution_score", "action_class", "vote_spread", "model_id", "model_version",
    "error_code", "error_message", "seconds", "in_distribution", "familiarity_percentile", "familiarity_reasons",
)


def result_row(source: str, job_id: str | None, status: str, result: ScoreResult | None = None,
               error: JobError | None = None) -> dict[str, object]:
    """Flatten an item's outcome; the columns a result or an error does not have stay None."""
    row: dict[str, object] = dict.fromkeys(COLUMNS)
    row.update(source=source, job_id=job_id, status=status)
    if result is not None:
        row.update(
            score=round(result.score, 4), interval_low=round(result.interval.low, 4),
            interval_high=round(result.interval.high, 4), interval_method=result.interval.method,
            difficulty=result.difficulty, difficulty_source=result.difficulty_source,
            execution_score=None if result.execution_score is None else round(result.execution_score, 4),
            action_class=result.action_class, vote_spread=round(result.vote_spread, 4),
            model_id=result.model.id, model_version=result.model.version,
            seconds=round(result.timings["total"], 3) if "total" in result.timings else None,
        )
        if result.familiarity is not None:
            row.update(in_distribution=result.familiarity.in_distribution,
                       familiarity_percentile=result.familiarity.percentile,
                       familiarity_reasons="; ".join(result.familiarity.reasons))
    if error is not None:
        row.update(error_code=error.code, error_message=error.message)
    return row


CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A cell value safe for spreadsheets: '' for None, numbers as they are, text without controls or formulas."""
    if value is None:
        return ""
    if not isinstance(value, str):
        return value
    text = CONTROL_CHARACTERS.sub("", value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_row(row: dict[str, object]) -> dict[str, object]:
    return {k: csv_cell(v) for k, v in row.items()}


def rows_to_csv(rows: Iterable[dict[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(csv_row(row))
    return buffer.getvalue()
