"""The job store contract, on both stores: SQLite (embedded) and the real Redis (Celery mode)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from models.results import ExemplarVote, Interval, ModelRef, ScoreResult
from service.jobs import JobStore, bucket_label, histograms_from_counters
from service.jobs.redis import RedisJobStore
from service.jobs.sqlite import SqliteJobStore
from service.schemas import (
    BatchRecord,
    ExemplarInfo,
    JobError,
    JobRecord,
    JobRequest,
    JobStatus,
    ModelDescription,
    ModelInfo,
)
from tests.service_processes import REDIS_URL, RedisNamespace

MODEL = ModelRef(id="m", version="1", head="core", fingerprint="abc123")


def score_result(score: float, total_seconds: float = 0.4) -> ScoreResult:
    vote = ExemplarVote(id="ex1", final_score=60.0, label=20.0, relative=1.5, vote=21.5, selected_because="nearest")
    return ScoreResult(score=score, interval=Interval(low=score - 5, high=score + 5, method="votes"), vote_spread=0.0,
                       votes=[vote], model=MODEL,
                       timings={"decode": 0.2, "features": 0.15, "voting": 0.05, "total": total_seconds})


def job(job_id: str, created: float = 1000.0) -> JobRecord:
    request = JobRequest(source_name=f"{job_id}.mp4", video_path=f"/data/{job_id}.mp4", owns_file=True)
    return JobRecord(id=job_id, status=JobStatus.queued, request=request, created_at=created)


def model_description() -> ModelDescription:
    info = ModelInfo(model=MODEL, label_kind="execution", num_exemplars=1, votes_per_score=1, selection="nearest",
                     interval_method="votes", device="cpu", runtime="torch")
    return ModelDescription(info=info, exemplars=[ExemplarInfo(id="ex1", final_score=60.0, difficulty=3.0)])


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        yield SqliteJobStore(tmp_path / "jobs.sqlite3", result_expires=3600)
        return
    with fresh_redis_store() as store:
        yield store


@contextmanager
def fresh_redis_store() -> Iterator[RedisJobStore]:
    """A store on the shared Redis under a prefix of its own, deleted afterwards."""
    namespace = RedisNamespace()
    store = RedisJobStore(REDIS_URL, prefix=namespace.prefix, result_expires=3600)
    try:
        yield store
    finally:
        store.close()
        namespace.cleanup()


def test_admission_is_all_or_nothing_within_the_queue_depth(store: JobStore) -> None:
    assert store.admit([job("a"), job("b")], max_depth=3)
    assert not store.admit([job("c"), job("d")], max_depth=3)  # 2 + 2 > 3: neither is inserted
    assert store.get("c") is None and store.active_count() == 2
    assert store.admit([job("c")], max_depth=3)
    assert store.unfinished_ids() == ["a", "b", "c"]


def test_start_counts_attempts_and_never_restarts_a_finished_job(store: JobStore) -> None:
    store.admit([job("a")], max_depth=10)
    first = store.start("a", "w1", now=1001.0)
    assert first.status is JobStatus.running and first.attempts == 1 and first.worker == "w1"
    again = store.start("a", "w2", now=1002.0)  # redelivered after its worker died
    assert again.attempts == 2 and again.worker == "w2"
    assert store.finish("a", now=1003.0, result=score_result(50.0))
    assert store.start("a", "w3", now=1004.0) is None
    assert store.get("a").attempts == 2
    assert store.start("unknown", "w1", now=1.0) is None


def test_the_first_stored_result_wins(store: JobStore) -> None:
    store.admit([job("a")], max_depth=10)
    store.start("a", "w1", now=1001.0)
    assert store.finish("a", now=1002.0, result=score_result(50.0))
    assert not store.finish("a", now=1003.0, result=score_result(99.0))
    assert not store.finish("a", now=1004.0, error=JobError(code="internal_error", message="late"))
    stored = store.get("a")
    assert stored.status is JobStatus.done and stored.result.score == 50.0 and stored.error is None
    assert stored.finished_at == 1002.0
    assert store.state_counts() == {"queued": 0, "running": 0, "done": 1, "failed": 0}
    assert store.active_count() == 0


def test_concurrent_finishes_store_exactly_one_result(store: JobStore) -> None:
    store.admit([job("a")], max_depth=10)
    store.start("a", "w1", now=1001.0)
    outcomes: list[bool] = []
    threads = [threading.Thread(target=lambda s=s: outcomes.append(store.finish("a", 1002.0, result=score_result(s))))
               for s in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] * 7 + [True]
    assert store.counters()["finished:done"] == 1


def test_finishing_records_stage_latencies_once(store: JobStore) -> None:
    store.admit([job("a", created=1000.0), job("b", created=1000.0)], max_depth=10)
    store.start("a", "w", now=1000.3)
    store.finish("a", now=1001.0, result=score_result(50.0, total_seconds=0.4))
    store.finish("a", now=1002.0, result=score_result(50.0, total_seconds=0.4))  # ignored
    store.start("b", "w", now=1003.0)
    store.finish("b", now=1004.0, error=JobError(code="not_a_video", message="The file is plain text, not a video."))
    latencies = histograms_from_counters(store.counters())
    assert latencies["total"].count == 1 and latencies["total"].buckets == {bucket_label(0.4): 1}
    assert latencies["queue_wait"].count == 2
    assert latencies["queue_wait"].total == pytest.approx(0.3 + 3.0)
    assert store.state_counts()["failed"] == 1
    assert store.get("b").error.code == "not_a_video"


def test_batches_round_trip(store: JobStore) -> None:
    batch = BatchRecord(id="b1", created_at=time.time(), job_ids=["a", "b"], source="uploads")
    store.save_batch(batch, ttl=3600)
    assert store.get_batch("b1") == batch
    assert store.get_batch("nope") is None


def test_live_models_forget_workers_that_stopped_beating(store: JobStore) -> None:
    description = model_description()
    store.register_worker("w1", description, ttl=30, now=1000.0)
    store.register_worker("w2", description, ttl=30, now=1010.0)
    [live] = store.live_models(now=1020.0)
    assert live.info.workers == 2 and live.exemplars[0].id == "ex1"
    assert store.live_models(now=1035.0)[0].info.workers == 1  # w1 missed its beats
    store.unregister_worker("w2")
    assert store.live_models(now=1035.0) == []


def test_redis_expires_finished_jobs_only() -> None:
    namespace = RedisNamespace()
    store = RedisJobStore(REDIS_URL, prefix=namespace.prefix, result_expires=120)
    try:
        store.admit([job("a"), job("b")], max_depth=10)
        store.finish("a", now=1.0, result=score_result(1.0))
        assert 0 < namespace.client.ttl(f"{namespace.prefix}job:a") <= 120
        assert namespace.client.ttl(f"{namespace.prefix}job:b") == -1  # an unfinished job never expires
    finally:
        store.close()
        namespace.cleanup()


@pytest.fixture
def redis_store() -> Iterator[RedisJobStore]:
    with fresh_redis_store() as store:
        yield store


def test_a_worker_takes_waiting_jobs_oldest_first_and_their_messages_find_them_taken(redis_store: RedisJobStore) -> None:
    store = redis_store
    store.admit([job(name, created=1000.0 + n) for n, name in enumerate("abcde")], max_depth=10)
    store.register_worker("w1", model_description(), ttl=30, now=1000.0, jobs=("a",))
    store.start("a", "w1", now=1001.0)
    taken = store.claim_waiting("w1", now=1001.0, limit=2)
    assert [r.id for r in taken] == ["b", "c"]
    assert all(r.status is JobStatus.running and r.worker == "w1" and r.attempts == 1 for r in taken)
    assert store.start("b", "w2", now=1002.0) is None  # b's own message, while w1 is alive: left to w1
    assert store.get("b").worker == "w1" and store.get("b").attempts == 1
    assert store.claim_waiting("w2", now=1002.0, limit=5) == [store.get("d"), store.get("e")]  # never b or c
    assert store.finish("b", now=1003.0, result=score_result(50.0))
    assert store.start("b", "w2", now=1004.0) is None


def test_a_taken_job_goes_to_whoever_gets_its_message_once_its_holder_is_gone(redis_store: RedisJobStore) -> None:
    store = redis_store
    store.admit([job("a"), job("b"), job("c")], max_depth=10)
    store.register_worker("w1", model_description(), ttl=30, now=1000.0, jobs=("a", "b"))
    store.start("a", "w1", now=1000.0)
    assert [r.id for r in store.claim_waiting("w1", now=1000.0, limit=1)] == ["b"]
    again = store.start("b", "w2", now=1031.0)  # w1's beat expired at 1030
    assert again.worker == "w2" and again.attempts == 2
    assert store.start("b", "w3", now=1032.0).worker == "w3"  # no longer held in a batch: a plain redelivery
    assert [r.id for r in store.claim_waiting("w1", now=1000.0, limit=1)] == ["c"]
    assert store.requeue("c", "w1")  # the reconciler, after w1 stopped listing it
    assert store.start("c", "w2", now=1001.0).worker == "w2"  # w1 is alive, but the job was handed back


def test_waiting_jobs_are_left_to_idle_workers(redis_store: RedisJobStore) -> None:
    store = redis_store
    store.admit([job(name, created=1000.0 + n) for n, name in enumerate("abcd")], max_depth=10)
    store.register_worker("busy", model_description(), ttl=30, now=1000.0, jobs=("a",))
    store.register_worker("idle", model_description(), ttl=30, now=1000.0)
    store.register_worker("gone", model_description(), ttl=30, now=900.0)  # expired: not counted as idle
    store.start("a", "busy", now=1001.0)
    assert [r.id for r in store.claim_waiting("busy", now=1001.0, limit=3)] == ["c", "d"]  # b is the idle one's
    assert store.get("b").status is JobStatus.queued
    assert store.claim_waiting("busy", now=1001.0, limit=0) == []


def test_sqlite_purges_expired_jobs_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = SqliteJobStore(path, result_expires=100)
    store.admit([job("old"), job("new"), job("queued")], max_depth=10)
    store.finish("old", now=1000.0, result=score_result(1.0))
    store.finish("new", now=1950.0, result=score_result(2.0))
    store.purge_expired(now=2000.0)
    reopened = SqliteJobStore(path, result_expires=100)
    assert reopened.get("old") is None and reopened.get("new").result.score == 2.0
    assert reopened.unfinished_ids() == ["queued"]
