"""POST /v1/batches, GET /v1/batches/{id} (progress) and /results (CSV or JSON export)."""

from __future__ import annotations

import csv
import io
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
    UploadedJobsBatch,
)
from service.settings import ServiceSettings

router = APIRouter(prefix="/v1/batches", tags=["batches"])

MAX_LABELS_CSV_BYTES = 16 * 2**20

@router.post(
    "",
    status_code=201,
    response_model=Batch,
    summary="Group already uploaded jobs, or score a server-side archive folder",
    description="`job_ids`: jobs from POST /v1/scores, followed together. `archive`: every video in a folder "
    "inside the operator's AQA_ARCHIVE_ROOTS is scored in place. All the batch's jobs are admitted at once "
    "or none (429 when they do not fit in the queue). Unusable videos fail one by one with their reason.",
    responses={201: {"description": "The batch, with its items.", "links": {
        "GetBatch": {"operationId": "get_batch_v1_batches__batch_id__get",
                     "parameters": {"batch_id": "$response.body#/id"}, "description": "Follow the batch."},
        "BatchResults": {"operationId": "batch_results_v1_batches__batch_id__results_get",
                         "parameters": {"batch_id": "$response.body#/id"}, "description": "Export its results."},
    }}, **error_responses(400, 401, 403, 404, 422, 429, 503)},
    dependencies=[require_score],
)
def create_batch(body: BatchCreate, services: ServicesDep) -> Batch:
    batch_id = new_id()
    if isinstance(body, UploadedJobsBatch):
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
            responses=error_responses(401, 403, 404, 503), dependencies=[require_read])
def get_batch(batch_id: str, services: ServicesDep) -> Batch:
    return batch_view(_batch(batch_id, services), services)


@router.get(
    "/{batch_id}/results",
    summary="Export every item's result",
    description="One row per item (score, interval, difficulty, model, or the error), as CSV or JSON.",
    responses={200: {"content": {"text/csv": {}, "application/json": {}}}, **error_responses(401, 403, 404, 503)},
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
    """The jobs for every video of an allowed archive folder (or of its labels CSV).

    Containment is checked here and again by the worker when it opens each file
    (:mod:`workers.video_access`): a file replaced by a symlink in between is refused then.
    """
    if not settings.archive_roots:
        raise ApiError(403, "archive_not_allowed",
                       "This server scores no server-side archives (the operator has set no AQA_ARCHIVE_ROOTS).")
    for name, value in (("folder", spec.folder), ("labels_csv", spec.labels_csv or "")):
        if "\x00" in value:
            raise ApiError(422, "invalid_request", f"The archive {name} contains a NUL character.")
    try:
        folder = Path(spec.folder).resolve()
        allowed = any(folder.is_relative_to(root.resolve()) for root in settings.archive_roots)
        if allowed and not folder.is_dir():
            raise ApiError(404, "archive_not_found", f"There is no folder {spec.folder} on the server.")
    except OSError as exc:
        raise ApiError(422, "invalid_request", f"The archive folder cannot be used: {exc.strerror}.") from exc
    if not allowed:
        raise ApiError(403, "archive_not_allowed",
                       f"The folder {spec.folder} is outside the archive folders this server allows.")
    if spec.labels_csv is not None:
        entries = _csv_entries(folder, spec.labels_csv, settings.max_queue_depth)
    else:
        pattern = folder.rglob("*") if spec.recursive else folder.glob("*")
        entries = [(path, {}) for path in sorted(pattern)  # a symlink may not lead out of the folder
                   if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file() and path.resolve().is_relative_to(folder)]
    if not entries:
        raise ApiError(422, "empty_archive", f"The folder {spec.folder} holds no video files to score.")
    if len(entries) > settings.max_queue_depth:
        raise too_many_videos(settings.max_queue_depth)
    requests = [
        JobRequest(source_name=str(path.relative_to(folder)), video_path=str(path), owns_file=False,
                   competition=spec.competition, event=spec.event, batch_id=batch_id, **labels)
        for path, labels in entries
    ]
    return folder, requests


def too_many_videos(max_depth: int) -> ApiError:
    return ApiError(422, "batch_too_large", f"The archive holds more videos than this server's queue ({max_depth}); "
                    "score it in smaller batches (sub-folders, or a labels CSV per part).")


def _csv_entries(folder: Path, name: str, max_rows: int) -> list[tuple[Path, dict[str, object]]]:
    """(video, its labels: difficulty, action_class, diver, round) for each row of the archive's CSV; 422 with
    the line and the reason for anything it cannot use."""
    try:
        labels = (folder / name).resolve()
        if not labels.is_relative_to(folder) or not labels.is_file():
            raise ApiError(404, "archive_not_found", f"There is no file {name} in the archive folder.")
        if labels.stat().st_size > MAX_LABELS_CSV_BYTES:
            raise ApiError(422, "invalid_labels_csv",
                           f"{name} is larger than {MAX_LABELS_CSV_BYTES // 2**20} MiB: it is not a labels CSV.")
        text = labels.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ApiError(422, "invalid_labels_csv", f"{name} is not a UTF-8 text file (byte {exc.start} is not "
                       "UTF-8): save it as a UTF-8 CSV.") from exc
    except OSError as exc:
        raise ApiError(422, "invalid_labels_csv", f"{name} cannot be read: {exc.strerror}.") from exc
    if "\x00" in text:
        raise ApiError(422, "invalid_labels_csv", f"{name} contains NUL characters: it is not a text CSV.")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    entries: list[tuple[Path, dict[str, object]]] = []
    try:
        if "video" not in (reader.fieldnames or []):
            raise ApiError(422, "invalid_labels_csv", f"{name} has no 'video' column.")
        for row in reader:
            line = reader.line_num
            if len(entries) == max_rows:
                raise too_many_videos(max_rows)
            entries.append(_csv_entry(folder, name, line, row))
    except csv.Error as exc:
        raise ApiError(422, "invalid_labels_csv", f"{name} line {reader.line_num}: {exc}.") from exc
    return entries


def _csv_entry(folder: Path, name: str, line: int, row: dict[str, str | None]) -> tuple[Path, dict[str, object]]:
    video = row.get("video")
    if not video:
        raise ApiError(422, "invalid_labels_csv", f"{name} line {line}: the 'video' cell is empty.")
    path = (folder / video).resolve()
    if not path.is_relative_to(folder):
        raise ApiError(422, "invalid_labels_csv", f"{name} line {line}: {video} is outside the folder.")
    try:
        difficulty = float(row["difficulty"]) if row.get("difficulty") else None
    except ValueError as exc:
        raise ApiError(422, "invalid_labels_csv",
                       f"{name} line {line}: difficulty {row['difficulty']!r} is not a number.") from exc
    try:
        dive_round = int(row["round"]) if row.get("round") else None
    except ValueError:
        dive_round = 0
    if dive_round is not None and not 1 <= dive_round <= MAX_ROUND:
        raise ApiError(422, "invalid_labels_csv",
                       f"{name} line {line}: round {row['round']!r} is not a whole number from 1 to {MAX_ROUND}.")
    return path, {"difficulty": difficulty, "action_class": row.get("action_class") or None,
                  "diver": row.get("diver") or None, "round": dive_round}
