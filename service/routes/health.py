"""GET /healthz (alive), /readyz (model loaded, queue reachable), /metrics (Prometheus). No API key.

/healthz never touches the job store, so it answers 200 while Redis is down; /readyz then answers 503
with the failing check, and /metrics 503 with Retry-After (it is read from the store).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.dependencies import ServicesDep
from service.errors import error_responses
from service.metrics import render
from service.schemas import Check, Health, Readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="The API process is alive")
def healthz() -> Health:
    return Health()


@router.get("/readyz", response_model=Readiness, summary="Ready to score: model loaded, queue reachable",
            responses={503: {"model": Readiness, "description": "Not ready; the failing checks say why."}})
def readyz(services: ServicesDep) -> JSONResponse:
    checks = services.dispatcher.checks()
    try:
        services.store.ping()
        checks["job_store"] = Check(ok=True, detail="job store reachable")
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; the detail says which
        checks["job_store"] = Check(ok=False, detail=f"job store unreachable: {exc}")
    ready = all(c.ok for c in checks.values())
    body = Readiness(ready=ready, mode=services.dispatcher.mode, checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics: queue depth, jobs by state, stage latencies",
            response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **error_responses(503)})
def metrics(request: Request) -> Response:
    return Response(render(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
