"""The Celery task that scores a job, and the worker's start-up hooks.

Start-up: the main worker process checks the settings and loads the model once (``celeryd_after_setup``:
logging is set up, the pool not yet started), so
a misconfigured worker stops at once with the reason, and forked pool processes inherit the loaded
model instead of loading their own. Each pool process then announces itself (``worker_process_init``).
"""

from __future__ import annotations

import logging
import os
import time

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import celeryd_after_setup, worker_process_init, worker_process_shutdown

from models.scorer import Scorer
from service.jobs import JobStore, open_job_store
from service.settings import ConfigurationError, ServiceSettings
from workers import model_cache
from workers.celery_app import TASK_NAME, app
from workers.heartbeat import Heartbeat, worker_id
from workers.runner import internal_error, run_job, timeout_error

log = logging.getLogger(__name__)

_store: tuple[int, JobStore] | None = None
_heartbeat: tuple[int, Heartbeat] | None = None


def worker_settings() -> ServiceSettings:
    return app.aqa_settings


def store() -> JobStore:
    """This process's job store connection (a forked process opens its own)."""
    global _store
    if _store is None or _store[0] != os.getpid():
        _store = (os.getpid(), open_job_store(worker_settings()))
    return _store[1]


def scorer() -> Scorer:
    """The process's model; the first call in a process also starts its heartbeat."""
    global _heartbeat
    loaded = model_cache.get_scorer(worker_settings())
    if _heartbeat is None or _heartbeat[0] != os.getpid():
        settings = worker_settings()
        beat = Heartbeat(store(), model_cache.describe(loaded, settings), settings.worker_heartbeat_seconds)
        beat.start()
        _heartbeat = (os.getpid(), beat)
    return loaded


class ScoreTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """Record failures ``run_job`` could not: the hard time limit (the pool process was killed)."""
        job_id = args[0] if args else task_id
        if isinstance(exc, TimeLimitExceeded):
            error = timeout_error(worker_settings().task_time_limit)
        else:
            error = internal_error(job_id)
        store().finish(job_id, time.time(), error=error)


@app.task(name=TASK_NAME, base=ScoreTask, bind=True)
def score_job(self: Task, job_id: str) -> dict[str, str]:
    record = run_job(job_id, store(), worker_settings(), scorer, worker_id(),
                     time_limit_errors=(SoftTimeLimitExceeded,))
    return {"job_id": job_id, "status": record.status.value if record else "unknown"}


@celeryd_after_setup.connect
def _check_and_preload(**_: object) -> None:
    config = worker_settings()
    if config.visibility_timeout <= config.task_time_limit:
        log.warning("AQA_VISIBILITY_TIMEOUT (%g s) <= AQA_TASK_TIME_LIMIT (%g s): a job still running after the "
                    "visibility timeout is delivered a second time (only its first result is kept)",
                    config.visibility_timeout, config.task_time_limit)
    try:
        model_cache.get_scorer(config)
    except ConfigurationError as exc:
        log.critical("%s", exc)
        raise SystemExit(1) from exc


@worker_process_init.connect
def _announce(**_: object) -> None:
    scorer()


@worker_process_shutdown.connect
def _farewell(**_: object) -> None:
    if _heartbeat is not None and _heartbeat[0] == os.getpid():
        _heartbeat[1].stop()
