"""Wake the requests waiting for a job (``POST /v1/scores?wait=...``) the moment it finishes.

The job store calls back on every finish: in process for SQLite (embedded mode), and through a Redis
pub/sub channel in Celery mode, published by the finishing worker in the same atomic step that stores
the outcome. A waiter registers before it first reads the job, so a finish between that read and the
wait cannot be missed. A callback without a job id (the subscription was lost for a while) wakes every
waiter to read again, and each waiter re-reads at least every ``RECHECK_SECONDS`` whatever happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

RECHECK_SECONDS = 5.0


class CompletionWaiters:
    """Events of the requests waiting for each job, set from any thread when the job finishes."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events: dict[str, set[asyncio.Event]] = {}

    def notify(self, job_id: str | None) -> None:
        """``job_id`` finished (None: any job may have); safe to call from any thread."""
        try:
            self._loop.call_soon_threadsafe(self._wake, job_id)
        except RuntimeError:  # the loop is closed: the server is stopping and nobody waits any more
            pass

    def _wake(self, job_id: str | None) -> None:
        groups = self._events.values() if job_id is None else [self._events.get(job_id, set())]
        for events in groups:
            for event in events:
                event.set()

    @contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever ``job_id`` may have finished; register it before reading the job."""
        event = asyncio.Event()
        self._events.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._events[job_id]
            events.discard(event)
            if not events:
                del self._events[job_id]
