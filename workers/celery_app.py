"""The Celery application: Redis broker and result backend, configured from :class:`ServiceSettings`.

Delivery guarantees, and the settings behind them:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after its job
  finished, so when a pool process dies mid-job (kill -9, OOM) the job goes back to the queue at once.
- Redis ``visibility_timeout`` (``AQA_VISIBILITY_TIMEOUT``): when the whole worker dies, its unacknowledged
  job is redelivered to another worker after this many seconds (plus at most one restore sweep,
  ``unacked_restore_interval``, derived from it).
- ``worker_prefetch_multiplier=1``: a worker process reserves one job at a time, so a slow job does
  not hold others hostage.
- Soft/hard time limits, result expiry; task id = job id, and the job store's first-result-wins
  ``finish`` makes a redelivered job end with exactly one result. Outcomes live in the job store, so
  Celery's own result records are not written (``task_ignore_result``).
- A running job survives a lost broker connection (``worker_cancel_long_running_tasks_on_connection_loss``
  off, as in Celery 5, set here because Celery 6 turns it on): its result is stored once Redis answers
  (the store retries for ``AQA_STORE_RETRY_SECONDS``); its message, which can no longer be acknowledged
  on the old connection, is redelivered after the visibility timeout and then skipped as finished.
- Each pool process loads the model after the fork (:mod:`workers.tasks`), which may take a while on a
  big model or a GPU: ``worker_proc_alive_timeout`` gives it ``POOL_PROCESS_START_SECONDS``.

``celery -A workers.celery_app worker`` finds the module-level ``app``, made from the environment on
first access (so importing this module needs no broker).
"""

from __future__ import annotations

from celery import Celery

from service.settings import ConfigurationError, ServiceSettings

TASK_NAME = "aqa.score_job"
POOL_PROCESS_START_SECONDS = 300.0
"""How long a new pool process may take to load the model before Celery gives up on it."""


def create_celery_app(settings: ServiceSettings) -> Celery:
    if settings.broker_url is None:
        raise ConfigurationError(
            "AQA_BROKER_URL is not set: Celery workers need a Redis broker, e.g. AQA_BROKER_URL=redis://localhost:6379/0. "
            "Without one, `aqa serve` scores jobs itself (embedded mode) and no worker is needed."
        )
    prefix = settings.celery_key_prefix
    app = Celery("aqa", broker=settings.broker_url, backend=settings.store_url, include=["workers.tasks"])
    app.conf.update(
        task_default_queue=settings.queue_name,
        task_routes={TASK_NAME: {"queue": settings.queue_name}},
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_proc_alive_timeout=POOL_PROCESS_START_SECONDS,
        task_ignore_result=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        result_expires=settings.result_expires,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_interval": max(1.0, min(10.0, settings.visibility_timeout / 4)),
            "unacked_restore_throttle": 1,
            "global_keyprefix": prefix,
        },
        result_backend_transport_options={"global_keyprefix": prefix},
        broker_connection_retry_on_startup=True,
    )
    app.aqa_settings = settings
    return app


_app: Celery | None = None


def __getattr__(name: str) -> Celery:
    global _app
    if name != "app":
        raise AttributeError(name)
    if _app is None:
        _app = create_celery_app(ServiceSettings())
    return _app
