"""What ``POST /v1/scores?wait=60`` adds on top of scoring, against a real embedded ``aqa serve``.

Run from the repository root::

    .venv/bin/python benchmarks/bench_wait.py [--model DIR] [--requests 100] [--pause 0.3]

One server (embedded mode, the defaults a user gets, a fresh data dir), one keep-alive client, a 4 s
854 x 480 H.264 dive. Two ways of getting a score, alternating request by request in the same run:

- ``wait``: ``POST /v1/scores?wait=60``, answered when the job's completion is signalled (the product);
- ``poll``: ``POST /v1/scores`` then ``GET /v1/jobs/{id}`` at 0.05 s doubling to 0.5 s, the schedule the
  server itself used to poll the job store with before completion was signalled (the baseline).

For each request, the overhead is the client's wall time minus the scoring time the scorer measured in
that same job (``result.timings.total``): upload, probe, admission, queueing, storing, waking, answering.
p50 / p99 of latency, scoring time and overhead per mode. ``--pause`` seconds between requests let the
previous job's spinning threads settle, so neither mode pays for the other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.pretrained import DEMO_MODEL_DIR
from tests.service_processes import free_port, start_api
from training.synth.generate import render_dive_video

POLL_SCHEDULE = (0.05, 2.0, 0.5)  # first pause, growth, cap: the former server-side polling


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def post(client: httpx.Client, video: bytes, wait: bool) -> dict:
    response = client.post("/v1/scores", params={"wait": 60} if wait else None,
                           files={"video": ("dive.mp4", video, "video/mp4")}, data={"difficulty": "3.0"})
    response.raise_for_status()
    return response.json()


def score_waiting(client: httpx.Client, video: bytes) -> dict:
    job = post(client, video, wait=True)
    assert job["status"] == "done", job
    return job


def score_polling(client: httpx.Client, video: bytes) -> dict:
    job_id = post(client, video, wait=False)["job_id"]
    pause, growth, cap = POLL_SCHEDULE
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            assert job["status"] == "done", job
            return job
        time.sleep(pause)
        pause = min(pause * growth, cap)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL_DIR)
    parser.add_argument("--requests", type=int, default=100, help="per mode")
    parser.add_argument("--pause", type=float, default=0.3)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        video = render_dive_video(Path(tmp) / "dive.mp4", seconds=4.0, width=854, height=480, seed=11).read_bytes()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AQA_")}
        env.update(AQA_MODEL_DIR=str(args.model), AQA_DATA_DIR=str(Path(tmp) / "data"), AQA_PORT=str(free_port()))
        server, url = start_api(env, Path(tmp) / "serve.log")
        try:
            modes = {"wait": score_waiting, "poll": score_polling}
            samples: dict[str, dict[str, list[float]]] = {m: {"latency": [], "scoring": [], "overhead": []}
                                                          for m in modes}
            with httpx.Client(base_url=url, timeout=120) as client:
                for fn in modes.values():  # warm-up: first decode, first forward
                    fn(client, video)
                for _ in range(args.requests):
                    for mode, fn in modes.items():
                        time.sleep(args.pause)
                        start = time.perf_counter()
                        job = fn(client, video)
                        latency = time.perf_counter() - start
                        scoring = job["result"]["timings"]["total"]
                        for name, value in (("latency", latency), ("scoring", scoring),
                                            ("overhead", latency - scoring)):
                            samples[mode][name].append(value * 1000)
        finally:
            server.stop()

    report = {mode: {name: {"p50": statistics.median(values), "p99": percentile(values, 99)}
                     for name, values in by_name.items()} for mode, by_name in samples.items()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    print(f"POST /v1/scores against embedded `aqa serve` ({args.requests} requests per mode, alternating, "
          f"{args.pause:g} s apart; commit {commit.stdout.strip()}), milliseconds:")
    for mode, numbers in report.items():
        cells = ", ".join(f"{name} p50 {v['p50']:.1f} / p99 {v['p99']:.1f}" for name, v in numbers.items())
        print(f"  {mode:5s} {cells}")
    if args.json:
        args.json.write_text(json.dumps({"requests": args.requests, "ms": report}, indent=2))


if __name__ == "__main__":
    main()
