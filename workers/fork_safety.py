"""Keep a process that forks workers (Celery's prefork parent) safe to fork.

A forked child has the parent's memory but only the thread that forked. Two things in torch do not
survive that. The OpenMP thread pool (GNU libgomp here, which torch's intra-op parallelism, MKL and
oneDNN share): the child's first parallel op waits forever at a barrier for pool threads that do not
exist (``gomp_team_barrier_wait_end``). And a CUDA context: the child cannot use it, nor make its own
("Cannot re-initialize CUDA in forked subprocess"). Even ``torch.cuda.is_available()`` initialises the
driver, unless it is answered through NVML.

So the worker's parent never loads the model nor asks torch about CUDA: each pool process loads its own
copy after the fork (``workers.tasks``). As a second line, :func:`install` releases the OpenMP runtime's
threads before every fork (``omp_pause_resource_all``, OpenMP 5.0), so torch work that anything else
does in the parent cannot hang the children either, and logs an error if a fork meets a live CUDA context.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

OPENMP_LIBRARIES = ("libgomp", "libiomp5", "libomp")
OMP_PAUSE_HARD = 2  # omp_pause_resource_t: release every resource, threads included

_installed = False


def openmp_runtimes() -> list[ctypes.CDLL]:
    """The OpenMP runtimes loaded in this process (found in /proc/self/maps), as ctypes libraries."""
    paths = set()
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    for line in maps.splitlines():
        path = line.rsplit(" ", 1)[-1]
        if Path(path).name.startswith(OPENMP_LIBRARIES) and ".so" in path:
            paths.add(path)
    runtimes = []
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)  # already loaded: the same handle, nothing new is initialised
        except OSError:
            continue
        if hasattr(library, "omp_pause_resource_all"):
            runtimes.append(library)
    return runtimes


def release_openmp_threads() -> None:
    """End the OpenMP runtimes' worker threads; the next parallel region starts a fresh pool."""
    for runtime in openmp_runtimes():
        runtime.omp_pause_resource_all(OMP_PAUSE_HARD)


def cuda_initialised() -> bool:
    """Whether torch has created a CUDA context in this process (without creating one to find out)."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def _before_fork() -> None:
    release_openmp_threads()
    if cuda_initialised():
        log.error("forking a process that has initialised CUDA: the child cannot use the GPU. Nothing in the "
                  "worker's parent may load the model or ask torch about CUDA.")


def install() -> None:
    """Release OpenMP threads (and check CUDA) before every fork of this process; idempotent."""
    global _installed
    if not _installed:
        os.register_at_fork(before=_before_fork)
        _installed = True
