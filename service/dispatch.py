"""Accepting jobs: admit them into the job store, then hand them to whoever runs them.

Two dispatchers with one interface: the embedded pool (:class:`workers.embedded.EmbeddedPool`, threads
in this process) and :class:`CeleryDispatcher` (sends a task, id = job id, to the Redis broker).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Literal, Protocol

import redis

from service.errors import ApiError
from service.jobs import JobStore
from service.schemas import Check, JobError, JobRecord, JobRequest, JobStatus
from service.settings import ServiceSettings

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    mode: Literal["embedded", "celery"]

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def dispatch(self, job_id: str) -> None: ...

    def checks(self) -> dict[str, Check]:
        """Readiness checks particular to this way of running jobs."""


class CeleryDispatcher:
    """Queues jobs for Celery workers; the API process itself never loads the model."""

    mode = "celery"

    def __init__(self, settings: ServiceSettings, store: JobStore) -> None:
        from workers.celery_app import TASK_NAME, create_celery_app

        self.settings = settings
        self.store = store
        self.app = create_celery_app(settings)
        self.task_name = TASK_NAME
        self._broker = redis.Redis.from_url(settings.broker_url, socket_timeout=3, socket_connect_timeout=3)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self._broker.close()

    def dispatch(self, job_id: str) -> None:
        self.app.send_task(self.task_name, args=[job_id], task_id=job_id, queue=self.settings.queue_name)

    def checks(self) -> dict[str, Check]:
        try:
            self._broker.ping()
            broker = Check(ok=True, detail="broker reachable")
        except redis.RedisError as exc:
            broker = Check(ok=False, detail=f"broker unreachable: {exc}")
        try:
            models = self.store.live_models(time.time())
        except redis.RedisError as exc:
            return {"broker": broker, "model": Check(ok=False, detail=f"job store unreachable: {exc}")}
        loaded = ", ".join(f"{m.info.model.id} {m.info.model.version} ({m.info.workers} worker process(es))"
                           for m in models)
        model = Check(ok=bool(models), detail=f"loaded by workers: {loaded}" if models else
                      "no live worker has loaded a model (start one with `aqa worker`)")
        return {"broker": broker, "model": model}


@dataclass
class Services:
    """What the routes work with; one per app (``app.state.services``)."""

    settings: ServiceSettings
    store: JobStore
    dispatcher: Dispatcher

    def queue_full(self) -> ApiError:
        return ApiError(
            429, "queue_full",
            f"The scoring queue is full ({self.settings.max_queue_depth} jobs waiting or running). "
            f"Try again in {self.settings.retry_after_seconds} s.",
            headers={"Retry-After": str(self.settings.retry_after_seconds)},
        )

    def submit(self, requests: list[JobRequest], job_ids: list[str] | None = None) -> list[JobRecord]:
        """Admit jobs (all or none; 429 over the queue depth), then dispatch each; blocking."""
        now = time.time()
        ids = job_ids or [new_id() for _ in requests]
        records = [JobRecord(id=i, status=JobStatus.queued, request=r, created_at=now)
                   for i, r in zip(ids, requests, strict=True)]
        if not self.store.admit(records, self.settings.max_queue_depth):
            raise self.queue_full()
        for record in records:
            try:
                self.dispatcher.dispatch(record.id)
            except Exception as exc:
                log.exception("could not queue job %s", record.id)
                self.store.finish(record.id, time.time(), error=JobError(
                    code="queue_unavailable", message="The job could not be queued: the job queue is unreachable."))
                raise ApiError(503, "queue_unavailable",
                               "The job queue is unreachable; the video was not queued. Try again later.") from exc
        return records


def new_id() -> str:
    return uuid.uuid4().hex


def create_dispatcher(settings: ServiceSettings, store: JobStore) -> Dispatcher:
    if settings.embedded:
        from workers.embedded import EmbeddedPool

        return EmbeddedPool(settings, store)
    return CeleryDispatcher(settings, store)
