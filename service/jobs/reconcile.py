"""The reconciler: finds accepted jobs that nobody is running and hands them back to the queue.

Celery workers acknowledge a job only after its outcome is stored, and Celery redelivers what a dead
worker left unacknowledged; the reconciler covers what that cannot see, from the job store's side:

- a **running** job whose worker is gone (no heartbeat for three intervals, and the job started before
  that), or whose worker's latest heartbeat no longer lists it (the worker gave it up after the store
  stayed unreachable for ``store_retry_seconds``), is set back to queued and sent again;
- a **queued** job that the broker holds nowhere (neither waiting in the queue nor delivered and
  unacknowledged) on two passes in a row is sent again: its message was lost with a Redis that came
  back without that write (no persistence, or the last second of an ``appendfsync everysec`` AOF).

After any pass that could not reach Redis it waits three intervals before judging again: the workers'
heartbeats lapsed during the outage too, and each needs one beat to show it is still there.

It runs in the API process (Celery mode), one pass per heartbeat interval. Sending a job twice is
harmless: ``start`` skips a finished job and ``finish`` keeps the first outcome. A job that keeps losing
its worker is failed by the runner after ``max_attempts`` starts, so requeueing cannot loop forever.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from service.jobs.base import JobStore, StoreUnavailable
from service.schemas import JobRecord, JobStatus

log = logging.getLogger(__name__)

BEATS_TO_GONE = 3
"""A worker is gone after this many heartbeat intervals without one (the heartbeat's own TTL)."""


class Reconciler:
    def __init__(self, store: JobStore, interval: float, send: Callable[[str], None],
                 broker_job_ids: Callable[[], set[str]]) -> None:
        self.store = store
        self.interval = interval
        self.send = send
        self.broker_job_ids = broker_job_ids
        self._missing_before: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="aqa-reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        judge_after = 0.0
        while not self._stop.wait(self.interval):
            if time.monotonic() < judge_after:
                continue
            try:
                self.reconcile(time.time())
            except Exception as exc:  # a pass that fails must not end the thread; a later one tries again
                judge_after = time.monotonic() + BEATS_TO_GONE * self.interval
                if isinstance(exc, StoreUnavailable):
                    log.warning("reconciler: %s; judging again in %g s", exc, BEATS_TO_GONE * self.interval)
                else:
                    log.exception("reconciler pass failed")

    def reconcile(self, now: float) -> list[str]:
        """One pass; the ids of the jobs it sent again."""
        records = [r for r in self.store.get_many(self.store.unfinished_ids()) if r is not None]
        beats = self.store.worker_beats()
        in_broker = self.broker_job_ids() if any(r.status is JobStatus.queued for r in records) else set()
        ttl = BEATS_TO_GONE * self.interval
        sent, missing = [], set()
        for record in records:
            if record.status is JobStatus.running and self._orphaned(record, beats, now, ttl):
                if self.store.requeue(record.id, record.worker):
                    log.warning("job %s: its worker %s is gone or gave it up; queueing it again",
                                record.id, record.worker)
                    self.send(record.id)
                    sent.append(record.id)
            elif record.status is JobStatus.queued and record.id not in in_broker and record.created_at < now - ttl:
                missing.add(record.id)
                if record.id in self._missing_before:
                    log.warning("job %s: queued, but the broker has no message for it; sending it again", record.id)
                    self.send(record.id)
                    sent.append(record.id)
        self._missing_before = missing - set(sent)
        return sent

    @staticmethod
    def _orphaned(record: JobRecord, beats: dict, now: float, ttl: float) -> bool:
        beat = beats.get(record.worker)
        started = record.started_at or record.created_at
        if beat is None or beat.expires_at < now:
            return started < now - ttl
        return record.id not in beat.jobs and beat.beat_at > started
