"""The Celery task that scores a job, and the worker's start-up hooks.

Fork safety (:mod:`workers.fork_safety`): the worker's main process checks the settings, has the model
loaded once in a throwaway interpreter (:mod:`workers.model_check`) so that a misconfigured worker stops
at once with the reason, and never loads the model nor asks torch about CUDA itself. Each pool process,
right after the fork (``worker_process_init``), takes its share of the CPU threads, loads its own copy of
the model and starts announcing itself.

Dynamic batching: a task that starts its job also takes jobs waiting in the queue, up to
``AQA_WORKER_BATCH_SIZE`` in all (:meth:`RedisJobStore.claim_waiting`), and scores them together,
pipelined; the time limits then apply to the batch. Their own messages, when they arrive, find them taken.

A job whose outcome cannot be stored (the store stayed unreachable for ``AQA_STORE_RETRY_SECONDS``) is
rejected back to the queue, never acknowledged as done.
"""

from __future__ import annotations

import logging
import os
import time

from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import celeryd_after_setup, worker_process_init, worker_process_shutdown

from models.scorer import Scorer
from service.jobs import StoreUnavailable, open_job_store, open_redis_job_store
from service.jobs.redis import RedisJobStore
from service.schemas import JobRecord
from service.settings import ConfigurationError, ServiceSettings
from workers import fork_safety, model_cache
from workers.celery_app import TASK_NAME, app
from workers.heartbeat import Heartbeat, worker_id
from workers.model_check import check_loads
from workers.runner import internal_error, run_job, timeout_error

log = logging.getLogger(__name__)

_store: tuple[int, RedisJobStore] | None = None
_heartbeat: tuple[int, Heartbeat] | None = None
_pool_processes = 1
"""The worker's concurrency, set in the main process before the pool forks (so every pool process knows it)."""


def worker_settings() -> ServiceSettings:
    return app.aqa_settings


def store() -> RedisJobStore:
    """This process's job store connection (a forked process opens its own); retries an unreachable Redis."""
    global _store
    if _store is None or _store[0] != os.getpid():
        settings = worker_settings()
        _store = (os.getpid(), open_redis_job_store(settings, retry_seconds=settings.store_retry_seconds))
    return _store[1]


def heartbeat() -> Heartbeat | None:
    """This pool process's heartbeat, once its model is loaded."""
    return _heartbeat[1] if _heartbeat is not None and _heartbeat[0] == os.getpid() else None


def scorer() -> Scorer:
    """The process's model, loaded on first use with this process's share of the CPU threads."""
    settings = worker_settings()
    return model_cache.get_scorer(settings, threads=model_cache.threads_per_process(settings, _pool_processes))


class ScoreTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """Record the hard time limit (the pool process was killed); Celery calls this in the main process.

        The store is not retried here (the main process must keep consuming): if it is unreachable, the job
        stays running under a gone worker and the reconciler queues it again.
        """
        job_id = args[0] if args else task_id
        error = timeout_error(worker_settings().task_time_limit) if isinstance(exc, TimeLimitExceeded) else \
            internal_error(job_id)
        try:
            open_job_store(worker_settings()).finish(job_id, time.time(), error=error)
        except StoreUnavailable as unavailable:
            log.error("job %s: could not record its failure (%s)", job_id, unavailable)


def take_waiting(limit: int) -> list[JobRecord]:
    """Jobs waiting in the queue that this process scores with the one it started (dynamic batching)."""
    return store().claim_waiting(worker_id(), time.time(), limit)


@app.task(name=TASK_NAME, base=ScoreTask, bind=True)
def score_job(self: Task, job_id: str) -> dict[str, str]:
    try:
        record = run_job(job_id, store(), worker_settings(), scorer, worker_id(),
                         time_limit_errors=(SoftTimeLimitExceeded,), heartbeat=heartbeat(), take_waiting=take_waiting)
    except StoreUnavailable as exc:
        log.error("job %s: %s; giving it back to the queue (not acknowledged)", job_id, exc)
        raise Reject(str(exc), requeue=True) from exc
    return {"job_id": job_id, "status": record.status.value if record else "unknown"}


@celeryd_after_setup.connect
def _prepare_main_process(instance: object, **_: object) -> None:
    global _pool_processes
    config = worker_settings()
    if config.visibility_timeout <= config.task_time_limit:
        log.warning("AQA_VISIBILITY_TIMEOUT (%g s) <= AQA_TASK_TIME_LIMIT (%g s): a job still running after the "
                    "visibility timeout is delivered a second time (only its first result is kept)",
                    config.visibility_timeout, config.task_time_limit)
    _pool_processes = max(1, int(getattr(instance, "concurrency", 1) or 1))
    fork_safety.install()
    try:
        check_loads(config)
    except ConfigurationError as exc:
        log.critical("%s", exc)
        raise SystemExit(1) from exc


@worker_process_init.connect
def _load_model(**_: object) -> None:
    """In each pool process, after the fork: load the model, then announce this process."""
    global _heartbeat
    settings = worker_settings()
    try:
        loaded = scorer()
    except ConfigurationError as exc:  # checked before the pool started; its jobs fail with the reason
        log.critical("%s", exc)
        return
    except Exception:  # e.g. the GPU cannot be used from this process; its jobs retry the load and fail
        log.critical("this pool process could not load the model", exc_info=True)
        return
    beat = Heartbeat(open_job_store(settings), model_cache.describe(loaded, settings), settings.worker_heartbeat_seconds)
    try:
        beat.beat()
    except StoreUnavailable as exc:
        log.warning("could not announce %s yet (%s); the heartbeat keeps trying", beat.worker, exc)
    beat.start(announce_now=False)
    _heartbeat = (os.getpid(), beat)


@worker_process_shutdown.connect
def _farewell(**_: object) -> None:
    if (beat := heartbeat()) is not None:
        beat.stop()
