"""Load a model with torch's default threads, score a video, fork a pool process, score it there.

``python -m tests.fork_probe MODEL_DIR VIDEO [--release-openmp]`` prints ``{"parent": s, "child": s}``.
Without ``--release-openmp`` the pool process inherits the parent's OpenMP pool and hangs in its first
parallel op (issue #18's deadlock); with it, :func:`workers.fork_safety.install` releases the OpenMP
threads before the fork, as the Celery worker's parent does. Run by tests/test_worker_fork_safety.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import billiard

from models.scorer import Scorer
from workers import fork_safety

_scorer: Scorer | None = None


def _score(video: str) -> float:
    return _scorer.score(Path(video)).score


def main(model_dir: str, video: str, *flags: str) -> None:
    global _scorer
    _scorer = Scorer.from_dir(Path(model_dir))  # the default thread count: a live OpenMP pool from here on
    parent = _score(video)
    if "--release-openmp" in flags:
        fork_safety.install()
    with billiard.get_context("fork").Pool(1) as pool:  # Celery's pool library, forking as its prefork pool does
        child = pool.apply(_score, (video,))
    print(json.dumps({"parent": parent, "child": child}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
