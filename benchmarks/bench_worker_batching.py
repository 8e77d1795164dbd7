"""Dynamic batching in the workers: a backlog of jobs scored one per forward pass against several per pass.

The real embedded pool (the same ``workers.runner.run_job`` a Celery worker runs) with the demo model: N jobs
admitted to a fresh SQLite store, the pool started (it takes them as a backlog), the wall time until the last
one is finished, for each ``AQA_WORKER_BATCH_SIZE``, side by side in rotating turns. Every job's score is
checked to be the same whatever the batch size. The videos are the batch row's synthetic dives.

    .venv/bin/python benchmarks/bench_worker_batching.py [--jobs 24] [--repeats 5] [--sizes 1 4 8] [--json F]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from common import MEDIA_DIR, machine, side_by_side

from models.pretrained import DEMO_MODEL_DIR
from service.jobs.sqlite import SqliteJobStore
from service.schemas import JobRecord, JobRequest, JobStatus
from service.settings import ServiceSettings
from workers.embedded import EmbeddedPool


def backlog(videos: list[Path], batch_size: int, scores: dict[int, list[float]]) -> None:
    """Admit one job per video, start a pool on them, wait until all are finished; record their scores."""
    with tempfile.TemporaryDirectory() as data_dir:
        settings = ServiceSettings(model_dir=DEMO_MODEL_DIR, data_dir=Path(data_dir), worker_batch_size=batch_size,
                                   archive_roots=[videos[0].parent])
        store = SqliteJobStore(settings.sqlite_path, result_expires=3600)
        now = time.time()
        store.admit([JobRecord(id=f"j{n:03d}", status=JobStatus.queued, created_at=now + n,
                               request=JobRequest(source_name=video.name, video_path=str(video), owns_file=False))
                     for n, video in enumerate(videos)], max_depth=len(videos))
        pool = EmbeddedPool(settings, store)
        pool.start()
        try:
            while store.unfinished_ids():
                time.sleep(0.005)
        finally:
            pool.stop()
        records = store.get_many([f"j{n:03d}" for n in range(len(videos))])
        if any(r.result is None for r in records):
            raise RuntimeError(f"jobs failed: {[r.error for r in records if r.result is None]}")
        scores[batch_size] = [r.result.score for r in records]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    from training.synth.generate import generate_dataset

    folder = MEDIA_DIR / "batch50"
    if not (folder / "labels.csv").is_file():
        generate_dataset(folder, n=50, seed=7, progress=False)
    videos = sorted((folder / "videos").glob("*.mp4"))[: args.jobs]
    scores: dict[int, list[float]] = {}
    timings = side_by_side({f"batch_{size}": (lambda size=size: backlog(videos, size, scores)) for size in args.sizes},
                           args.repeats)
    baseline = timings[f"batch_{args.sizes[0]}"]
    result: dict[str, Any] = {
        "machine": machine(), "jobs": len(videos), "timings": timings,
        "jobs_per_second": {name: {"best": len(videos) / t["min_s"], "median": len(videos) / t["median_s"]}
                            for name, t in timings.items()},
        "speedup_over_first": {name: {"min": baseline["min_s"] / t["min_s"], "median": baseline["median_s"] / t["median_s"]}
                               for name, t in timings.items()},
        "max_abs_score_difference": max(abs(a - b) for size in args.sizes
                                        for a, b in zip(scores[size], scores[args.sizes[0]], strict=True)),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
