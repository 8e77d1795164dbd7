"""``aqa batch``: score a folder of videos, or the videos a CSV lists, into one results CSV.

Through a running service (``url``: uploads with the client, a few at a time) or embedded (no url:
the model is loaded here and each video scored with the same ``Scorer.score`` the service uses).

Resumable: each item's row is appended to the output as soon as it is known, and a rerun skips the
items whose row says ``done`` or ``failed`` (the video itself is unusable). Items that met a transient
problem (server unreachable, timeout) get ``error`` rows and are tried again on the next run. At the
end the output is rewritten with one row per item, in input order.
"""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from models.difficulty import check_difficulty
from service.export import COLUMNS, csv_cell, csv_row, result_row
from service.schemas import JobError
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts"})
FINISHED = frozenset({"done", "failed"})
LABELS_CSV = "labels.csv"  # a dataset folder's labels (aqa synth, `aqa train`'s layout)


class BatchInputError(ValueError):
    """The folder or CSV to score cannot be read; the message says why."""


@dataclass(frozen=True)
class BatchInput:
    source: str  # the item's key in the results: its path relative to the folder / as the CSV lists it
    video: Path
    difficulty: float | None = None
    action_class: str | None = None
    competition: str | None = None
    event: str | None = None
    diver: str | None = None
    round: int | None = None


@dataclass
class BatchSummary:
    total: int
    skipped: int  # finished in an earlier run
    done: int
    failed: int
    errors: int  # transient: tried again by the next run


def list_inputs(source: Path) -> list[BatchInput]:
    """Every video file under a folder (sorted), or the rows of a CSV with a 'video' column.

    CSV paths are relative to the CSV's folder; optional columns 'difficulty', 'action_class', and 'competition',
    'event', 'diver', 'round' (a meet: the service files each dive under its event, see GET /v1/events/results).
    A folder holding a ``labels.csv`` (the dataset layout) takes each listed video's difficulty and action class
    from it.
    """
    source = Path(source)
    if source.is_dir():
        listed = _csv_inputs(source / LABELS_CSV) if (source / LABELS_CSV).is_file() else []
        labels = {i.video.resolve(): i for i in listed}
        videos = [p for p in sorted(source.rglob("*")) if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()]
        unlabelled = BatchInput(source="", video=Path())
        return [replace(labels.get(p.resolve(), unlabelled), source=str(p.relative_to(source)), video=p)
                for p in videos]
    if not source.is_file():
        raise BatchInputError(f"{source} is neither a folder nor a CSV file")
    return _csv_inputs(source)


def _csv_inputs(source: Path) -> list[BatchInput]:
    inputs = []
    with source.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        if "video" not in (reader.fieldnames or []):
            raise BatchInputError(f"{source} has no 'video' column")
        for line, row in enumerate(reader, start=2):
            try:
                difficulty = float(row["difficulty"]) if row.get("difficulty") else None
            except ValueError as exc:
                raise BatchInputError(f"{source} line {line}: difficulty {row['difficulty']!r} is not a number") from exc
            try:
                difficulty = None if difficulty is None else check_difficulty(difficulty)
            except ValueError as exc:
                raise BatchInputError(f"{source} line {line}: {exc}") from exc
            try:
                dive_round = int(row["round"]) if row.get("round") else None
            except ValueError as exc:
                raise BatchInputError(f"{source} line {line}: round {row['round']!r} is not a whole number") from exc
            inputs.append(BatchInput(row["video"], source.parent / row["video"], difficulty,
                                     row.get("action_class") or None, competition=row.get("competition") or None,
                                     event=row.get("event") or None, diver=row.get("diver") or None, round=dive_round))
    return inputs


def read_rows(out: Path) -> dict[str, dict[str, str]]:
    """Rows of an earlier run, by source (the last row of an item wins)."""
    if not out.is_file():
        return {}
    with out.open(newline="", encoding="utf-8") as file:
        return {row["source"]: row for row in csv.DictReader(file)}


def run_batch(source: Path, out: Path, *, url: str | None = None, api_key: str | None = None,
              settings: ServiceSettings | None = None, concurrency: int = 2, timeout: float = 600.0,
              progress: bool = True) -> BatchSummary:
    """Score every input not finished in ``out`` yet; per-item failures are rows, never exceptions."""
    inputs = list_inputs(source)
    previous = read_rows(out)  # keyed by the source as written: csv_cell(source)
    todo = [i for i in inputs if previous.get(csv_cell(i.source), {}).get("status") not in FINISHED]
    summary = BatchSummary(total=len(inputs), skipped=len(inputs) - len(todo), done=0, failed=0, errors=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    new_file = not out.is_file() or out.stat().st_size == 0
    with out.open("a", newline="", encoding="utf-8") as file, \
            tqdm(total=len(inputs), initial=summary.skipped, unit="video", file=sys.stderr, disable=not progress) as bar:
        writer = csv.DictWriter(file, fieldnames=COLUMNS, lineterminator="\n")
        if new_file:
            writer.writeheader()

        def record(row: dict[str, object]) -> None:
            safe = csv_row(row)
            writer.writerow(safe)
            file.flush()
            previous[str(safe["source"])] = {k: str(v) for k, v in safe.items()}
            status = row["status"]
            summary.done += status == "done"
            summary.failed += status == "failed"
            summary.errors += status == "error"
            bar.update(1)

        if url is not None:
            _score_remote(todo, url, api_key, concurrency, timeout, record)
        else:
            _score_embedded(todo, settings or ServiceSettings(), record)
    _rewrite(out, [previous[csv_cell(i.source)] for i in inputs if csv_cell(i.source) in previous])
    return summary


def _score_remote(todo: list[BatchInput], url: str, api_key: str | None, concurrency: int, timeout: float,
                  record: Callable[[dict[str, object]], None]) -> None:
    import httpx

    from service.client import ApiError, ScoringClient

    def score(item: BatchInput) -> dict[str, object]:
        try:
            job = client.score(item.video, timeout=timeout, difficulty=item.difficulty, action_class=item.action_class,
                               competition=item.competition, event=item.event, diver=item.diver, round=item.round)
        except ApiError as exc:
            if exc.status in (400, 413, 415, 422):  # the item itself is refused: final
                return result_row(item.source, None, "failed", error=JobError(code=exc.code, message=exc.message))
            return result_row(item.source, None, "error", error=JobError(code=exc.code, message=exc.message))
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            return result_row(item.source, None, "error", error=JobError(code="unreachable", message=str(exc)))
        return result_row(item.source, job.id, job.status.value, job.result, job.error)

    with ScoringClient(url, api_key=api_key, timeout=timeout) as client, ThreadPoolExecutor(concurrency) as pool:
        try:
            for future in as_completed([pool.submit(score, item) for item in todo]):
                record(future.result())
        except KeyboardInterrupt:  # Ctrl-C: upload nothing more; the uploads in flight end, a rerun resumes
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _score_embedded(todo: list[BatchInput], settings: ServiceSettings,
                    record: Callable[[dict[str, object]], None]) -> None:
    """Score with the model loaded here, pipelined (``Scorer.score_stream``): the next videos decode while the
    backbone and the votes work on the previous ones, several videos' clips in one forward pass."""
    from models.scorer import QueryLabels, ScoreRequest
    from video.errors import VideoError
    from workers.model_cache import get_scorer
    from workers.runner import refusal

    if not todo:
        return
    scorer = get_scorer(settings)
    requests = [ScoreRequest(item.video, QueryLabels(item.difficulty, item.action_class)) for item in todo]
    for item, (_, outcome) in zip(todo, scorer.score_stream(requests, limits=settings.video_limits), strict=True):
        if isinstance(outcome, VideoError):
            record(result_row(item.source, None, "failed", error=JobError(code=outcome.code, message=outcome.reason)))
        elif isinstance(outcome, Exception):  # reported per item; the batch goes on
            log.error("scoring %s failed", item.video, exc_info=outcome)
            record(result_row(item.source, None, "failed",
                              error=JobError(code="internal_error", message=str(outcome))))
        elif (refused := refusal(outcome, settings)) is not None:
            record(result_row(item.source, None, "failed", error=refused))
        else:
            record(result_row(item.source, None, "done", outcome))


def _rewrite(out: Path, rows: list[dict[str, str]]) -> None:
    partial = out.with_suffix(out.suffix + ".partial")
    with partial.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(out)
