"""An event's table from job records: totals, competition ranking with ties, superseded rounds, CSV."""

from __future__ import annotations

import csv
import io

from models.results import Interval, ModelRef, ScoreResult
from service.schemas import JobError, JobRecord, JobRequest, JobStatus
from service.standings import CSV_COLUMNS, event_results, results_csv

MODEL = ModelRef(id="m", version="1", head="core", fingerprint="f")


def job(n: int, diver: str | None, round: int | None, score: float | None, status: JobStatus = JobStatus.done,
        created: float | None = None) -> JobRecord:
    request = JobRequest(source_name=f"dive_{n}.mp4", video_path=f"/v/{n}.mp4", owns_file=False, difficulty=3.0,
                         action_class="107B", competition="Nationals", event="3m final", diver=diver, round=round)
    result = None
    if score is not None:
        result = ScoreResult(score=score, interval=Interval(low=score - 5, high=score + 5, method="conformal"),
                             execution_score=score / 3, difficulty=3.0, difficulty_source="given", vote_spread=1.0,
                             votes=[], model=MODEL)
    error = JobError(code="not_a_video", message="The file is plain text, not a video.") \
        if status is JobStatus.failed else None
    return JobRecord(id=f"job{n}", status=status, request=request, created_at=created or 1000.0 + n, result=result,
                     error=error)


def test_totals_and_competition_ranking_with_ties() -> None:
    records = [
        job(1, "Ana", 1, 60.0), job(2, "Ana", 2, 70.0),          # 130.00
        job(3, "Bea", 1, 65.004), job(4, "Bea", 2, 64.996),      # 130.00: tied with Ana to 2 decimals
        job(5, "Cai", 1, 80.0), job(6, "Cai", 2, 40.0),          # 120.00
        job(7, "Dan", 1, 90.0), job(8, "Dan", 2, 45.0),          # 135.00
    ]
    results = event_results("Nationals", "3m final", records)
    table = [(s.rank, s.diver, s.total) for s in results.standings]
    assert table == [(1, "Dan", 135.0), (2, "Ana", 130.0), (2, "Bea", 130.0), (4, "Cai", 120.0)]
    assert results.finished and results.progress == 1.0 and results.counts["done"] == 8


def test_a_round_scored_twice_counts_its_latest_score_and_pending_dives_are_not_ranked() -> None:
    records = [
        job(1, "Ana", 1, 50.0, created=1000.0), job(2, "Ana", 1, 55.0, created=2000.0),  # re-scored: 55 counts
        job(3, "Ana", 2, None, JobStatus.running),
        job(4, "Bea", 1, None, JobStatus.failed),
        job(5, "Cai", 1, None, JobStatus.queued),
        job(6, None, 1, 99.0),  # no diver: listed, counted, not ranked
    ]
    results = event_results(None, "3m final", records)
    assert [(s.rank, s.diver, s.total, s.dives_counted, s.dives_pending, s.dives_failed) for s in results.standings] \
        == [(1, "Ana", 55.0, 1, 1, 0), (None, "Bea", 0.0, 0, 0, 1), (None, "Cai", 0.0, 0, 1, 0)]
    counted = {d.job_id: d.counted for d in results.dives}
    assert counted == {"job1": False, "job2": True, "job3": False, "job4": False, "job5": False, "job6": True}
    assert not results.finished and results.progress == 4 / 6
    assert results.counts == {"queued": 1, "running": 1, "done": 3, "failed": 1}
    # by round, divers in order, the dive without a diver after them, then upload time
    assert [d.job_id for d in results.dives] == ["job1", "job2", "job4", "job5", "job6", "job3"]


def test_the_csv_has_a_row_per_dive_with_its_divers_total_and_rank() -> None:
    records = [job(1, "Ana", 1, 60.0), job(2, "Bea", 1, 61.0), job(3, "Bea", 2, None, JobStatus.failed)]
    rows = list(csv.DictReader(io.StringIO(results_csv(event_results("Nationals", "3m final", records)))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(r["diver"], r["round"], r["score"], r["diver_total"], r["diver_rank"], r["counted"]) for r in rows] == [
        ("Ana", "1", "60.00", "60.00", "2", "yes"), ("Bea", "1", "61.00", "61.00", "1", "yes"),
        ("Bea", "2", "", "61.00", "1", "no"),
    ]
    assert rows[2]["status"] == "failed" and rows[2]["error_message"] == "The file is plain text, not a video."
    assert rows[0]["interval_low"] == "55.00" and rows[0]["competition"] == "Nationals"
