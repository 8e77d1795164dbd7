"""Sharing the cores between a pipelined stream's decodes and its backbone (``Scorer.score_stream``).

Two rules keep a stream's threads from competing for the same cores:

- :class:`DecodeSlots`: a stream's decoder threads run one decode at a time while the scoring thread
  computes (it has a core of its own), and all of them while it waits for a decode (its core is free). On
  small videos the backbone is the slower stage and a second decoder only takes cores from it; on 720p the
  decode is, and the scoring thread waits, so both decoders run (docs/fast-path.md has the numbers).
- :class:`TorchThreadsWhileDecoding`: the eager torch backbone on one intra-op thread while a decode is in
  flight, so its threads do not wait on each other for the core the decode uses.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class StreamClosed(Exception):
    """Raised in a decoder thread whose stream was closed before its decode started."""


class DecodeSlots:
    """When each of one stream's decodes may start: in submission order (tickets 0, 1, 2, ...), with at most
    ``workers`` running while the scoring thread waits for a decode and at most ``workers - 1`` (at least one)
    while it computes.

    The order matters: a pool thread holding an early video must not be passed by one holding a later video,
    or the scoring thread ends up waiting for the very video that was held back.
    """

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._changed = threading.Condition()
        self._running = 0
        self._next_ticket = 0
        self._scorer_waiting = False
        self._closed = False

    def _may_start(self, ticket: int) -> bool:
        limit = self._workers if self._scorer_waiting else max(1, self._workers - 1)
        return self._closed or (ticket == self._next_ticket and self._running < limit)

    @contextmanager
    def decoding(self, ticket: int) -> Iterator[None]:
        """Held by a decoder thread around the decode of ticket ``ticket``; blocks until it may start."""
        with self._changed:
            self._changed.wait_for(lambda: self._may_start(ticket))
            if self._closed:
                raise StreamClosed("the stream was closed before this video was decoded")
            self._next_ticket += 1
            self._running += 1
            self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    @contextmanager
    def scorer_waiting(self) -> Iterator[None]:
        """Held by the scoring thread while it blocks on a decode: its core is free for another decoder."""
        with self._changed:
            self._scorer_waiting = True
            self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                self._scorer_waiting = False

    def close(self) -> None:
        """Decodes that have not started raise :class:`StreamClosed` instead (the stream's consumer is gone)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()


class TorchThreadsWhileDecoding:
    """Torch's intra-op threads cut to one in a pipelined stream's scoring thread while it has a decode in flight.

    ``torch.set_num_threads`` sets the calling thread's OpenMP pool (what its convolutions and matrix products
    use) and a process-wide value (what ``torch.get_num_threads`` reports, whichever thread set it). So each
    stream cuts and restores its own thread, and the count to restore is read once, when the first of the
    process's streams comes in: a stream that read it while another had it cut would restore one thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams = 0
        self._saved = 0

    def enter(self) -> None:
        """Called by the scoring thread when its stream has a decode in flight."""
        with self._lock:
            if self._streams == 0:
                self._saved = torch.get_num_threads()
            self._streams += 1
        torch.set_num_threads(1)

    def leave(self) -> None:
        """Called by the same thread when its stream has none."""
        with self._lock:
            self._streams -= 1
            saved = self._saved
        torch.set_num_threads(saved)


DECODES_IN_FLIGHT = TorchThreadsWhileDecoding()
