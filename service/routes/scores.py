"""POST /v1/scores (upload a dive) and GET /v1/jobs/{id} (follow it)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from models.results import OUT_OF_DISTRIBUTION
from service.completion import RECHECK_SECONDS
from service.dependencies import ServicesDep, require_read, require_score
from service.dispatch import Services, new_id
from service.errors import ApiError, error_responses
from service.jobs import StoreUnavailable
from service.schemas import MAX_ROUND, Job, JobAccepted, JobRecord, JobRequest, ScoreFields
from service.uploads import FILE_FIELD, UploadLimits, receive_upload
from video.errors import VideoError
from video.probe import probe_video

router = APIRouter(prefix="/v1", tags=["scoring"])

UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": [FILE_FIELD],
            "properties": {
                FILE_FIELD: {"type": "string", "format": "binary",
                             "description": "The dive video. Its content is checked (probed), not its name."},
                "difficulty": {"type": "number", "exclusiveMinimum": 0, "maximum": 5, "example": 3.2,
                               "description": "Difficulty degree; estimated from similar dives when omitted."},
                "action_class": {"type": "string", "example": "107B",
                                 "description": "Dive code; narrows the choice of exemplars."},
                "competition": {"type": "string", "example": "2024 National Championships"},
                "event": {"type": "string", "example": "Women's 3m springboard final"},
                "diver": {"type": "string", "example": "A. Diver", "description": "Who dived (for the event's table)."},
                "round": {"type": "integer", "minimum": 1, "maximum": MAX_ROUND, "example": 3,
                          "description": "The dive's round in its event (1 = first dive)."},
            },
        }}},
    }
}


def status_url(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


@router.post(
    "/scores",
    status_code=202,
    response_model=JobAccepted,
    summary="Upload a dive video to score",
    description="Streams the upload to disk (413 over AQA_MAX_UPLOAD_BYTES), checks that it is a usable video "
    "by probing it (422 with a reason if not), and queues it (429 with Retry-After when the queue is full). "
    "With `?wait=SECONDS` the finished job is returned inline (200) if it finishes in time; a video the server "
    "refuses as unlike the model's training dives (AQA_REFUSE_UNFAMILIAR) answers 422 `out_of_distribution`.",
    responses={200: {"model": Job, "description": "The job finished within `wait` seconds."},
               202: {"description": "Accepted and queued.", "links": {"GetJob": {
                   "operationId": "get_job_v1_jobs__job_id__get", "parameters": {"job_id": "$response.body#/job_id"},
                   "description": "Follow the job until it is done or failed."}}},
               **error_responses(400, 401, 403, 408, 413, 415, 422, 429, 503)},
    openapi_extra=UPLOAD_FORM,
    dependencies=[require_score],
)
async def submit_score(
    request: Request,
    services: ServicesDep,
    wait: Annotated[float, Query(ge=0, description="Seconds to wait for the result (capped by the server).")] = 0,
) -> JSONResponse:
    settings = services.settings
    if await run_in_threadpool(services.store.active_count) >= settings.max_queue_depth:
        raise services.queue_full()  # before reading a byte of the upload
    job_id = new_id()
    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    limits = UploadLimits(settings.max_upload_bytes, settings.upload_idle_seconds, settings.upload_min_bytes_per_second)
    upload = await receive_upload(request, settings.upload_dir / job_id, limits)
    try:
        fields = _score_fields(upload.fields)
        try:
            await run_in_threadpool(probe_video, upload.path, settings.video_limits)
        except VideoError as exc:
            raise ApiError(422, exc.code, exc.reason) from exc
        job_request = JobRequest(source_name=upload.filename, video_path=str(upload.path.resolve()),
                                 owns_file=True, **fields.model_dump())
        [record] = await run_in_threadpool(services.submit, [job_request], [job_id])
    except BaseException:
        upload.path.unlink(missing_ok=True)
        raise
    finally:
        upload.release()
    if wait > 0:
        finished = await _wait_for(services, job_id, min(wait, settings.max_wait_seconds))
        if finished is not None and finished.error is not None and finished.error.code == OUT_OF_DISTRIBUTION:
            raise ApiError(422, OUT_OF_DISTRIBUTION, finished.error.message)
        if finished is not None:
            return JSONResponse(Job.from_record(finished).model_dump(mode="json"), status_code=200)
    accepted = JobAccepted(job_id=job_id, status=record.status, status_url=status_url(job_id))
    return JSONResponse(accepted.model_dump(mode="json"), status_code=202, headers={"Location": accepted.status_url})


@router.get(
    "/jobs/{job_id}",
    response_model=Job,
    summary="A job's state and, when done, its score",
    description="queued / running / done / failed. A done job carries the score, its 90% interval, the exemplars "
    "that voted (id, their score, the relative score predicted against each), the model id and version and the "
    "seconds per stage; a failed one says why.",
    responses=error_responses(401, 403, 404, 503),
    dependencies=[require_read],
)
def get_job(job_id: str, services: ServicesDep) -> Job:
    record = services.store.get(job_id)
    if record is None:
        days = services.settings.result_expires / 86400
        raise ApiError(404, "job_not_found", f"There is no job {job_id} (finished jobs are kept {days:g} days).")
    return Job.from_record(record)


def _score_fields(fields: dict[str, str]) -> ScoreFields:
    try:
        return ScoreFields.model_validate({k: v for k, v in fields.items() if v != ""})
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("form", *e["loc"])} for e in exc.errors()]) from exc


async def _wait_for(services: Services, job_id: str, seconds: float) -> JobRecord | None:
    """The job once finished, woken by its completion (no polling); None after ``seconds`` or if the store
    cannot be read (the job is accepted either way: the caller answers 202 and the client follows it)."""
    deadline = time.monotonic() + seconds
    with services.completions.watch(job_id) as finished:
        while True:
            finished.clear()
            try:
                record = await run_in_threadpool(services.store.get, job_id)
            except StoreUnavailable:
                return None
            if record is not None and record.status.finished:
                return record
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(finished.wait(), min(remaining, RECHECK_SECONDS))
            except TimeoutError:
                pass
