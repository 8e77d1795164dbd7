"""What the HTTP API sends and receives (pydantic v2); shared by the routes, the client and the workers.

The scoring result itself is :class:`models.results.ScoreResult`, reused as is.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from models.difficulty import MAX_DIFFICULTY, MIN_DIFFICULTY
from models.results import ModelRef, ScoreResult

MAX_ROUND = 99


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.done, JobStatus.failed)


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable snake_case code, e.g. not_a_video, upload_too_large, queue_full.")
    message: str = Field(description="What went wrong, in words a judge or an operator understands.")
    details: list[dict[str, Any]] | None = Field(default=None, description="Per-field problems (422).")


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail

    model_config = {"json_schema_extra": {"examples": [
        {"error": {"code": "not_a_video", "message": "The file is plain text, not a video."}}
    ]}}


class JobError(BaseModel):
    code: str = Field(description="not_a_video, truncated, too_long, ..., timeout, internal_error.")
    message: str = Field(description="Why the video could not be scored.")


class JobRequest(BaseModel):
    """What was asked: the video and what the caller knows about the dive (kept with the job)."""

    source_name: str = Field(description="Uploaded file name, or the video's path inside an archive.")
    video_path: str = Field(description="Where the workers read the video (the shared data volume).")
    owns_file: bool = Field(description="The service made this copy (an upload) and deletes it when done.")
    difficulty: float | None = None
    action_class: str | None = None
    competition: str | None = None
    event: str | None = None
    diver: str | None = None
    round: int | None = None
    batch_id: str | None = None


class JobRecord(BaseModel):
    """A job as the job store keeps it."""

    id: str
    status: JobStatus
    request: JobRequest
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = Field(0, description="How many times a worker started the job (redeliveries add one).")
    worker: str | None = None
    result: ScoreResult | None = None
    error: JobError | None = None


class JobAccepted(BaseModel):
    job_id: str
    status: JobStatus
    status_url: str = Field(description="GET it to follow the job.")

    model_config = {"json_schema_extra": {"examples": [
        {"job_id": "6f1c0d4e9a5b4c1f8e2d3a4b5c6d7e8f", "status": "queued",
         "status_url": "/v1/jobs/6f1c0d4e9a5b4c1f8e2d3a4b5c6d7e8f"}
    ]}}


class Job(BaseModel):
    """A scoring job: its state and, once done, the score with the exemplars that voted for it."""

    id: str
    status: JobStatus
    source_name: str
    difficulty: float | None = Field(None, description="Difficulty degree given with the upload.")
    action_class: str | None = None
    competition: str | None = None
    event: str | None = None
    diver: str | None = None
    round: int | None = Field(None, description="The dive's round in its event (1 = first dive).")
    batch_id: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int
    result: ScoreResult | None = Field(
        None, description="Score, 90% interval, the exemplars that voted (id, their score, the relative score "
        "predicted against each), model id and version, seconds per stage."
    )
    error: JobError | None = Field(None, description="Why a failed job could not be scored.")

    @classmethod
    def from_record(cls, record: JobRecord) -> Job:
        r = record.request

        def when(t: float | None) -> datetime | None:
            return None if t is None else datetime.fromtimestamp(t).astimezone()

        return cls(
            id=record.id, status=record.status, source_name=r.source_name, difficulty=r.difficulty,
            action_class=r.action_class, competition=r.competition, event=r.event, diver=r.diver, round=r.round,
            batch_id=r.batch_id,
            created_at=when(record.created_at), started_at=when(record.started_at),
            finished_at=when(record.finished_at), attempts=record.attempts, result=record.result,
            error=record.error,
        )


class ScoreFields(BaseModel):
    """The text fields of a POST /v1/scores upload."""

    difficulty: float | None = Field(None, gt=MIN_DIFFICULTY, le=MAX_DIFFICULTY,
                                     description="Difficulty degree (e.g. 3.2).")
    action_class: str | None = Field(None, min_length=1, max_length=16, pattern=r"^[0-9A-Za-z]+$",
                                     description="Dive code, e.g. 107B.")
    competition: str | None = Field(None, max_length=200)
    event: str | None = Field(None, max_length=200)
    diver: str | None = Field(None, min_length=1, max_length=200, description="Who dived.")
    round: int | None = Field(None, ge=1, le=MAX_ROUND, description="The dive's round in its event (1 = first).")


class ArchiveSpec(BaseModel):
    model_config = {"extra": "forbid"}

    folder: str = Field(min_length=1, max_length=4096,
                        description="Server-side folder inside one of the operator's AQA_ARCHIVE_ROOTS.")
    recursive: bool = Field(False, description="Also take videos in sub-folders.")
    labels_csv: str | None = Field(
        None, min_length=1, max_length=1024,
        description="CSV in the folder with a 'video' column (path relative to the folder) and optional "
        "'difficulty', 'action_class', 'diver' and 'round' columns; when given, only its rows are scored."
    )
    competition: str | None = Field(None, max_length=200, description="Competition of every video of the archive.")
    event: str | None = Field(None, max_length=200, description="Event of every video of the archive.")


class UploadedJobsBatch(BaseModel):
    """A batch of jobs already uploaded with POST /v1/scores, followed together."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [
        {"job_ids": ["6f1c0d4e9a5b4c1f8e2d3a4b5c6d7e8f", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"]},
    ]}}

    job_ids: list[str] = Field(min_length=1, max_length=10_000)


class ArchiveBatch(BaseModel):
    """A batch of the videos of a server-side archive folder, scored in place."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [
        {"archive": {"folder": "/srv/archive/2024-nationals/3m-springboard", "recursive": False}},
    ]}}

    archive: ArchiveSpec


BatchCreate = UploadedJobsBatch | ArchiveBatch
"""POST /v1/batches: exactly one of ``job_ids`` and ``archive`` (each shape forbids the other's field)."""


class BatchRecord(BaseModel):
    id: str
    created_at: float
    job_ids: list[str]
    source: str = Field(description="'uploads' or the archive folder.")


class BatchItem(BaseModel):
    job_id: str
    source_name: str | None
    status: JobStatus | Literal["expired"]
    score: float | None = None
    error: JobError | None = None


class Batch(BaseModel):
    id: str
    source: str
    created_at: datetime
    total: int
    counts: dict[str, int] = Field(description="Items per status.")
    progress: float = Field(description="Finished items / total, 0..1.")
    finished: bool
    items: list[BatchItem]
    results_url: str = Field(description="CSV export; add ?format=json for JSON.")


class ExemplarInfo(BaseModel):
    id: str
    final_score: float
    difficulty: float | None = None
    action_class: str | None = None


class ModelInfo(BaseModel):
    """A model as a worker loaded it."""

    model: ModelRef
    label_kind: str = Field(description="'execution' (score / difficulty) or 'final'.")
    num_exemplars: int = Field(description="Exemplars in the bank.")
    votes_per_score: int = Field(description="Exemplars that vote on each score.")
    selection: str = Field(description="How voting exemplars are chosen.")
    interval_method: Literal["conformal", "votes"]
    device: str
    runtime: str
    workers: int = Field(0, description="Live worker processes serving this model.")


class ModelDescription(BaseModel):
    """What a worker registers: the model it serves and its exemplar bank's metadata."""

    info: ModelInfo
    exemplars: list[ExemplarInfo]


class Check(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    ready: bool
    mode: Literal["embedded", "celery"]
    checks: dict[str, Check]


class ExemplarList(BaseModel):
    """A model's exemplar bank: the labelled dives its scores are voted from."""

    model: ModelRef
    exemplars: list[ExemplarInfo]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class EventRef(BaseModel):
    """An event of a competition: the jobs uploaded or batched with these two fields."""

    competition: str | None = None
    event: str | None = None
    dives: int = Field(description="Jobs recorded for the event (finished ones are kept AQA_RESULT_EXPIRES seconds).")


class EventDive(BaseModel):
    """One dive of an event: who, which round, and its score once done."""

    job_id: str
    status: JobStatus
    source_name: str
    diver: str | None = None
    round: int | None = None
    action_class: str | None = None
    difficulty: float | None = Field(None, description="Difficulty degree used: given, or estimated by the model.")
    difficulty_source: Literal["given", "estimated", "not_used"] | None = None
    score: float | None = None
    interval_low: float | None = None
    interval_high: float | None = None
    counted: bool = Field(
        description="Counts in its diver's total: done, and the latest done job of its diver and round (an earlier "
        "job of the same diver and round is superseded).")
    error: JobError | None = None
    created_at: datetime


class DiverStanding(BaseModel):
    """A diver's place in an event: the total of their counted dives, ranked as a competition table is."""

    rank: int | None = Field(description="1 = highest total; equal totals (to 2 decimals) share a rank and the next "
                             "rank is skipped (1, 2, 2, 4). None while the diver has no scored dive.")
    diver: str
    total: float = Field(description="Sum of the counted dives' scores, rounded to 2 decimals.")
    dives_counted: int
    dives_pending: int = Field(description="Dives queued or running.")
    dives_failed: int


class EventResults(BaseModel):
    """Every dive of an event with its score and interval, and each diver's total and rank."""

    competition: str | None
    event: str | None
    total: int = Field(description="Jobs of the event.")
    counts: dict[str, int] = Field(description="Jobs per status.")
    progress: float = Field(description="Finished jobs / total, 0..1.")
    finished: bool
    standings: list[DiverStanding] = Field(description="In rank order; divers without a scored dive last.")
    dives: list[EventDive] = Field(description="By round, then diver, then upload time; dives without a diver are "
                                   "listed but not ranked.")


class ModelCard(BaseModel):
    """The card of the model this server is configured to serve: data, metrics, limits, evaluation report."""

    model_id: str
    version: str
    head: str
    summary: str | None = None
    data: dict[str, Any] = Field(default_factory=dict, description="What it was trained and evaluated on.")
    evaluations: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per evaluation set: Spearman and relative L2 (x100) on final score and "
        "execution, the difficulty-only baseline, interval coverage.")
    calibration: dict[str, Any] | None = None
    limits: list[str] = Field(default_factory=list)
    created: str | None = None
    report_url: str | None = Field(None, description="The self-contained HTML evaluation report, when there is one.")
    live: bool = Field(description="A live worker serves this model id and version now.")
