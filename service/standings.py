"""An event's results as a competition table: every dive, each diver's total and rank.

A diver's total is the sum of their counted dives' scores. A dive counts when it is done and is the
latest done job of its diver and round (a dive scored again replaces the earlier score; dives without
a round all count). Divers are ranked by total rounded to 2 decimals, as results are published:
equal totals share a rank and the ranks after them are skipped (standard competition ranking,
1-2-2-4). Dives without a diver are listed but not ranked.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime

from service.schemas import DiverStanding, EventDive, EventResults, JobRecord, JobStatus

CSV_COLUMNS = (
    "competition", "event", "diver", "round", "source", "job_id", "status", "action_class", "difficulty",
    "difficulty_source", "score", "interval_low", "interval_high", "counted", "diver_total", "diver_rank",
    "error_code", "error_message",
)


def event_results(competition: str | None, event: str | None, records: list[JobRecord]) -> EventResults:
    dives = sorted((_dive(record) for record in records), key=_dive_order)
    _mark_counted(dives)
    counts = {status.value: 0 for status in JobStatus}
    for dive in dives:
        counts[dive.status.value] += 1
    finished = counts["done"] + counts["failed"]
    return EventResults(
        competition=competition, event=event, total=len(dives), counts=counts,
        progress=finished / len(dives) if dives else 1.0, finished=finished == len(dives),
        standings=rank_divers(dives), dives=dives,
    )


def rank_divers(dives: list[EventDive]) -> list[DiverStanding]:
    """Standings in rank order (competition ranking on totals to 2 decimals); unscored divers last."""
    by_diver: dict[str, list[EventDive]] = defaultdict(list)
    for dive in dives:
        if dive.diver is not None:
            by_diver[dive.diver].append(dive)
    standings = []
    for diver, own in by_diver.items():
        counted = [d.score for d in own if d.counted]
        standings.append(DiverStanding(
            rank=None, diver=diver, total=round(sum(counted), 2), dives_counted=len(counted),
            dives_pending=sum(not d.status.finished for d in own),
            dives_failed=sum(d.status is JobStatus.failed for d in own),
        ))
    scored = sorted((s for s in standings if s.dives_counted), key=lambda s: (-s.total, s.diver))
    for position, standing in enumerate(scored, start=1):
        tied_with_previous = position > 1 and standing.total == scored[position - 2].total
        standing.rank = scored[position - 2].rank if tied_with_previous else position
    unscored = sorted((s for s in standings if not s.dives_counted), key=lambda s: s.diver)
    return scored + unscored


def results_csv(results: EventResults) -> str:
    """One row per dive, with its diver's total and rank."""
    standing = {s.diver: s for s in results.standings}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for dive in results.dives:
        diver = standing.get(dive.diver) if dive.diver is not None else None
        row = {
            "competition": results.competition, "event": results.event, "diver": dive.diver, "round": dive.round,
            "source": dive.source_name, "job_id": dive.job_id, "status": dive.status.value,
            "action_class": dive.action_class, "difficulty": dive.difficulty,
            "difficulty_source": dive.difficulty_source, "score": _rounded(dive.score),
            "interval_low": _rounded(dive.interval_low), "interval_high": _rounded(dive.interval_high),
            "counted": "yes" if dive.counted else "no",
            "diver_total": f"{diver.total:.2f}" if diver is not None else None,
            "diver_rank": diver.rank if diver is not None else None,
            "error_code": dive.error.code if dive.error else None,
            "error_message": dive.error.message if dive.error else None,
        }
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def _dive(record: JobRecord) -> EventDive:
    request, result = record.request, record.result
    return EventDive(
        job_id=record.id, status=record.status, source_name=request.source_name, diver=request.diver,
        round=request.round, action_class=request.action_class,
        difficulty=result.difficulty if result is not None and result.difficulty is not None else request.difficulty,
        difficulty_source=result.difficulty_source if result is not None else None,
        score=result.score if result is not None else None,
        interval_low=result.interval.low if result is not None else None,
        interval_high=result.interval.high if result is not None else None,
        counted=False, error=record.error,
        created_at=datetime.fromtimestamp(record.created_at).astimezone(),
    )


def _dive_order(dive: EventDive) -> tuple:
    no_round = dive.round is None
    return (no_round, dive.round or 0, dive.diver is None, dive.diver or "", dive.created_at, dive.job_id)


def _mark_counted(dives: list[EventDive]) -> None:
    """Done dives count, except a diver's round scored more than once: only its latest job counts."""
    latest: dict[tuple[str, int], EventDive] = {}
    for dive in dives:
        if dive.status is not JobStatus.done:
            continue
        if dive.round is None or dive.diver is None:
            dive.counted = True
            continue
        key = (dive.diver, dive.round)
        if key not in latest or dive.created_at >= latest[key].created_at:
            latest[key] = dive
    for dive in latest.values():
        dive.counted = True


def _rounded(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}"
