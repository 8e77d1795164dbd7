"""Run one scoring job against the job store: the step the Celery task and the embedded pool share.

start (count the attempt; skip a job that already finished; fail one that lost its worker
``max_attempts`` times) -> open the video inside the allowed folders -> score with the process's Scorer
-> (with ``AQA_REFUSE_UNFAMILIAR``, refuse a video unlike the training dives) -> finish (the first stored
outcome wins) -> delete the uploaded copy. Scoring itself is
:meth:`models.scorer.Scorer.score`; nothing here knows how a score is made.

The store's :class:`~service.jobs.StoreUnavailable` is not caught: the caller gives the job back to the
queue (the upload is kept), because an outcome that was not stored does not count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from models.results import OUT_OF_DISTRIBUTION, ScoreResult
from models.scorer import QueryLabels, Scorer
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


def run_job(
    job_id: str,
    store: JobStore,
    settings: ServiceSettings,
    scorer: Callable[[], Scorer],
    worker_id: str,
    time_limit_errors: tuple[type[BaseException], ...] = (),
    heartbeat: Heartbeat | None = None,
) -> JobRecord | None:
    """Score job ``job_id`` once and record the outcome; returns the job as stored afterwards."""
    with heartbeat.running(job_id) if heartbeat is not None else nullcontext():
        record = store.start(job_id, worker_id, time.time())
        if record is None:
            log.info("job %s is finished or unknown: nothing to do (a redelivery after completion)", job_id)
            return store.get(job_id)
        log.info("job %s: attempt %d on %s", job_id, record.attempts, worker_id)
        result, error = None, None
        if record.attempts > settings.max_attempts:
            error = worker_lost_error(record.attempts - 1)
        else:
            result, error = _score(record, settings, scorer, time_limit_errors)
            if result is not None and (refused := refusal(result, settings)) is not None:
                result, error = None, refused
        if store.finish(job_id, time.time(), result=result, error=error):
            log.info("job %s: %s", job_id, f"score {result.score:.2f}" if result else f"failed ({error.code})")
        else:
            log.warning("job %s already had an outcome; this run's was discarded (first result wins)", job_id)
    if record.request.owns_file:
        Path(record.request.video_path).unlink(missing_ok=True)
    return store.get(job_id)


def _score(record: JobRecord, settings: ServiceSettings, scorer: Callable[[], Scorer],
           time_limit_errors: tuple[type[BaseException], ...]) -> tuple[ScoreResult | None, JobError | None]:
    request = record.request
    try:
        if settings.test_task_delay_seconds:  # test only: a slow job, to kill or time out mid-way
            time.sleep(settings.test_task_delay_seconds)
        with open_inside(Path(request.video_path), allowed_roots(request, settings)) as video:
            labels = QueryLabels(difficulty=request.difficulty, action_class=request.action_class)
            return scorer().score(video, labels, limits=settings.video_limits), None
    except VideoError as exc:
        return None, JobError(code=exc.code, message=exc.reason)
    except ConfigurationError as exc:
        return None, JobError(code="model_unavailable", message=f"The scoring model is not available: {exc}")
    except time_limit_errors:
        return None, timeout_error(settings.task_soft_time_limit)
    except Exception:
        log.exception("job %s failed", record.id)
        return None, internal_error(record.id)
