"""Real Celery workers (`aqa worker`, prefork) on the real Redis, behind a real `aqa serve` in Celery mode.

A job whose pool process is killed (-9), or whose whole worker is killed (-9) and replaced by a fresh
one, still finishes with exactly one result; a job over the soft time limit fails with a reason. The
workers run with the threads a user gets (no AQA_TORCH_THREADS): each pool process loads its model after
the fork. The redelivery delay (AQA_VISIBILITY_TIMEOUT) is set to 3 s here to show it;
AQA_TEST_TASK_DELAY_SECONDS makes each job wait before scoring so it can be killed mid-way.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from models.scorer import QueryLabels, Scorer
from service.client import ScoringClient
from service.jobs.redis import RedisJobStore
from tests.service_processes import (
    REDIS_URL,
    RedisNamespace,
    ServiceProcess,
    child_pids,
    free_port,
    service_env,
    start_api,
    start_worker,
    wait_until,
)

pytestmark = pytest.mark.slow

VISIBILITY_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def namespace() -> Iterator[RedisNamespace]:
    namespace = RedisNamespace()
    try:
        yield namespace
    finally:
        namespace.cleanup()


@pytest.fixture(scope="module")
def env(namespace: RedisNamespace, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return service_env(**namespace.settings(), model_dir=tiny_model_dir, data_dir=tmp_path_factory.mktemp("celery"),
                       port=free_port(), visibility_timeout=VISIBILITY_TIMEOUT,
                       task_soft_time_limit=20, task_time_limit=30, worker_heartbeat_seconds=1)


@pytest.fixture(scope="module")
def api(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url = start_api(env, tmp_path_factory.mktemp("api-log") / "api.log")
    try:
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def store(namespace: RedisNamespace) -> Iterator[RedisJobStore]:
    store = RedisJobStore(REDIS_URL, prefix=namespace.prefix, result_expires=600)
    try:
        yield store
    finally:
        store.close()


def worker(env: dict[str, str], log: Path, **settings: object) -> ServiceProcess:
    return start_worker({**env, **{f"AQA_{k.upper()}": str(v) for k, v in settings.items()}}, log)


def dive(tiny_dataset: Path, n: int) -> Path:
    return tiny_dataset / "videos" / f"dive_{n:05d}.mp4"


def running_on(store: RedisJobStore, job_id: str) -> int:
    """Wait until the job runs; the pid of the process running it (the job's worker is host:pid)."""
    record = wait_until(lambda: (r := store.get(job_id)) and r.status.value == "running" and r, 30,
                        f"job {job_id} to run")
    return int(record.worker.rsplit(":", 1)[1])


def finished_count(store: RedisJobStore) -> int:
    return int(store.counters().get("finished:done", 0))


def test_a_job_survives_the_kill_of_its_pool_process(api: str, env: dict[str, str], store: RedisJobStore,
                                                     tiny_dataset: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    process = worker(env, tmp_path / "worker.log", test_task_delay_seconds=3)
    try:
        done_before = finished_count(store)
        with ScoringClient(api) as client:
            job_id = client.submit(dive(tiny_dataset, 0), difficulty=3.0).job_id
            child = running_on(store, job_id)
            assert child in child_pids(process.pid)  # a prefork pool process, not the worker itself
            os.kill(child, signal.SIGKILL)
            job = client.wait(job_id, timeout=60)
        assert job.status.value == "done" and job.attempts == 2
        assert finished_count(store) == done_before + 1  # exactly one result was stored
        expected = Scorer.from_dir(tiny_model_dir).score(dive(tiny_dataset, 0), QueryLabels(difficulty=3.0))
        assert job.result.score == pytest.approx(expected.score, rel=1e-6)
        assert "signal 9" in process.log()
        loads = [line for line in process.log().splitlines() if "loaded model" in line]
        assert len(loads) == 2 and all("ForkPoolWorker" in line for line in loads)  # each pool process, never the parent
    finally:
        process.stop()


def test_a_job_survives_the_kill_of_its_whole_worker(api: str, env: dict[str, str], store: RedisJobStore,
                                                     tiny_dataset: Path, tmp_path: Path) -> None:
    first = worker(env, tmp_path / "first.log", test_task_delay_seconds=3)
    try:
        done_before = finished_count(store)
        with ScoringClient(api) as client:
            job_id = client.submit(dive(tiny_dataset, 1)).job_id
            running_on(store, job_id)
            first.kill()  # SIGKILL to the worker and its pool at once: the job stays unacknowledged
    finally:
        first.stop()
    killed_at = time.monotonic()
    second = worker(env, tmp_path / "second.log")
    try:
        with ScoringClient(api) as client:
            job = client.wait(job_id, timeout=60)
        redelivered_after = time.monotonic() - killed_at
    finally:
        second.stop()
    assert job.status.value == "done" and job.attempts == 2
    assert finished_count(store) == done_before + 1
    print(f"\nwhole-worker kill: redelivered and finished {redelivered_after:.1f} s after the kill "
          f"(visibility timeout {VISIBILITY_TIMEOUT:g} s, fresh worker start-up included)")


def test_a_job_over_the_soft_time_limit_fails_with_a_reason(api: str, env: dict[str, str], tiny_dataset: Path,
                                                            tmp_path: Path) -> None:
    process = worker(env, tmp_path / "worker.log", test_task_delay_seconds=3, task_soft_time_limit=1,
                     task_time_limit=10)
    try:
        with ScoringClient(api) as client:
            job = client.score(dive(tiny_dataset, 2), timeout=60)
            ready = client.readiness()
            models = client.models()
    finally:
        process.stop()
    assert job.status.value == "failed" and job.error.code == "timeout"
    assert job.error.message.startswith("Scoring took longer than this server's 1 s limit")
    assert ready.ready and ready.mode == "celery"
    assert models[0].workers == 1 and models[0].runtime == "torch"


def test_a_queued_job_whose_message_redis_lost_is_sent_again(api: str, env: dict[str, str], tiny_dataset: Path,
                                                             tmp_path: Path) -> None:
    """The reconciler: a job queued in the store but held nowhere by the broker is sent again."""
    broker = redis.Redis.from_url(REDIS_URL)
    queue = env["AQA_CELERY_KEY_PREFIX"] + env["AQA_QUEUE_NAME"]
    with ScoringClient(api) as client:
        job_id = client.submit(dive(tiny_dataset, 3)).job_id  # no worker yet: its message waits in the queue
        wait_until(lambda: broker.llen(queue) == 1, 10, "the message to reach the queue")
        broker.delete(queue)  # as a Redis that came back without its last writes
        lost_at = time.monotonic()
        process = worker(env, tmp_path / "worker.log")
        try:
            job = client.wait(job_id, timeout=60)
        finally:
            process.stop()
    broker.close()
    assert job.status.value == "done" and job.attempts == 1
    print(f"\nlost message: sent again and done {time.monotonic() - lost_at:.1f} s later "
          f"(heartbeat {env['AQA_WORKER_HEARTBEAT_SECONDS']} s, worker start-up included)")


def test_a_running_job_whose_worker_and_message_are_gone_is_queued_again(api: str, env: dict[str, str],
                                                                         store: RedisJobStore, tiny_dataset: Path,
                                                                         tmp_path: Path) -> None:
    """The reconciler: a job left running by a dead worker, with no message left to redeliver, runs again."""
    broker = redis.Redis.from_url(REDIS_URL)
    first = worker(env, tmp_path / "first.log", test_task_delay_seconds=3)
    try:
        with ScoringClient(api) as client:
            job_id = client.submit(dive(tiny_dataset, 4)).job_id
            running_on(store, job_id)
            first.kill()
    finally:
        first.stop()
    prefix = env["AQA_CELERY_KEY_PREFIX"]
    broker.delete(prefix + "unacked", prefix + "unacked_index")  # nothing for Celery to redeliver
    second = worker(env, tmp_path / "second.log")
    try:
        with ScoringClient(api) as client:
            job = client.wait(job_id, timeout=60)
    finally:
        second.stop()
        broker.close()
    assert job.status.value == "done" and job.attempts == 2


def test_jobs_waiting_for_a_worker_are_scored_together_each_exactly_once(
        api: str, env: dict[str, str], store: RedisJobStore, tiny_dataset: Path, tiny_model_dir: Path,
        tmp_path: Path) -> None:
    """Dynamic batching with the default batch size (8): of ten jobs queued before the worker starts, the first
    task takes eight and the next the two left; the messages of the jobs a batch took find them done, and each
    result equals the video scored alone."""
    done_before = finished_count(store)
    videos = [dive(tiny_dataset, n % 6) for n in range(10)]
    with ScoringClient(api) as client:
        job_ids = [client.submit(video, difficulty=3.0).job_id for video in videos]
        process = worker(env, tmp_path / "worker.log")
        try:
            jobs = [client.wait(job_id, timeout=60) for job_id in job_ids]
            metrics = client.http.get("/metrics").text
        finally:
            process.stop()
    assert [job.status.value for job in jobs] == ["done"] * 10 and [job.attempts for job in jobs] == [1] * 10
    assert finished_count(store) == done_before + 10
    log = process.log()
    assert f"job {job_ids[0]}: attempt 1" in log and f"with waiting job(s) {', '.join(job_ids[1:8])}" in log
    assert f"job {job_ids[8]}: attempt 1" in log and f"with waiting job(s) {job_ids[9]}" in log
    assert len({record.worker for record in store.get_many(job_ids)}) == 1
    alone = Scorer.from_dir(tiny_model_dir)
    for job, video in zip(jobs, videos, strict=True):
        assert job.result.score == pytest.approx(alone.score(video, QueryLabels(difficulty=3.0)).score, abs=1e-5)
    for taken in job_ids[1:8] + job_ids[9:]:  # their own messages came later and found them done
        assert f"job {taken} is finished, unknown or in another worker's batch: nothing to do" in log
    assert "aqa_jobs_scored_by_batch_size_total{size=" in metrics


def test_a_batch_whose_worker_is_killed_ends_each_job_exactly_once(api: str, env: dict[str, str],
                                                                   store: RedisJobStore, tiny_dataset: Path,
                                                                   tmp_path: Path) -> None:
    done_before = finished_count(store)
    with ScoringClient(api) as client:
        job_ids = [client.submit(dive(tiny_dataset, n)).job_id for n in range(3)]
        first = worker(env, tmp_path / "first.log", test_task_delay_seconds=3)
        try:
            holder = wait_until(lambda: len({(r.status.value, r.worker) for r in store.get_many(job_ids)}) == 1
                                and store.get(job_ids[0]).status.value == "running" and store.get(job_ids[0]).worker,
                                30, "one worker to take the three jobs")
            first.kill()  # the worker and its pool, mid-batch: one message unacknowledged, two still queued
        finally:
            first.stop()
        second = worker(env, tmp_path / "second.log")
        try:
            jobs = [client.wait(job_id, timeout=60) for job_id in job_ids]
        finally:
            second.stop()
    assert [job.status.value for job in jobs] == ["done"] * 3
    assert all(record.worker != holder for record in store.get_many(job_ids))
    assert all(job.attempts >= 2 for job in jobs)
    assert finished_count(store) == done_before + 3
