"""The job store: where accepted jobs, their results, batches and live workers are recorded.

The contract and shared types are in :mod:`service.jobs.base`; :func:`open_job_store` picks the
implementation the settings ask for (SQLite in embedded mode, Redis with a broker).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.jobs.base import (
    BATCH_COUNTER,
    LATENCY_BUCKETS,
    STAGES,
    FinishedListener,
    Histogram,
    JobStore,
    StoreUnavailable,
    WorkerBeat,
    bucket_label,
    histograms_from_counters,
)
from service.settings import ConfigurationError, ServiceSettings

if TYPE_CHECKING:
    from service.jobs.redis import RedisJobStore

__all__ = ["BATCH_COUNTER", "LATENCY_BUCKETS", "STAGES", "FinishedListener", "Histogram", "JobStore", "StoreUnavailable",
           "WorkerBeat", "bucket_label", "histograms_from_counters", "open_job_store",
           "open_redis_job_store"]

API_STORE_RETRY_SECONDS = 0.0
"""The API never waits for the store: it answers 503 + Retry-After at once and the client retries."""


def open_job_store(settings: ServiceSettings, retry_seconds: float = API_STORE_RETRY_SECONDS) -> JobStore:
    """SQLite in the data dir in embedded mode; the result-backend Redis with a broker.

    ``retry_seconds``: how long a call keeps retrying an unreachable store before it raises
    :class:`StoreUnavailable` (workers pass ``settings.store_retry_seconds``).
    """
    if settings.store_url is None:
        from service.jobs.sqlite import SqliteJobStore

        return SqliteJobStore(settings.sqlite_path, result_expires=settings.result_expires)
    return open_redis_job_store(settings, retry_seconds)


def open_redis_job_store(settings: ServiceSettings, retry_seconds: float) -> RedisJobStore:
    """The Celery mode's store, on the result-backend Redis (the broker's when none is set)."""
    from service.jobs.redis import RedisJobStore

    if settings.store_url is None:
        raise ConfigurationError("AQA_BROKER_URL is not set: the Celery mode keeps its jobs in Redis")
    return RedisJobStore(settings.store_url, prefix=settings.key_prefix, result_expires=settings.result_expires,
                         retry_seconds=retry_seconds)
