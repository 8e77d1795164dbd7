"""GET /v1/events (the events jobs were filed under) and /v1/events/results (an event's table, JSON or CSV)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from service.dependencies import ServicesDep, require_read
from service.errors import ApiError, error_responses
from service.schemas import EventRef, EventResults
from service.standings import event_results, results_csv

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.get("", response_model=list[EventRef], summary="The events jobs were filed under, latest first",
            description="Every (competition, event) pair that kept jobs carry, with its number of jobs.",
            responses=error_responses(401, 403, 503), dependencies=[require_read])
async def list_events(services: ServicesDep) -> list[EventRef]:
    return await run_in_threadpool(services.store.events)


@router.get(
    "/results",
    response_model=EventResults,
    summary="An event's results: every dive, each diver's total and rank",
    description="Every job filed under the competition and event (uploads with those form fields, archive batches "
    "with them), with its score and 90% interval once done, and the standings: each diver's total of counted "
    "dives (a round scored twice counts its latest score), ranked as a competition table is (equal totals to 2 "
    "decimals share a rank: 1, 2, 2, 4). Follow `progress` while a batch runs. `format=csv`: one row per dive.",
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}, **error_responses(401, 403, 422, 503)},
    dependencies=[require_read],
)
async def get_event_results(
    services: ServicesDep,
    competition: Annotated[str | None, Query(max_length=200, description="As given with the uploads.")] = None,
    event: Annotated[str | None, Query(max_length=200, description="As given with the uploads.")] = None,
    format: Annotated[Literal["json", "csv"], Query(description="json (default) or csv")] = "json",
) -> Response:
    if competition is None and event is None:
        raise ApiError(422, "invalid_request", "Name the event: give 'event', 'competition' or both.")
    records = await run_in_threadpool(services.store.event_jobs, competition, event)
    results = event_results(competition, event, records)
    if format == "csv":
        name = "-".join(part for part in (competition, event) if part)
        return Response(results_csv(results), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{_file_name(name)}.csv"'})
    return JSONResponse(results.model_dump(mode="json"))


def _file_name(text: str) -> str:
    """A download name made of the event's words: letters, digits, '-' and '_' only."""
    kept = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in text)
    return kept.strip("_")[:100] or "event"
