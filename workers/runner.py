"""Run one scoring job against the job store: the step the Celery task and the embedded pool share.

start (count the attempt; skip a job that already finished) -> score with the process's Scorer ->
(with ``AQA_REFUSE_UNFAMILIAR``, refuse a video unlike the training dives) -> finish (the first stored
outcome wins) -> delete the uploaded copy. Scoring itself is
:meth:`models.scorer.Scorer.score`; nothing here knows how a score is made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from models.results import OUT_OF_DISTRIBUTION, ScoreResult
from models.scorer import QueryLabels, Scorer
from service.jobs import JobStore
from service.schemas import JobError, JobRecord
from service.settings import ConfigurationError, ServiceSettings
from video.errors import VideoError

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


def run_job(
    job_id: str,
    store: JobStore,
    settings: ServiceSettings,
    scorer: Callable[[], Scorer],
    worker_id: str,
    time_limit_errors: tuple[type[BaseException], ...] = (),
) -> JobRecord | None:
    """Score job ``job_id`` once and record the outcome; returns the job as stored afterwards."""
    record = store.start(job_id, worker_id, time.time())
    if record is None:
        log.info("job %s is finished or unknown: nothing to do (a redelivery after completion)", job_id)
        return store.get(job_id)
    log.info("job %s: attempt %d on %s", job_id, record.attempts, worker_id)
    request = record.request
    result, error = None, None
    try:
        if settings.test_task_delay_seconds:  # test only: a slow job, to kill or time out mid-way
            time.sleep(settings.test_task_delay_seconds)
        result = scorer().score(
            Path(request.video_path),
            QueryLabels(difficulty=request.difficulty, action_class=request.action_class),
            limits=settings.video_limits,
        )
        error = refusal(result, settings)
        result = None if error else result
    except VideoError as exc:
        error = JobError(code=exc.code, message=exc.reason)
    except ConfigurationError as exc:
        error = JobError(code="model_unavailable", message=f"The scoring model is not available: {exc}")
    except time_limit_errors:
        error = timeout_error(settings.task_soft_time_limit)
    except Exception:
        log.exception("job %s failed", job_id)
        error = internal_error(job_id)
    if store.finish(job_id, time.time(), result=result, error=error):
        log.info("job %s: %s", job_id, f"score {result.score:.2f}" if result else f"failed ({error.code})")
    else:
        log.warning("job %s already had an outcome; this run's was discarded (first result wins)", job_id)
    if request.owns_file:
        Path(request.video_path).unlink(missing_ok=True)
    return store.get(job_id)
