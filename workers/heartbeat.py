"""A worker process announces itself, its loaded model and the jobs it is running, every few seconds.

The API's /readyz ("a model is loaded") and /v1/models read these announcements; one that was not
refreshed for three intervals counts as gone (a killed worker disappears by itself), and the API's
reconciler hands the jobs of a gone worker, or the jobs a live worker no longer lists, back to the
queue. The beat also purges expired jobs from stores that do not expire them by themselves (SQLite).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable

from service.jobs import JobStore
from service.schemas import ModelDescription

log = logging.getLogger(__name__)


def worker_id() -> str:
    """host:pid of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    def __init__(self, store: JobStore, description: ModelDescription, interval: float,
                 worker: str | None = None) -> None:
        self.store = store
        self.description = description
        self.interval = interval
        self.worker = worker or worker_id()
        self._jobs: set[str] = set()
        self._jobs_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        with self._jobs_lock:  # the time and the job list of one beat are taken together
            now, jobs = time.time(), tuple(sorted(self._jobs))
        self.store.register_worker(self.worker, self.description, ttl=3 * self.interval, now=now, jobs=jobs)
        self.store.purge_expired(now)

    def hold(self, take: Callable[[], Iterable[str]]) -> list[str]:
        """Run ``take``, which makes jobs this worker's, and list the ids it returns in this worker's beats.

        No beat falls between the two: a beat after the jobs were taken that did not list them would tell
        the reconciler that this worker gave them up.
        """
        with self._jobs_lock:
            taken = list(take())
            self._jobs.update(taken)
        return taken

    def release(self, job_ids: Iterable[str]) -> None:
        with self._jobs_lock:
            self._jobs.difference_update(job_ids)

    def start(self, announce_now: bool = True) -> None:
        """Announce now (errors propagate) unless told not to, then keep announcing from a daemon thread."""
        if announce_now:
            self.beat()
        self._thread = threading.Thread(target=self._run, name="aqa-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:  # the store may be briefly unreachable; the next beat retries
                log.warning("heartbeat of %s failed", self.worker, exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.store.unregister_worker(self.worker)
        except Exception:
            log.warning("could not unregister %s", self.worker, exc_info=True)
