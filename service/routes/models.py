"""GET /v1/models and GET /v1/exemplars: what the live workers have loaded."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query

from service.dependencies import ServicesDep, require_read
from service.errors import ApiError, error_responses
from service.schemas import ExemplarList, ModelInfo

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=list[ModelInfo], summary="Models loaded by live workers",
            responses=error_responses(401, 403, 503), dependencies=[require_read])
def list_models(services: ServicesDep) -> list[ModelInfo]:
    return [m.info for m in services.store.live_models(time.time())]


@router.get(
    "/exemplars",
    response_model=ExemplarList,
    summary="The exemplar bank: ids, scores, difficulty",
    description="The labelled dives scores are voted from. With several models live, pick one by fingerprint.",
    responses=error_responses(401, 403, 404, 503),
    dependencies=[require_read],
)
def list_exemplars(
    services: ServicesDep,
    fingerprint: Annotated[str | None, Query(description="Model fingerprint (see /v1/models).")] = None,
) -> ExemplarList:
    models = services.store.live_models(time.time())
    if not models:
        raise ApiError(503, "no_model", "No live worker has loaded a model yet.")
    if fingerprint is not None:
        models = [m for m in models if m.info.model.fingerprint == fingerprint]
        if not models:
            raise ApiError(404, "model_not_found", f"No live worker serves a model with fingerprint {fingerprint}.")
    return ExemplarList(model=models[0].info.model, exemplars=models[0].exemplars)
