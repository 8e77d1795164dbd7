"""The embedded pool: scoring threads inside the API process, for running with nothing but Python.

Same job semantics as the Celery workers (the same :func:`workers.runner.run_job` on the same store
contract): the jobs live in SQLite in the data dir, and at start-up every job accepted but not
finished before a crash or restart is queued again, oldest first, so an accepted job is never lost.
Unlike Celery workers, the pool cannot interrupt a running job: time limits are not enforced here.
Dynamic batching as in the workers: a thread that takes a job also takes the ids waiting in the queue
behind it, up to ``AQA_WORKER_BATCH_SIZE`` in all, and scores them together, pipelined.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from models.scorer import Scorer
from service.jobs import JobStore
from service.schemas import Check, JobRecord
from service.settings import ServiceSettings
from workers import model_cache
from workers.heartbeat import Heartbeat, worker_id
from workers.runner import run_job

log = logging.getLogger(__name__)

_STOP = None


class EmbeddedPool:
    """``embedded_workers`` threads taking job ids from an in-memory queue fed by the API and the store."""

    mode = "embedded"

    def __init__(self, settings: ServiceSettings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self.scorer: Scorer | None = None
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._heartbeat: Heartbeat | None = None

    def start(self) -> None:
        """Load the model (ConfigurationError if it cannot be), re-queue unfinished jobs, start threads."""
        self.scorer = model_cache.get_scorer(self.settings)
        self._heartbeat = Heartbeat(self.store, model_cache.describe(self.scorer, self.settings),
                                    self.settings.worker_heartbeat_seconds)
        self._heartbeat.start()
        pending = self.store.unfinished_ids()
        if pending:
            log.info("re-queueing %d job(s) accepted before the last stop", len(pending))
        for job_id in pending:
            self._queue.put(job_id)
        for n in range(self.settings.embedded_workers):
            thread = threading.Thread(target=self._work, name=f"aqa-embedded-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def dispatch(self, job_id: str) -> None:
        self._queue.put(job_id)

    def _work(self) -> None:
        name = f"{worker_id()}/{threading.current_thread().name}"

        def take_waiting(limit: int) -> list[JobRecord]:
            """Jobs waiting in this pool's queue, started as this thread's (dynamic batching)."""
            taken: list[JobRecord] = []
            while len(taken) < limit:
                try:
                    job_id = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job_id is _STOP:  # left for this thread's next get
                    self._queue.put(_STOP)
                    break
                if (record := self.store.start(job_id, name, time.time())) is not None:
                    taken.append(record)
            return taken

        while (job_id := self._queue.get()) is not _STOP:
            try:
                run_job(job_id, self.store, self.settings, lambda: self.scorer, name, heartbeat=self._heartbeat,
                        take_waiting=take_waiting)
            except Exception:  # the store failed; the jobs stay unfinished and are re-queued at next start
                log.exception("job %s could not be run", job_id)

    def stop(self) -> None:
        """Let running jobs finish; jobs still queued stay in the store for the next start."""
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=60)
        if self._heartbeat is not None:
            self._heartbeat.stop()

    def checks(self) -> dict[str, Check]:
        alive = sum(t.is_alive() for t in self._threads)
        loaded = self.scorer is not None
        ref = self.scorer.model_ref if self.scorer else None
        return {
            "model": Check(ok=loaded, detail=f"{ref.id} {ref.version} loaded" if ref else "model not loaded"),
            "workers": Check(ok=alive > 0, detail=f"{alive} embedded scoring thread(s) running"),
        }
