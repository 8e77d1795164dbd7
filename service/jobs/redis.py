"""The Celery mode's job store: Redis, shared by the API and every worker.

Keys (``P`` is ``AQA_KEY_PREFIX``)::

    P job:<id>      hash: status, request, created_at, started_at, finished_at, attempts, worker, result, error,
                    batched ("1" while a worker holds it in a batch it took from the queue)
    P active        sorted set of unfinished job ids, scored by acceptance time (the queue depth)
    P counters      hash of cumulative counters (finished:<status>, latency:<stage>:<bucket|sum|count>)
    P batch:<id>    JSON BatchRecord
    P workers       hash: worker id -> {"fingerprint", "beat_at", "expires_at", "jobs"}
    P event:<e>     sorted set of the ids of jobs admitted with event key e = JSON [competition, event]
    P events        hash: event key -> time of its latest admission
    P model:<fp>    JSON ModelDescription of a loaded model
    P finished      pub/sub channel: the id of every job the moment its outcome is stored

Admission, start, finish, requeue and claim are Lua scripts, so each is one atomic step on the server: two
workers finishing the same redelivered job cannot both store a result.

Dynamic batching (``claim_waiting``): a worker that starts a job may also take waiting (queued) jobs and
score them in the same forward pass; it marks them running under itself with ``batched``. When such a
job's own message reaches a worker later, ``start`` leaves it alone while its holder's heartbeat is alive
(the holder stores its outcome; a finished job is skipped anyway); if the holder dies, the reconciler
queues the job again, as for any job of a gone worker. Finished jobs expire after
``result_expires`` seconds; an event's index twice that after its latest admission or finished job,
and ids of expired jobs are dropped from it when it is read. The scripts name keys they build from the
prefix (single Redis, not Cluster).

Unreachable Redis (down, restarting, loading its AOF, a read-only replica): each call retries with
exponential backoff for ``retry_seconds`` (0 in the API, which answers 503 at once; minutes in the
workers, so a result outlives a Redis restart), then raises :class:`StoreUnavailable`.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from models.results import ScoreResult
from service.jobs.base import (
    FinishedListener,
    JobStore,
    StoreUnavailable,
    WorkerBeat,
    latency_counter_increments,
)
from service.schemas import (
    BatchRecord,
    EventRef,
    JobError,
    JobRecord,
    JobRequest,
    JobStatus,
    ModelDescription,
)

log = logging.getLogger(__name__)

ADMIT = """
local jobs = cjson.decode(ARGV[3])
if redis.call('ZCARD', KEYS[1]) + #jobs > tonumber(ARGV[1]) then return 0 end
for _, job in ipairs(jobs) do
  redis.call('HSET', ARGV[2] .. 'job:' .. job.id, 'status', 'queued', 'request', job.request,
             'created_at', job.created_at, 'attempts', 0)
  redis.call('ZADD', KEYS[1], tonumber(job.created_at), job.id)
  if job.event then
    local index = ARGV[2] .. 'event:' .. job.event
    redis.call('ZADD', index, tonumber(job.created_at), job.id)
    redis.call('EXPIRE', index, ARGV[4])
    redis.call('HSET', ARGV[2] .. 'events', job.event, job.created_at)
    redis.call('EXPIRE', ARGV[2] .. 'events', ARGV[4])
  end
end
return 1
"""

START = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return 0 end
if status == 'running' and redis.call('HGET', KEYS[1], 'batched') == '1' then
  local beat = redis.call('HGET', KEYS[2], redis.call('HGET', KEYS[1], 'worker'))
  if beat and tonumber(cjson.decode(beat).expires_at) > tonumber(ARGV[1]) then return 0 end
end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1], 'worker', ARGV[2])
redis.call('HDEL', KEYS[1], 'batched')
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return 1
"""

CLAIM = """
local now, me, limit = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local idle = 0
local workers = redis.call('HGETALL', KEYS[2])
for i = 1, #workers, 2 do
  local beat = cjson.decode(workers[i + 1])
  if workers[i] ~= me and tonumber(beat.expires_at) > now and (beat.jobs == nil or #beat.jobs == 0) then
    idle = idle + 1
  end
end
local taken = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if #taken >= limit then break end
  local key = ARGV[4] .. 'job:' .. id
  if redis.call('HGET', key, 'status') == 'queued' then
    if idle > 0 then
      idle = idle - 1
    else
      redis.call('HSET', key, 'status', 'running', 'started_at', ARGV[1], 'worker', me, 'batched', '1')
      redis.call('HINCRBY', key, 'attempts', 1)
      table.insert(taken, id)
    end
  end
end
return taken
"""

FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[2], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[6])
for name, value in pairs(cjson.decode(ARGV[7])) do
  redis.call('HINCRBYFLOAT', KEYS[3], name, value)
end
if ARGV[8] ~= '' then  -- the job's event index outlives it: its record is kept result_expires from now
  redis.call('EXPIRE', ARGV[8], ARGV[10])
  redis.call('EXPIRE', ARGV[9], ARGV[10])
end
redis.call('PUBLISH', KEYS[4], ARGV[6])
return 1
"""

REQUEUE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or redis.call('HGET', KEYS[1], 'worker') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'queued')
redis.call('HDEL', KEYS[1], 'batched')
return 1
"""

FIELDS = ("status", "request", "created_at", "started_at", "finished_at", "attempts", "worker", "result", "error")
UNAVAILABLE_REPLIES = ("MISCONF", "READONLY", "MASTERDOWN")
"""Error replies of a Redis that is up but cannot take writes now; they pass like a lost connection."""
MAX_RETRY_PAUSE = 5.0


def _unavailable(exc: redis.RedisError) -> bool:
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):  # BusyLoadingError (AOF load) included
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(UNAVAILABLE_REPLIES)


def _retried(method: Callable) -> Callable:
    """Run a store method, retrying an unreachable Redis until ``retry_seconds`` have passed."""

    @functools.wraps(method)
    def call(self: RedisJobStore, *args: object, **kwargs: object) -> object:
        deadline = time.monotonic() + self.retry_seconds
        pause = 0.1
        while True:
            try:
                return method(self, *args, **kwargs)
            except redis.RedisError as exc:
                if not _unavailable(exc):
                    raise
                if time.monotonic() + pause > deadline:
                    raise StoreUnavailable(f"the job store (Redis at {self.location}) is unreachable: {exc}") from exc
                log.warning("job store unreachable during %s (%s); retrying in %.1f s", method.__name__, exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, MAX_RETRY_PAUSE)

    return call


class RedisJobStore(JobStore):
    def __init__(self, url: str, prefix: str, result_expires: int, retry_seconds: float = 0.0) -> None:
        # A short connect timeout and one immediate reconnect (for a pooled connection a Redis restart
        # closed): an unreachable Redis is known within a second; retrying longer is ``retry_seconds``'s job.
        self.client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=2, socket_connect_timeout=0.5, health_check_interval=30,
            retry=Retry(NoBackoff(), 1), retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        self.location = _redacted(url)
        self.prefix = prefix
        self.result_expires = result_expires
        self.retry_seconds = retry_seconds
        self._admit = self.client.register_script(ADMIT)
        self._start = self.client.register_script(START)
        self._finish = self.client.register_script(FINISH)
        self._requeue = self.client.register_script(REQUEUE)
        self._claim = self.client.register_script(CLAIM)

    def _job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    @property
    def _active(self) -> str:
        return f"{self.prefix}active"

    @property
    def _counters(self) -> str:
        return f"{self.prefix}counters"

    @property
    def _workers(self) -> str:
        return f"{self.prefix}workers"

    @property
    def finished_channel(self) -> str:
        return f"{self.prefix}finished"

    @_retried
    def admit(self, records: list[JobRecord], max_depth: int) -> bool:
        jobs = []
        for r in records:
            job = {"id": r.id, "request": r.request.model_dump_json(), "created_at": repr(r.created_at)}
            if r.request.competition is not None or r.request.event is not None:
                job["event"] = _event_key(r.request.competition, r.request.event)
            jobs.append(job)
        return bool(self._admit(keys=[self._active],
                                args=[max_depth, self.prefix, json.dumps(jobs), 2 * self.result_expires]))

    @_retried
    def active_count(self) -> int:
        return self.client.zcard(self._active)

    @_retried
    def get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        return self._get_many(job_ids)

    def _get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self._job_key(job_id), FIELDS)
        return [_record(job_id, values) for job_id, values in zip(job_ids, pipe.execute(), strict=True)]

    @_retried
    def start(self, job_id: str, worker: str, now: float) -> JobRecord | None:
        if not self._start(keys=[self._job_key(job_id), self._workers], args=[now, worker]):
            return None
        return self._get_many([job_id])[0]

    @_retried
    def claim_waiting(self, worker: str, now: float, limit: int) -> list[JobRecord]:
        """Take up to ``limit`` queued jobs, oldest first, as running under ``worker`` (attempt counted).

        As many of the oldest waiting jobs as there are idle live workers (announced, running nothing) are
        left to them: their messages reach those workers next.
        """
        if limit <= 0:
            return []
        taken = self._claim(keys=[self._active, self._workers], args=[now, worker, limit, self.prefix])
        return [record for record in self._get_many(taken) if record is not None]

    @_retried
    def finish(self, job_id: str, now: float, result: ScoreResult | None = None,
               error: JobError | None = None) -> bool:
        [record] = self._get_many([job_id])
        if record is None or record.status.finished:
            return False
        status = JobStatus.done if result is not None else JobStatus.failed
        field, payload = ("result", result.model_dump_json()) if result is not None else ("error", error.model_dump_json())
        increments = {f"finished:{status.value}": 1, **latency_counter_increments(record, result)}
        event = record.request.competition is not None or record.request.event is not None
        event_index = f"{self.prefix}event:{_event_key(record.request.competition, record.request.event)}"
        return bool(self._finish(
            keys=[self._job_key(job_id), self._active, self._counters, self.finished_channel],
            args=[status.value, now, field, payload, self.result_expires, job_id, json.dumps(increments),
                  event_index if event else "", f"{self.prefix}events", 2 * self.result_expires],
        ))

    @_retried
    def requeue(self, job_id: str, worker: str) -> bool:
        return bool(self._requeue(keys=[self._job_key(job_id)], args=[worker]))

    @_retried
    def unfinished_ids(self) -> list[str]:
        return self.client.zrange(self._active, 0, -1)

    @_retried
    def state_counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in JobStatus}
        ids = self.client.zrange(self._active, 0, -1)
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self._job_key(job_id), "status")
        for status in pipe.execute():
            if status in (JobStatus.queued, JobStatus.running):
                counts[status] += 1
        finished = self._counter_values()
        for status in (JobStatus.done, JobStatus.failed):
            counts[status.value] = int(finished.get(f"finished:{status.value}", 0))
        return counts

    @_retried
    def counters(self) -> dict[str, float]:
        return self._counter_values()

    def _counter_values(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.client.hgetall(self._counters).items()}

    @_retried
    def event_jobs(self, competition: str | None, event: str | None) -> list[JobRecord]:
        return self._event_jobs(competition, event)

    def _event_jobs(self, competition: str | None, event: str | None) -> list[JobRecord]:
        index = f"{self.prefix}event:{_event_key(competition, event)}"
        ids = self.client.zrange(index, 0, -1)
        records = self._get_many(ids) if ids else []
        expired = [job_id for job_id, record in zip(ids, records, strict=True) if record is None]
        if expired:
            self.client.zrem(index, *expired)
        return [record for record in records if record is not None]

    @_retried
    def events(self) -> list[EventRef]:
        events_key = f"{self.prefix}events"
        found = []
        for key, last in self.client.hgetall(events_key).items():
            competition, event = json.loads(key)
            jobs = self._event_jobs(competition, event)
            if jobs:
                found.append((float(last), EventRef(competition=competition, event=event, dives=len(jobs))))
            else:
                self.client.hdel(events_key, key)
        return [ref for _, ref in sorted(found, key=lambda pair: -pair[0])]

    @_retried
    def save_batch(self, batch: BatchRecord, ttl: float) -> None:
        self.client.set(f"{self.prefix}batch:{batch.id}", batch.model_dump_json(), ex=int(ttl))

    @_retried
    def get_batch(self, batch_id: str) -> BatchRecord | None:
        raw = self.client.get(f"{self.prefix}batch:{batch_id}")
        return BatchRecord.model_validate_json(raw) if raw else None

    @_retried
    def register_worker(self, worker_id: str, description: ModelDescription, ttl: float, now: float,
                        jobs: tuple[str, ...] = ()) -> None:
        fingerprint = description.info.model.fingerprint
        pipe = self.client.pipeline(transaction=True)
        pipe.set(f"{self.prefix}model:{fingerprint}", description.model_dump_json(), ex=int(self.result_expires))
        pipe.hset(self._workers, worker_id, json.dumps(
            {"fingerprint": fingerprint, "beat_at": now, "expires_at": now + ttl, "jobs": list(jobs)}))
        pipe.execute()

    @_retried
    def unregister_worker(self, worker_id: str) -> None:
        self.client.hdel(self._workers, worker_id)

    @_retried
    def live_models(self, now: float) -> list[ModelDescription]:
        live: dict[str, int] = {}
        for beat, fingerprint in self._beats().values():
            if beat.expires_at > now:
                live[fingerprint] = live.get(fingerprint, 0) + 1
        models = []
        for fingerprint in sorted(live):
            raw = self.client.get(f"{self.prefix}model:{fingerprint}")
            if raw:
                model = ModelDescription.model_validate_json(raw)
                model.info.workers = live[fingerprint]
                models.append(model)
        return models

    @_retried
    def worker_beats(self) -> dict[str, WorkerBeat]:
        return {worker: beat for worker, (beat, _) in self._beats().items()}

    def _beats(self) -> dict[str, tuple[WorkerBeat, str]]:
        beats = {}
        for worker, raw in self.client.hgetall(self._workers).items():
            entry = json.loads(raw)
            beats[worker] = (WorkerBeat(worker=worker, beat_at=entry.get("beat_at", 0.0),
                                        expires_at=entry["expires_at"], jobs=tuple(entry.get("jobs", ()))),
                             entry["fingerprint"])
        return beats

    @_retried
    def purge_expired(self, now: float) -> None:
        """Forget workers gone for an hour (jobs and batches expire by themselves)."""
        stale = [w for w, (beat, _) in self._beats().items() if beat.expires_at < now - 3600]
        if stale:
            self.client.hdel(self._workers, *stale)

    @_retried
    def ping(self) -> None:
        self.client.ping()

    def subscribe_finished(self, listener: FinishedListener) -> Callable[[], None]:
        stop = threading.Event()

        def listen() -> None:
            pause = 0.1
            while not stop.is_set():
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                try:
                    pubsub.subscribe(self.finished_channel)
                    listener(None)  # whatever finished while nobody listened
                    pause = 0.1
                    while not stop.is_set():
                        message = pubsub.get_message(timeout=1.0)
                        if message is not None:
                            listener(message["data"])
                except redis.RedisError as exc:
                    log.warning("lost the job-finished channel (%s); resubscribing in %.1f s", exc, pause)
                    stop.wait(pause)
                    pause = min(pause * 2, MAX_RETRY_PAUSE)
                finally:
                    pubsub.close()

        thread = threading.Thread(target=listen, name="aqa-finished-events", daemon=True)
        thread.start()

        def cancel() -> None:
            stop.set()
            thread.join(timeout=5)

        return cancel

    def close(self) -> None:
        self.client.close()


def _redacted(url: str) -> str:
    """host:port/db of a Redis URL, without credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}{parts.path}" if parts.hostname else url


def _event_key(competition: str | None, event: str | None) -> str:
    return json.dumps([competition, event])


def _record(job_id: str, values: list[str | None]) -> JobRecord | None:
    row = dict(zip(FIELDS, values, strict=True))
    if row["status"] is None or row["request"] is None:
        return None

    def seconds(name: str) -> float | None:
        return float(row[name]) if row[name] is not None else None

    return JobRecord(
        id=job_id, status=JobStatus(row["status"]), request=JobRequest.model_validate_json(row["request"]),
        created_at=float(row["created_at"]), started_at=seconds("started_at"), finished_at=seconds("finished_at"),
        attempts=int(row["attempts"] or 0), worker=row["worker"],
        result=ScoreResult.model_validate_json(row["result"]) if row["result"] else None,
        error=JobError.model_validate_json(row["error"]) if row["error"] else None,
    )
