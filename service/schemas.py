"""What the HTTP API sends and receives (pydantic v2); shared by the routes, the client and the workers.

The scoring result itself is :class:`models.results.ScoreResult`, reused as is.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from models.difficulty import MAX_DIFFICULTY, MIN_DIFFICULTY
from models.results import ModelRef, ScoreResult


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
            action_class=r.action_class, competition=r.competition, event=r.event, batch_id=r.batch_id,
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


class ArchiveSpec(BaseModel):
    folder: str = Field(description="Server-side folder inside one of the operator's AQA_ARCHIVE_ROOTS.")
    recursive: bool = Field(False, description="Also take videos in sub-folders.")
    labels_csv: str | None = Field(
        None, description="CSV in the folder with a 'video' column (path relative to the folder) and optional "
        "'difficulty' and 'action_class' columns; when given, only its rows are scored."
    )


class BatchCreate(BaseModel):
    """Exactly one of ``job_ids`` (already uploaded items) and ``archive`` (a server-side folder)."""

    job_ids: list[str] | None = Field(None, min_length=1, max_length=10_000)
    archive: ArchiveSpec | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> BatchCreate:
        if (self.job_ids is None) == (self.archive is None):
            raise ValueError("give exactly one of 'job_ids' and 'archive'")
        return self

    model_config = {"json_schema_extra": {"examples": [
        {"archive": {"folder": "/srv/archive/2024-nationals/3m-springboard", "recursive": False}},
        {"job_ids": ["6f1c0d4e9a5b4c1f8e2d3a4b5c6d7e8f", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"]},
    ]}}


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
