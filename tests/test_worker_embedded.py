"""Worker internals with the real tiny model: model cache, configuration errors, run_job, the embedded pool."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest

from models.scorer import QueryLabels, Scorer
from service.jobs.sqlite import SqliteJobStore
from service.schemas import JobRecord, JobRequest, JobStatus
from service.settings import ConfigurationError, ServiceSettings
from workers import model_cache
from workers.embedded import EmbeddedPool
from workers.runner import run_job


@pytest.fixture(scope="module")
def dive(tiny_dataset: Path) -> Path:
    return tiny_dataset / "videos" / "dive_00001.mp4"


def settings_for(model_dir: Path, data_dir: Path, **extra: object) -> ServiceSettings:
    return ServiceSettings(model_dir=model_dir, data_dir=data_dir, **extra)


def request_for(video: Path, owns_file: bool = False, difficulty: float | None = None) -> JobRequest:
    return JobRequest(source_name=video.name, video_path=str(video), owns_file=owns_file, difficulty=difficulty)


def test_the_model_is_loaded_once_per_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = settings_for(tiny_model_dir, tmp_path)
    first = model_cache.get_scorer(settings)
    assert model_cache.get_scorer(settings_for(tiny_model_dir, tmp_path / "other")) is first
    description = model_cache.describe(first, settings)
    assert description.info.model == first.model_ref
    assert [e.id for e in description.exemplars] == [e.id for e in first.bank.exemplars]


def test_device_and_runtime_selection() -> None:
    assert model_cache.select_device("auto") == "cpu"  # no GPU on this machine
    with pytest.raises(ConfigurationError, match="sees no CUDA device"):
        model_cache.select_device("cuda")


def test_the_onnx_runtime_needs_an_export_in_the_model_dir(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"has no backbone.onnx: create it with `aqa export onnx"):
        model_cache.get_scorer(settings_for(tiny_model_dir, tmp_path, runtime="onnx"))


def test_a_missing_or_broken_model_dir_is_a_clear_configuration_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"The model directory .*nowhere does not exist"):
        model_cache.get_scorer(settings_for(tmp_path / "nowhere", tmp_path))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "head.safetensors").unlink()
    with pytest.raises(ConfigurationError, match="could not be loaded: .*head.safetensors"):
        model_cache.get_scorer(settings_for(broken, tmp_path))


def test_run_job_scores_once_and_a_redelivery_changes_nothing(tiny_model_dir: Path, dive: Path,
                                                              tmp_path: Path) -> None:
    settings = settings_for(tiny_model_dir, tmp_path)
    store = SqliteJobStore(settings.sqlite_path, result_expires=3600)
    settings.upload_dir.mkdir(parents=True)
    upload = settings.upload_dir / "upload.mp4"
    shutil.copy(dive, upload)
    store.admit([JobRecord(id="j1", status=JobStatus.queued, request=request_for(upload, True, 3.0),
                           created_at=time.time())], max_depth=5)
    scorer = model_cache.get_scorer(settings)
    done = run_job("j1", store, settings, lambda: scorer, "test-worker")
    expected = Scorer.from_dir(tiny_model_dir).score(dive, QueryLabels(difficulty=3.0))
    assert done.status is JobStatus.done and done.attempts == 1
    assert done.result.score == pytest.approx(expected.score, rel=1e-6)
    assert [v.id for v in done.result.votes] == [v.id for v in expected.votes]
    assert not upload.exists()  # the service's copy of an upload is deleted once scored
    again = run_job("j1", store, settings, lambda: scorer, "another-worker")
    assert again == done
    assert store.counters()["finished:done"] == 1


def test_run_job_fails_an_unusable_video_with_its_reason(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = settings_for(tiny_model_dir, tmp_path, archive_roots=str(tmp_path))
    store = SqliteJobStore(settings.sqlite_path, result_expires=3600)
    text = tmp_path / "notes.mp4"
    text.write_text("not a dive at all\n")
    store.admit([JobRecord(id="j1", status=JobStatus.queued, request=request_for(text), created_at=time.time())], 5)
    failed = run_job("j1", store, settings, lambda: model_cache.get_scorer(settings), "w")
    assert failed.status is JobStatus.failed and failed.result is None
    assert failed.error.code == "not_a_video" and failed.error.message == "The file is plain text, not a video."
    assert text.exists()  # not the service's copy: an archive file is never deleted


def test_the_pool_requeues_jobs_left_unfinished_by_a_crash(tiny_model_dir: Path, dive: Path, tmp_path: Path) -> None:
    settings = settings_for(tiny_model_dir, tmp_path, archive_roots=str(dive.parent))
    store = SqliteJobStore(settings.sqlite_path, result_expires=3600)
    now = time.time()
    store.admit([JobRecord(id=f"j{i}", status=JobStatus.queued, request=request_for(dive), created_at=now + i)
                 for i in range(3)], max_depth=5)
    store.start("j0", "a-worker-that-then-crashed", now)  # was running when the process died
    pool = EmbeddedPool(settings, SqliteJobStore(settings.sqlite_path, result_expires=3600))
    pool.start()
    try:
        assert pool.checks()["model"].ok
        deadline = time.monotonic() + 30
        while store.unfinished_ids() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pool.stop()
    records = store.get_many(["j0", "j1", "j2"])
    assert [r.status for r in records] == [JobStatus.done] * 3
    assert [r.attempts for r in records] == [2, 1, 1]
    assert store.live_models(time.time()) == []  # the stopped pool unregistered itself


def test_an_archive_file_swapped_for_a_symlink_out_of_the_root_is_refused(tiny_model_dir: Path, dive: Path,
                                                                          tmp_path: Path) -> None:
    """Issue #18 item 5: the file is checked where the worker opens it, not only when the batch was made."""
    root, outside = tmp_path / "archive", tmp_path / "private"
    (root / "meet").mkdir(parents=True)
    outside.mkdir()
    shutil.copy(dive, root / "meet" / "clip.mp4")
    shutil.copy(dive, outside / "secret.mp4")
    settings = settings_for(tiny_model_dir, tmp_path / "data", archive_roots=str(root))
    store = SqliteJobStore(settings.sqlite_path, result_expires=3600)
    clip = root / "meet" / "clip.mp4"
    store.admit([JobRecord(id=f"j{i}", status=JobStatus.queued, request=request_for(path), created_at=time.time())
                 for i, path in enumerate([clip, root / "meet" / "other.mp4"])], max_depth=5)
    clip.unlink()
    clip.symlink_to(outside / "secret.mp4")  # accepted as meet/clip.mp4, now leads out of the archive
    (root / "meet" / "other.mp4").symlink_to(root / "meet" / "clip.mp4")  # a chain that ends outside too
    scorer = model_cache.get_scorer(settings)
    for job_id in ("j0", "j1"):
        failed = run_job(job_id, store, settings, lambda: scorer, "w")
        assert failed.status is JobStatus.failed and failed.error.code == "outside_archive"
        assert "outside the folders this server scores from" in failed.error.message
    (root / "meet" / "inside.mp4").symlink_to(root / "meet")  # a symlink inside the root, to a folder
    store.admit([JobRecord(id="j2", status=JobStatus.queued, request=request_for(root / "meet" / "inside.mp4"),
                           created_at=time.time())], max_depth=5)
    assert run_job("j2", store, settings, lambda: scorer, "w").error.code == "file_not_found"  # not a regular file
    assert (outside / "secret.mp4").exists()


def test_a_job_that_keeps_losing_its_worker_is_failed_after_max_attempts(tiny_model_dir: Path, dive: Path,
                                                                          tmp_path: Path) -> None:
    settings = settings_for(tiny_model_dir, tmp_path, archive_roots=str(dive.parent))
    store = SqliteJobStore(settings.sqlite_path, result_expires=3600)
    store.admit([JobRecord(id="j1", status=JobStatus.queued, request=request_for(dive), created_at=time.time())], 5)
    for attempt in range(settings.max_attempts):  # each start, then the worker died (killed, OOM, hard limit)
        store.start("j1", f"worker-{attempt}", time.time())
    failed = run_job("j1", store, settings, lambda: model_cache.get_scorer(settings), "w")
    assert failed.status is JobStatus.failed and failed.error.code == "worker_lost"
    assert failed.attempts == settings.max_attempts + 1 and "started 3 times" in failed.error.message


def test_the_pool_scores_waiting_jobs_together_as_each_alone(tiny_model_dir: Path, tiny_dataset: Path,
                                                             tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Dynamic batching with the default batch size (8): the thread that takes a job takes the four waiting
    behind it, decodes them ahead while the backbone runs (``Scorer.score_stream``, several videos per forward
    pass when they are decoded in time); each result equals the video scored alone, and an unusable video in
    the batch fails only its own job."""
    caplog.set_level(logging.INFO, logger="workers.runner")
    settings = settings_for(tiny_model_dir, tmp_path, archive_roots=[tiny_dataset, tmp_path])
    text = tmp_path / "notes.mp4"
    text.write_text("not a dive at all\n")
    videos = [tiny_dataset / "videos" / f"dive_{n:05d}.mp4" for n in range(4)]
    paths = [videos[0], text, videos[1], videos[2], videos[3]]
    store = SqliteJobStore(settings.sqlite_path, result_expires=3600)
    now = time.time()
    store.admit([JobRecord(id=f"j{i}", status=JobStatus.queued, request=request_for(path, difficulty=3.0),
                           created_at=now + i) for i, path in enumerate(paths)], max_depth=10)
    pool = EmbeddedPool(settings, SqliteJobStore(settings.sqlite_path, result_expires=3600))
    pool.start()  # the five are waiting already: queued again at start, in order
    try:
        deadline = time.monotonic() + 60
        while store.unfinished_ids() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pool.stop()
    records = store.get_many([f"j{i}" for i in range(5)])
    assert [r.status for r in records] == [JobStatus.done, JobStatus.failed, JobStatus.done, JobStatus.done,
                                           JobStatus.done]
    assert records[1].error.code == "not_a_video"
    assert "job j0: attempt 1 on" in caplog.text and "with waiting job(s) j1, j2, j3, j4" in caplog.text
    assert "job j4: attempt" not in caplog.text  # taken with j0, never started on its own
    alone = Scorer.from_dir(tiny_model_dir)
    for record, video in zip([records[i] for i in (0, 2, 3, 4)], videos, strict=True):
        expected = alone.score(video, QueryLabels(difficulty=3.0))
        assert record.result.score == pytest.approx(expected.score, abs=1e-5)
        assert [v.vote for v in record.result.votes] == pytest.approx([v.vote for v in expected.votes], abs=1e-5)
    assert sum(n for name, n in store.counters().items() if name.startswith("batch_jobs:")) == 4  # each scored once
