"""The job store's contract and the types every implementation shares.

Two implementations: :class:`~service.jobs.sqlite.SqliteJobStore` (embedded mode, a file in the data
dir, so jobs survive a restart) and :class:`~service.jobs.redis.RedisJobStore` (Celery mode, shared by
the API and every worker). The contract:

- ``admit`` inserts jobs only if the active jobs (queued + running) stay within ``max_depth``, atomically.
- ``start`` marks a job running and counts the attempt, unless it already finished (a redelivered job
  whose first run completed is not run again).
- ``finish`` stores a result or an error only if none is stored yet: the first result wins, so a
  redelivered job never ends with two different results.
- ``counters`` are cumulative (finished jobs per status, stage-latency histograms), updated in the same
  atomic step as the ``finish`` that first stores a result.
- ``requeue`` hands a running job back to the queue only if the worker it names still holds it, so the
  reconciler and a redelivery cannot both move it.
- Every method raises :class:`StoreUnavailable` when the store cannot be reached (the API answers 503);
  nothing else a caller should handle.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from models.results import ScoreResult
from service.schemas import BatchRecord, EventRef, JobError, JobRecord, ModelDescription

LATENCY_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Upper bounds (seconds) of the stage-latency histogram buckets; a last '+Inf' bucket follows."""

BATCH_COUNTER = "batch_jobs:"
"""Prefix of the counters of scored jobs by the number of jobs in their forward pass (``batch_jobs:<n>``)."""

STAGES = ("queue_wait", "decode", "features", "voting", "total")
"""queue_wait: accepted -> started by a worker; the others are ScoreResult.timings."""


@dataclass
class Histogram:
    """Non-cumulative bucket counts keyed by upper bound ('0.5', ..., '+Inf'), with sum and count."""

    buckets: dict[str, int] = field(default_factory=dict)
    total: float = 0.0
    count: int = 0


def bucket_label(seconds: float) -> str:
    index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
    return "+Inf" if index == len(LATENCY_BUCKETS) else repr(LATENCY_BUCKETS[index])


def latency_counter_increments(record: JobRecord, result: ScoreResult | None) -> dict[str, float]:
    """Counter increments a job's completion adds: ``latency:<stage>:<bucket|sum|count>``, ``batch_jobs:<n>``."""
    seconds: dict[str, float] = {}
    if record.started_at is not None:
        seconds["queue_wait"] = max(0.0, record.started_at - record.created_at)
    increments: dict[str, float] = {}
    if result is not None:
        seconds.update({k: v for k, v in result.timings.items() if k in STAGES})
        increments[f"{BATCH_COUNTER}{result.batch_jobs}"] = 1
    for stage, value in seconds.items():
        increments[f"latency:{stage}:{bucket_label(value)}"] = 1
        increments[f"latency:{stage}:sum"] = value
        increments[f"latency:{stage}:count"] = 1
    return increments


def histograms_from_counters(counters: dict[str, float]) -> dict[str, Histogram]:
    out: dict[str, Histogram] = {}
    for name, value in counters.items():
        kind, _, rest = name.partition(":")
        if kind != "latency":
            continue
        stage, _, part = rest.rpartition(":")
        h = out.setdefault(stage, Histogram())
        if part == "sum":
            h.total = float(value)
        elif part == "count":
            h.count = int(value)
        else:
            h.buckets[part] = int(value)
    return out


class StoreUnavailable(Exception):
    """The job store cannot be reached right now (Redis down or restarting, SQLite locked or disk full)."""


@dataclass(frozen=True)
class WorkerBeat:
    """A worker process's last announcement: when, until when it counts as alive, the jobs it runs."""

    worker: str
    beat_at: float
    expires_at: float
    jobs: tuple[str, ...] = ()


FinishedListener = Callable[[str | None], None]
"""Called with the id of a job that just finished, or None when any job may have finished unseen."""


class JobStore(ABC):
    """Durable job records shared by the API and the workers (see the module docstring)."""

    @abstractmethod
    def admit(self, records: list[JobRecord], max_depth: int) -> bool:
        """Insert queued jobs if active + len(records) <= max_depth; False (nothing inserted) if not."""

    @abstractmethod
    def active_count(self) -> int:
        """Jobs accepted and not finished (queued + running)."""

    @abstractmethod
    def get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        """Records in the order asked; None for unknown or expired ids."""

    def get(self, job_id: str) -> JobRecord | None:
        return self.get_many([job_id])[0]

    @abstractmethod
    def start(self, job_id: str, worker: str, now: float) -> JobRecord | None:
        """Mark running and count the attempt; None if the job is unknown or already finished, or (Redis) held
        in the batch of a live worker that took it from the queue."""

    @abstractmethod
    def finish(self, job_id: str, now: float, result: ScoreResult | None = None,
               error: JobError | None = None) -> bool:
        """Store the outcome unless one is stored already (then return False and change nothing)."""

    @abstractmethod
    def unfinished_ids(self) -> list[str]:
        """Queued and running jobs, oldest first."""

    @abstractmethod
    def state_counts(self) -> dict[str, int]:
        """queued and running now; done and failed since the store was created."""

    @abstractmethod
    def counters(self) -> dict[str, float]:
        """All cumulative counters (``finished:<status>``, ``latency:<stage>:...``)."""

    @abstractmethod
    def event_jobs(self, competition: str | None, event: str | None) -> list[JobRecord]:
        """The jobs admitted with this competition and event (None matches a job without the field), oldest first."""

    @abstractmethod
    def events(self) -> list[EventRef]:
        """Every (competition, event) some kept job names, with its number of jobs."""

    @abstractmethod
    def save_batch(self, batch: BatchRecord, ttl: float) -> None: ...

    @abstractmethod
    def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    @abstractmethod
    def requeue(self, job_id: str, worker: str) -> bool:
        """Set a running job back to queued if ``worker`` still holds it; False (nothing changed) if not."""

    @abstractmethod
    def register_worker(self, worker_id: str, description: ModelDescription, ttl: float, now: float,
                        jobs: tuple[str, ...] = ()) -> None:
        """Announce (or refresh) a worker process, its loaded model and the jobs it is running, for ``ttl`` s."""

    @abstractmethod
    def unregister_worker(self, worker_id: str) -> None: ...

    @abstractmethod
    def live_models(self, now: float) -> list[ModelDescription]:
        """Models of workers whose announcement has not expired; ``info.workers`` counts them."""

    @abstractmethod
    def worker_beats(self) -> dict[str, WorkerBeat]:
        """Every worker's last announcement, expired ones included (the reconciler judges them)."""

    @abstractmethod
    def subscribe_finished(self, listener: FinishedListener) -> Callable[[], None]:
        """Call ``listener`` whenever a job finishes, from any process sharing the store; returns a stop function.

        The listener runs on a background thread. It is also called with None whenever finishes may have
        been missed (a lost connection), so a waiter re-reads the store instead of waiting forever.
        """

    @abstractmethod
    def ping(self) -> None:
        """Raise if the store cannot be reached."""

    def purge_expired(self, now: float) -> None:
        """Forget finished jobs and batches older than the result expiry."""

    def close(self) -> None:
        """Release connections."""
