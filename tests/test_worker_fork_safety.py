"""Issue #18 item 1: nothing that a forked pool process cannot inherit lives in the worker's parent.

The reproduction: a process that loaded the model with torch's default threads and scored once holds a
live OpenMP pool; a pool process forked from it dies or hangs in its first parallel op. The worker's
parent releases those threads before every fork (so the same sequence then scores), and never loads the
model nor touches CUDA at all: a real ``aqa worker`` on a pretend-GPU machine is watched for it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.scorer import Scorer
from service.settings import ServiceSettings
from tests.service_processes import REPO, RedisNamespace, ServiceProcess, free_port, service_env, wait_until
from workers import model_cache

pytestmark = pytest.mark.slow


def fork_probe(model_dir: Path, video: Path, *flags: str, timeout: float) -> subprocess.CompletedProcess | None:
    """Run tests/fork_probe.py in its own session; None if it was still running after ``timeout`` s."""
    process = subprocess.Popen([sys.executable, "-m", "tests.fork_probe", str(model_dir), str(video), *flags],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the probe and its hung pool process (it holds the pipes open)
        process.communicate()
        return None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_a_model_loaded_in_the_parent_then_forked_scores_in_the_pool_process(tiny_model_dir: Path,
                                                                              tiny_dataset: Path) -> None:
    video = tiny_dataset / "videos" / "dive_00004.mp4"
    released = fork_probe(tiny_model_dir, video, "--release-openmp", timeout=240)
    assert released is not None and released.returncode == 0, released and released.stderr[-2000:]
    scores = json.loads(released.stdout)
    assert scores["child"] == scores["parent"] == pytest.approx(Scorer.from_dir(tiny_model_dir).score(video).score)

    inherited = fork_probe(tiny_model_dir, video, timeout=60)  # the reproduction: no release before the fork
    assert inherited is None or inherited.returncode != 0  # the pool process hung or crashed, no score came back
    if inherited is not None:
        assert "Worker exited prematurely" in inherited.stderr


def test_the_worker_parent_never_touches_cuda_before_it_forks(tiny_model_dir: Path, tmp_path: Path) -> None:
    """AQA_DEVICE=auto on a machine with a (pretend) GPU: only the pool process may initialise CUDA."""
    log = tmp_path / "cuda.jsonl"
    namespace = RedisNamespace()
    env = service_env(**namespace.settings(), model_dir=tiny_model_dir, data_dir=tmp_path, port=free_port(),
                      device="auto")
    worker = ServiceProcess([sys.executable, "-m", "tests.fake_gpu_worker", str(log), "--concurrency", "1"],
                            env, tmp_path / "worker.log")
    try:
        def events() -> list[dict]:
            return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []

        # the pool process tries CUDA (and fails: there is no real GPU), proving the watch works
        wait_until(lambda: any(e["event"] == "cuda_context" and e["pid"] != worker.pid for e in events()), 120,
                   "the pool process to try CUDA", interval=0.2)
        time.sleep(0.5)
        parent = [e for e in events() if e["pid"] == worker.pid]
    finally:
        worker.stop()
        namespace.cleanup()
    forks = [e for e in parent if e["event"] == "fork"]
    assert forks, "the worker's parent never forked a pool process"
    assert not [e for e in parent if e["event"] != "fork"], f"the worker's parent touched CUDA: {parent}"
    assert not any(e["cuda_initialized"] for e in forks)
    children = [e for e in events() if e["ppid"] == worker.pid and e["event"] != "fork"]
    assert {e["event"] for e in children} >= {"cuda_driver_init", "cuda_context"}  # device auto -> cuda, in the child


def test_each_pool_process_takes_an_equal_share_of_the_cpus(tiny_model_dir: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    settings = ServiceSettings(model_dir=tiny_model_dir)
    assert model_cache.threads_per_process(settings, 1) == 0  # one process: torch's own default (every CPU)
    assert model_cache.threads_per_process(settings, 2) == max(1, cpus // 2)
    assert model_cache.threads_per_process(settings, 4 * cpus) == 1
    assert model_cache.threads_per_process(ServiceSettings(model_dir=tiny_model_dir, torch_threads=3), 2) == 3
