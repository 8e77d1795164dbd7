"""Run a scoring job against the job store: the step the Celery task and the embedded pool share.

start (count the attempt; skip a job that already finished; fail one that lost its worker
``max_attempts`` times) -> take the jobs waiting in the queue with it, up to ``AQA_WORKER_BATCH_SIZE``
(dynamic batching) -> open each video inside the allowed folders -> score them pipelined (decoded ahead,
several per forward pass) -> (with ``AQA_REFUSE_UNFAMILIAR``, refuse a video unlike the training dives) ->
finish each (the first stored outcome wins) -> delete the uploaded copies. Scoring itself is
:meth:`models.scorer.Scorer.score_stream`; nothing here knows how a score is made.

The store's :class:`~service.jobs.StoreUnavailable` is not caught: the caller gives the job back to the
queue (the upload is kept), because an outcome that was not stored does not count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from models.results import OUT_OF_DISTRIBUTION, ScoreResult
from models.scorer import QueryLabels, Scorer, ScoreRequest
from service.jobs import JobStore
from service.schemas import JobError, JobRecord
from service.settings import ConfigurationError, ServiceSettings
from video.errors import VideoError
from workers.heartbeat import Heartbeat
from workers.video_access import allowed_roots, open_inside

log = logging.getLogger(__name__)


def timeout_error(limit_seconds: float) -> JobError:
    return JobError(
        code="timeout",
        message=f"Scoring took longer than this server's {limit_seconds:g} s limit and was stopped. "
        "Try a shorter clip of just the dive.",
    )


def internal_error(job_id: str) -> JobError:
    return JobError(
        code="internal_error",
        message="The server could not score this video because of an internal error. "
        f"The operator can find the details in the worker log under job {job_id}.",
    )


def refusal(result: ScoreResult, settings: ServiceSettings) -> JobError | None:
    """The ``out_of_distribution`` error for an unfamiliar video when the service refuses those, else None."""
    familiarity = result.familiarity
    if not settings.refuse_unfamiliar or familiarity is None or familiarity.in_distribution:
        return None
    return JobError(code=OUT_OF_DISTRIBUTION,
                    message=f"This video is unlike the dives this model was trained on ({'; '.join(familiarity.reasons)}), "
                    "and this server refuses to score such videos. Send a clip of one dive filmed like the model's "
                    "training videos, or ask the operator.")


def worker_lost_error(attempts: int) -> JobError:
    return JobError(
        code="worker_lost",
        message=f"The job was started {attempts} times and its worker was lost each time (killed, out of memory "
        "or over the hard time limit), so it is not tried again. The operator can find the details in the "
        "worker logs.",
    )


Outcome = tuple[ScoreResult | None, JobError | None]
"""A job's result, or the error it failed with."""

BATCH_POLL_SECONDS = 0.005
"""How often a worker waiting for a fuller batch (``worker_batch_wait_ms``) looks at the queue again."""

TakeWaiting = Callable[[int], list[JobRecord]]
"""Takes up to n waiting jobs as this worker's (each started: running, attempt counted) and returns them."""


def run_job(
    job_id: str,
    store: JobStore,
    settings: ServiceSettings,
    scorer: Callable[[], Scorer],
    worker_id: str,
    time_limit_errors: tuple[type[BaseException], ...] = (),
    heartbeat: Heartbeat | None = None,
    take_waiting: TakeWaiting | None = None,
) -> JobRecord | None:
    """Score job ``job_id`` and record its outcome; returns the job as stored afterwards.

    With ``take_waiting``, jobs waiting in the queue join it, up to ``worker_batch_size`` in all (waiting
    ``worker_batch_wait_ms`` at most for more) and are scored with it, pipelined.
    """
    hold = heartbeat.hold if heartbeat is not None else _no_heartbeat
    held = hold(lambda: [job_id])
    try:
        record = store.start(job_id, worker_id, time.time())
        if record is None:
            log.info("job %s is finished, unknown or in another worker's batch: nothing to do", job_id)
            return store.get(job_id)
        batch = [record]
        if take_waiting is not None and settings.worker_batch_size > 1:
            batch += _take_batch(take_waiting, hold, held, settings)
        log.info("job %s: attempt %d on %s%s", job_id, record.attempts, worker_id,
                 f", with waiting job(s) {', '.join(r.id for r in batch[1:])}" if len(batch) > 1 else "")
        outcomes = _score_batch(batch, settings, scorer, time_limit_errors)
        for job, (result, error) in zip(batch, outcomes, strict=True):
            if store.finish(job.id, time.time(), result=result, error=error):
                log.info("job %s: %s", job.id, f"score {result.score:.2f}" if result else f"failed ({error.code})")
            else:
                log.warning("job %s already had an outcome; this run's was discarded (first result wins)", job.id)
        for job in batch:
            if job.request.owns_file:
                Path(job.request.video_path).unlink(missing_ok=True)
    finally:
        if heartbeat is not None:
            heartbeat.release(held)
    return store.get(job_id)


def _no_heartbeat(take: Callable[[], list[str]]) -> list[str]:
    return list(take())


def _take_batch(take_waiting: TakeWaiting, hold: Callable[[Callable[[], list[str]]], list[str]], held: list[str],
                settings: ServiceSettings) -> list[JobRecord]:
    """Waiting jobs to score with the one started: what is waiting now, then more for ``worker_batch_wait_ms``."""
    taken: list[JobRecord] = []

    def take() -> list[str]:
        records = take_waiting(settings.worker_batch_size - 1 - len(taken))
        taken.extend(records)
        return [record.id for record in records]

    deadline = time.monotonic() + settings.worker_batch_wait_ms / 1000
    while True:
        held += hold(take)
        remaining = deadline - time.monotonic()
        if len(taken) >= settings.worker_batch_size - 1 or remaining <= 0:
            return taken
        time.sleep(min(BATCH_POLL_SECONDS, remaining))


def _score_batch(batch: list[JobRecord], settings: ServiceSettings, scorer: Callable[[], Scorer],
                 time_limit_errors: tuple[type[BaseException], ...]) -> list[Outcome]:
    """Each job's (result, error), scored by :meth:`Scorer.score_stream`: the videos decoded ahead in threads
    while the backbone runs on those already decoded, several in one forward pass.

    A job started more than ``max_attempts`` times is failed without scoring; a video that cannot be opened,
    decoded or scored fails its own job only. Over the soft time limit, every job not finished yet fails with
    ``timeout``.
    """
    outcomes: dict[str, Outcome] = {}
    try:
        if settings.test_task_delay_seconds:  # test only: a slow job, to kill or time out mid-way
            time.sleep(settings.test_task_delay_seconds)
        with ExitStack() as open_files:
            requests: list[ScoreRequest] = []
            owners: list[JobRecord] = []
            for record in batch:
                if record.attempts > settings.max_attempts:
                    outcomes[record.id] = None, worker_lost_error(record.attempts - 1)
                    continue
                request = record.request
                try:
                    video = open_files.enter_context(open_inside(Path(request.video_path),
                                                                 allowed_roots(request, settings)))
                except VideoError as exc:
                    outcomes[record.id] = _failure(record.id, exc)
                    continue
                labels = QueryLabels(difficulty=request.difficulty, action_class=request.action_class)
                requests.append(ScoreRequest(video, labels))
                owners.append(record)
            if requests:
                stream = scorer().score_stream(requests, limits=settings.video_limits,
                                               max_batch=settings.worker_batch_size)
                for record, (_, outcome) in zip(owners, stream, strict=True):
                    if isinstance(outcome, time_limit_errors):
                        raise outcome
                    outcomes[record.id] = (outcome, None) if isinstance(outcome, ScoreResult) else \
                        _failure(record.id, outcome)
    except time_limit_errors:
        timeout = timeout_error(settings.task_soft_time_limit)
        outcomes = {record.id: outcomes.get(record.id, (None, timeout)) for record in batch}
    except Exception as exc:  # noqa: BLE001 - e.g. the model cannot be loaded: each unfinished job fails with why
        outcomes = {record.id: outcomes.get(record.id) or _failure(record.id, exc) for record in batch}
    return [_refused(outcomes[record.id], settings) for record in batch]


def _failure(job_id: str, exc: BaseException) -> Outcome:
    """The error a job ends with when scoring raised ``exc``."""
    if isinstance(exc, VideoError):
        return None, JobError(code=exc.code, message=exc.reason)
    if isinstance(exc, ConfigurationError):
        return None, JobError(code="model_unavailable", message=f"The scoring model is not available: {exc}")
    log.error("job %s failed", job_id, exc_info=exc)
    return None, internal_error(job_id)


def _refused(outcome: Outcome, settings: ServiceSettings) -> Outcome:
    """An unfamiliar video's result turned into the ``out_of_distribution`` error when the service refuses those."""
    result, _ = outcome
    if result is not None and (refused := refusal(result, settings)) is not None:
        return None, refused
    return outcome
