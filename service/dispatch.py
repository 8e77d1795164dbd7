"""Accepting jobs: admit them into the job store, then hand them to whoever runs them.

Two dispatchers with one interface: the embedded pool (:class:`workers.embedded.EmbeddedPool`, threads
in this process) and :class:`CeleryDispatcher` (sends a task, id = job id, to the Redis broker, and runs
the :class:`~service.jobs.reconcile.Reconciler` that sends again what was lost on the way).

A job is accepted once the store has admitted it: if the broker cannot take the message at that moment,
the job stays queued and the reconciler sends it when the broker answers again.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Literal, Protocol

import redis
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.completion import CompletionWaiters
from service.errors import ApiError
from service.jobs import JobStore, StoreUnavailable
from service.jobs.reconcile import Reconciler
from service.schemas import Check, JobRecord, JobRequest, JobStatus
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
        # A request never waits long on a broker that is down: one quick retry, then the reconciler's turn.
        self.app.conf.update(broker_connection_timeout=1.0, task_publish_retry_policy={
            "max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2})
        self.task_name = TASK_NAME
        self._broker = redis.Redis.from_url(settings.broker_url, socket_timeout=2, socket_connect_timeout=0.5,
                                            retry=Retry(NoBackoff(), 1))  # /readyz answers within a second
        self.reconciler = Reconciler(store, settings.worker_heartbeat_seconds, self.dispatch, self.broker_job_ids)

    def start(self) -> None:
        self.reconciler.start()

    def stop(self) -> None:
        self.reconciler.stop()
        self._broker.close()

    def dispatch(self, job_id: str) -> None:
        self.app.send_task(self.task_name, args=[job_id], task_id=job_id, queue=self.settings.queue_name)

    def broker_job_ids(self) -> set[str]:
        """Ids of the jobs whose message the broker holds: waiting in the queue, or delivered and unacknowledged.

        Reads kombu's Redis layout: one list per priority step, and the ``unacked`` hash of
        ``[message, exchange, routing_key]`` entries; a Celery message carries its task id in its headers.
        """
        prefix, queue = self.settings.celery_key_prefix, self.settings.celery_key_prefix + self.settings.queue_name
        pipe = self._broker.pipeline(transaction=False)
        for step in PRIORITY_STEPS:
            pipe.lrange(f"{queue}{RedisChannel.sep}{step}" if step else queue, 0, -1)
        pipe.hvals(prefix + RedisChannel.unacked_key)
        *queued, unacked = pipe.execute()
        messages = [json.loads(raw) for raw in itertools.chain.from_iterable(queued)]
        messages += [json.loads(raw)[0] for raw in unacked]
        return {m.get("headers", {}).get("id") for m in messages} - {None}

    def checks(self) -> dict[str, Check]:
        try:
            self._broker.ping()
            broker = Check(ok=True, detail="broker reachable")
        except redis.RedisError as exc:
            broker = Check(ok=False, detail=f"broker unreachable: {exc}")
        try:
            models = self.store.live_models(time.time())
        except StoreUnavailable as exc:
            return {"broker": broker, "model": Check(ok=False, detail=str(exc))}
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
    completions: CompletionWaiters

    def queue_full(self) -> ApiError:
        return ApiError(
            429, "queue_full",
            f"The scoring queue is full ({self.settings.max_queue_depth} jobs waiting or running). "
            f"Try again in {self.settings.retry_after_seconds} s.",
            headers={"Retry-After": str(self.settings.retry_after_seconds)},
        )

    def submit(self, requests: list[JobRequest], job_ids: list[str] | None = None) -> list[JobRecord]:
        """Admit jobs (all or none; 429 over the queue depth), then dispatch each; blocking.

        Raises StoreUnavailable (503) when the store cannot admit them. A dispatch that fails after the
        admission is only logged: the job is accepted, and the reconciler sends it again.
        """
        now = time.time()
        ids = job_ids or [new_id() for _ in requests]
        records = [JobRecord(id=i, status=JobStatus.queued, request=r, created_at=now)
                   for i, r in zip(ids, requests, strict=True)]
        if not self.store.admit(records, self.settings.max_queue_depth):
            raise self.queue_full()
        for record in records:
            try:
                self.dispatcher.dispatch(record.id)
            except Exception:
                log.warning("job %s accepted, but the broker did not take it now; the reconciler will send it",
                            record.id, exc_info=True)
        return records


def new_id() -> str:
    return uuid.uuid4().hex


def create_dispatcher(settings: ServiceSettings, store: JobStore) -> Dispatcher:
    if settings.embedded:
        from workers.embedded import EmbeddedPool

        return EmbeddedPool(settings, store)
    return CeleryDispatcher(settings, store)
