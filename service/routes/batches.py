"""POST /v1/batches, GET /v1/batches/{id} (progress) and /results (CSV or JSON export)."""

from __future__ import annotations

import csv
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from service.batch import VIDEO_SUFFIXES
from service.dependencies import ServicesDep, require_read, require_score
from service.dispatch import Services, new_id
from service.errors import ApiError, error_responses
from service.export import result_row, rows_to_csv
from service.schemas import (
    MAX_ROUND,
    ArchiveSpec,
    Batch,
    BatchCreate,
    BatchItem,
    BatchRecord,
    JobRequest,
    JobStatus,
)
from service.settings import ServiceSettings

router = APIRouter(prefix="/v1/batches", tags=["batches"])

@router.post(
    "",
    status_code=201,
    response_model=Batch,
    summary="Group already uploaded jobs, or score a server-side archive folder",
    description="`job_ids`: jobs from POST /v1/scores, followed together. `archive`: every video in a folder "
    "inside the operator's AQA_ARCHIVE_ROOTS is scored in place. All the batch's jobs are admitted at once "
    "or none (429 when they do not fit in the queue). Unusable videos fail one by one with their reason.",
    responses=error_responses(401, 403, 404, 422, 429, 503),
    dependencies=[require_score],
)
def create_batch(body: BatchCreate, services: ServicesDep) -> Batch:
    batch_id = new_id()
    if body.job_ids is not None:
        job_ids = list(dict.fromkeys(body.job_ids))
        missing = [i for i, r in zip(job_ids, services.store.get_many(job_ids), strict=True) if r is None]
        if missing:
            raise ApiError(404, "job_not_found", f"No such job(s): {', '.join(missing[:10])}.")
        source = "uploads"
    else:
        folder, requests = archive_requests(body.archive, services.settings, batch_id)
        job_ids = [record.id for record in services.submit(requests)]
        source = str(folder)
    batch = BatchRecord(id=batch_id, created_at=time.time(), job_ids=job_ids, source=source)
    services.store.save_batch(batch, ttl=services.settings.result_expires)
    return batch_view(batch, services)


@router.get("/{batch_id}", response_model=Batch, summary="A batch's progress and items",
            responses=error_responses(401, 403, 404), dependencies=[require_read])
def get_batch(batch_id: str, services: ServicesDep) -> Batch:
    return batch_view(_batch(batch_id, services), services)


@router.get(
    "/{batch_id}/results",
    summary="Export every item's result",
    description="One row per item (score, interval, difficulty, model, or the error), as CSV or JSON.",
    responses={200: {"content": {"text/csv": {}, "application/json": {}}}, **error_responses(401, 403, 404)},
    dependencies=[require_read],
)
def batch_results(
    batch_id: str, services: ServicesDep,
    format: Annotated[Literal["csv", "json"], Query(description="csv (default) or json")] = "csv",
) -> Response:
    batch = _batch(batch_id, services)
    rows = []
    for job_id, record in zip(batch.job_ids, services.store.get_many(batch.job_ids), strict=True):
        if record is None:
            rows.append(result_row("", job_id, "expired"))
        else:
            rows.append(result_row(record.request.source_name, job_id, record.status.value, record.result,
                                   record.error))
    if format == "json":
        return JSONResponse(rows)
    return Response(rows_to_csv(rows), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="batch-{batch_id}.csv"'})


def _batch(batch_id: str, services: Services) -> BatchRecord:
    batch = services.store.get_batch(batch_id)
    if batch is None:
        raise ApiError(404, "batch_not_found", f"There is no batch {batch_id}.")
    return batch


def batch_view(batch: BatchRecord, services: Services) -> Batch:
    items = []
    for job_id, record in zip(batch.job_ids, services.store.get_many(batch.job_ids), strict=True):
        if record is None:
            items.append(BatchItem(job_id=job_id, source_name=None, status="expired"))
        else:
            items.append(BatchItem(job_id=job_id, source_name=record.request.source_name, status=record.status,
                                   score=record.result.score if record.result else None, error=record.error))
    counts = {s.value: 0 for s in JobStatus} | {"expired": 0}
    for item in items:
        counts[str(item.status)] += 1
    finished = counts["done"] + counts["failed"] + counts["expired"]
    return Batch(
        id=batch.id, source=batch.source, created_at=datetime.fromtimestamp(batch.created_at).astimezone(),
        total=len(items), counts=counts, progress=finished / len(items) if items else 1.0,
        finished=finished == len(items), items=items, results_url=f"/v1/batches/{batch.id}/results",
    )


def archive_requests(spec: ArchiveSpec, settings: ServiceSettings, batch_id: str) -> tuple[Path, list[JobRequest]]:
    """The jobs for every video of an allowed archive folder (or of its labels CSV)."""
    if not settings.archive_roots:
        raise ApiError(403, "archive_not_allowed",
                       "This server scores no server-side archives (the operator has set no AQA_ARCHIVE_ROOTS).")
    folder = Path(spec.folder).resolve()
    if not any(folder.is_relative_to(root.resolve()) for root in settings.archive_roots):
        raise ApiError(403, "archive_not_allowed",
                       f"The folder {spec.folder} is outside the archive folders this server allows.")
    if not folder.is_dir():
        raise ApiError(404, "archive_not_found", f"There is no folder {spec.folder} on the server.")
    if spec.labels_csv is not None:
        entries = _csv_entries(folder, spec.labels_csv)
    else:
        pattern = folder.rglob("*") if spec.recursive else folder.glob("*")
        entries = [(path, {}) for path in sorted(pattern)  # a symlink may not lead out of the folder
                   if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file() and path.resolve().is_relative_to(folder)]
    if not entries:
        raise ApiError(422, "empty_archive", f"The folder {spec.folder} holds no video files to score.")
    requests = [
        JobRequest(source_name=str(path.relative_to(folder)), video_path=str(path), owns_file=False,
                   competition=spec.competition, event=spec.event, batch_id=batch_id, **labels)
        for path, labels in entries
    ]
    return folder, requests


def _csv_entries(folder: Path, name: str) -> list[tuple[Path, dict[str, object]]]:
    """(video, its labels: difficulty, action_class, diver, round) for each row of the archive's CSV."""
    labels = (folder / name).resolve()
    if not labels.is_relative_to(folder) or not labels.is_file():
        raise ApiError(404, "archive_not_found", f"There is no file {name} in the archive folder.")
    entries = []
    with labels.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        if "video" not in (reader.fieldnames or []):
            raise ApiError(422, "invalid_request", f"{name} has no 'video' column.")
        for line, row in enumerate(reader, start=2):
            path = (folder / row["video"]).resolve()
            if not path.is_relative_to(folder):
                raise ApiError(422, "invalid_request", f"{name} line {line}: {row['video']} is outside the folder.")
            try:
                difficulty = float(row["difficulty"]) if row.get("difficulty") else None
            except ValueError as exc:
                raise ApiError(422, "invalid_request",
                               f"{name} line {line}: difficulty {row['difficulty']!r} is not a number.") from exc
            try:
                dive_round = int(row["round"]) if row.get("round") else None
            except ValueError:
                dive_round = 0
            if dive_round is not None and not 1 <= dive_round <= MAX_ROUND:
                raise ApiError(422, "invalid_request",
                               f"{name} line {line}: round {row['round']!r} is not a whole number from 1 to {MAX_ROUND}.")
            entries.append((path, {"difficulty": difficulty, "action_class": row.get("action_class") or None,
                                   "diver": row.get("diver") or None, "round": dive_round}))
    return entries
