"""The FastAPI application factory: ``create_app(settings)``.

Start-up opens the job store and the dispatcher: in embedded mode (no ``AQA_BROKER_URL``) that loads
the model into this process and re-queues jobs left unfinished by a previous run; with a broker, the
API only queues and never loads the model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from service.completion import CompletionWaiters
from service.dispatch import Services, create_dispatcher
from service.errors import install_error_handlers
from service.jobs import JobStore, StoreUnavailable, open_job_store
from service.metrics import metrics_registry
from service.routes import batches, events, health, model_card, models, scores
from service.routes.pages import install_pages
from service.settings import ServiceSettings
from service.uploads import sweep_orphans

log = logging.getLogger(__name__)

DESCRIPTION = """
Score dive videos the way a judging panel does.

1. `POST /v1/scores` with the video (multipart, field `video`) -> `202 {job_id, status_url}`.
2. `GET /v1/jobs/{job_id}` until `status` is `done` (the score, its interval and the exemplars that voted)
   or `failed` (the reason). Or add `?wait=30` to the upload to get the finished job inline.

The judges' desk is at `/` (upload and follow a dive), `/meet` (an event's table) and `/model` (the model's card).

**Authentication**: send an API key in `X-API-Key` (a `read` key for GET routes, a `score` key to submit),
unless the server runs without keys. **Errors** always have the body
`{"error": {"code": "...", "message": "..."}}`.
"""


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.api_keys:
            log.warning("AQA_API_KEYS is empty: authentication is disabled, anyone who can reach this server "
                        "can submit videos. Set AQA_API_KEYS=key:score,... for any shared deployment.")
        store = open_job_store(settings)
        completions = CompletionWaiters(asyncio.get_running_loop())
        stop_listening = store.subscribe_finished(completions.notify)
        dispatcher = create_dispatcher(settings, store)
        await run_in_threadpool(_sweep_uploads, settings, store)
        await run_in_threadpool(dispatcher.start)
        app.state.services = Services(settings=settings, store=store, dispatcher=dispatcher, completions=completions)
        app.state.metrics = metrics_registry(store, settings.max_queue_depth)
        log.info("scoring service ready (%s mode)", dispatcher.mode)
        try:
            yield
        finally:
            await run_in_threadpool(dispatcher.stop)
            await run_in_threadpool(stop_listening)
            store.close()

    app = FastAPI(title="AQA dive scoring", version="1", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # served offline by install_pages
    install_error_handlers(app, settings.retry_after_seconds)
    for module in (scores, batches, events, models, model_card, health):
        app.include_router(module.router)
    install_pages(app)
    return app


def _sweep_uploads(settings: ServiceSettings, store: JobStore) -> None:
    try:
        sweep_orphans(settings.upload_dir, store)
    except StoreUnavailable as exc:  # cannot tell orphans from queued uploads now; the next start will
        log.warning("left the upload folder as it is: %s", exc)
