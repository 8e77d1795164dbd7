"""GET /v1/model-card and /v1/model-card/report: the configured model's card and its HTML evaluation report.

Read from the model directory this server is configured with (``AQA_MODEL_DIR``), so the API serves the
card without loading the model; ``live`` says whether a live worker serves that model id and version.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from service.dependencies import ServicesDep, require_read
from service.errors import ApiError, error_responses
from service.schemas import ModelCard

router = APIRouter(prefix="/v1/model-card", tags=["models"])

# Names in a model directory (models/model_dir.py; not imported here: the API never imports torch).
MODEL_CARD_JSON = "model_card.json"
REPORT_HTML = Path("report") / "report.html"
REPORT_URL = "/v1/model-card/report"
# The report is our own page of inline images and styles: it may load nothing and run nothing.
REPORT_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@router.get("", response_model=ModelCard, summary="The model's card: data, metrics with what they mean, limits",
            responses=error_responses(401, 403, 404, 503), dependencies=[require_read])
async def get_model_card(services: ServicesDep) -> ModelCard:
    model_dir = services.settings.model_dir
    path = model_dir / MODEL_CARD_JSON
    try:
        card = json.loads(await run_in_threadpool(path.read_text))
    except FileNotFoundError as exc:
        raise ApiError(404, "model_card_not_found", f"The model directory {model_dir} has no {MODEL_CARD_JSON}; "
                       "`aqa train` writes one.") from exc
    live = await run_in_threadpool(services.store.live_models, time.time())
    return ModelCard(
        model_id=card.get("model_id", model_dir.name), version=card.get("version", "unknown"),
        head=card.get("head", "unknown"), summary=card.get("summary"), data=card.get("data") or {},
        evaluations=card.get("evaluations") or {}, calibration=card.get("calibration"),
        limits=card.get("limits") or [], created=card.get("created"),
        report_url=REPORT_URL if (model_dir / REPORT_HTML).is_file() else None,
        live=any((m.info.model.id, m.info.model.version) == (card.get("model_id"), card.get("version")) for m in live),
    )


@router.get("/report", summary="The model's evaluation report (self-contained HTML)",
            description="Plots inlined: predicted vs true, error by difficulty, interval coverage, vote spread.",
            responses={200: {"content": {"text/html": {}}}, **error_responses(401, 403, 404)},
            dependencies=[require_read])
async def get_model_report(services: ServicesDep) -> HTMLResponse:
    path = services.settings.model_dir / REPORT_HTML
    try:
        html = await run_in_threadpool(path.read_text)
    except FileNotFoundError as exc:
        raise ApiError(404, "report_not_found", f"The model directory has no {REPORT_HTML}; `aqa train` and "
                       "`aqa eval --out` write one.") from exc
    return HTMLResponse(html, headers={"Content-Security-Policy": REPORT_POLICY})
