"""The Celery mode's job store: Redis, shared by the API and every worker.

Keys (``P`` is ``AQA_KEY_PREFIX``)::

    P job:<id>      hash: status, request, created_at, started_at, finished_at, attempts, worker, result, error
    P active        sorted set of unfinished job ids, scored by acceptance time (the queue depth)
    P counters      hash of cumulative counters (finished:<status>, latency:<stage>:<bucket|sum|count>)
    P batch:<id>    JSON BatchRecord
    P workers       hash: worker id -> {"fingerprint", "expires_at"}
    P event:<e>     sorted set of the ids of jobs admitted with event key e = JSON [competition, event]
    P events        hash: event key -> time of its latest admission
    P model:<fp>    JSON ModelDescription of a loaded model

Admission, start and finish are Lua scripts, so each is one atomic step on the server: two workers
finishing the same redelivered job cannot both store a result. Finished jobs expire after
``result_expires`` seconds; an event's index twice that after its latest admission or finished job,
and ids of expired jobs are dropped from it when it is read. The scripts name keys they build from the prefix (single Redis, not Cluster).
"""

from __future__ import annotations

import json

import redis

from models.results import ScoreResult
from service.jobs import JobStore, latency_counter_increments
from service.schemas import (
    BatchRecord,
    EventRef,
    JobError,
    JobRecord,
    JobRequest,
    JobStatus,
    ModelDescription,
)

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
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1], 'worker', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return 1
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
return 1
"""

FIELDS = ("status", "request", "created_at", "started_at", "finished_at", "attempts", "worker", "result", "error")


class RedisJobStore(JobStore):
    def __init__(self, url: str, prefix: str, result_expires: int) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10,
                                           socket_connect_timeout=5, health_check_interval=30)
        self.prefix = prefix
        self.result_expires = result_expires
        self._admit = self.client.register_script(ADMIT)
        self._start = self.client.register_script(START)
        self._finish = self.client.register_script(FINISH)

    def _job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    @property
    def _active(self) -> str:
        return f"{self.prefix}active"

    @property
    def _counters(self) -> str:
        return f"{self.prefix}counters"

    def admit(self, records: list[JobRecord], max_depth: int) -> bool:
        jobs = []
        for r in records:
            job = {"id": r.id, "request": r.request.model_dump_json(), "created_at": repr(r.created_at)}
            if r.request.competition is not None or r.request.event is not None:
                job["event"] = _event_key(r.request.competition, r.request.event)
            jobs.append(job)
        return bool(self._admit(keys=[self._active],
                                args=[max_depth, self.prefix, json.dumps(jobs), 2 * self.result_expires]))

    def active_count(self) -> int:
        return self.client.zcard(self._active)

    def get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self._job_key(job_id), FIELDS)
        return [_record(job_id, values) for job_id, values in zip(job_ids, pipe.execute(), strict=True)]

    def start(self, job_id: str, worker: str, now: float) -> JobRecord | None:
        if not self._start(keys=[self._job_key(job_id)], args=[now, worker]):
            return None
        return self.get(job_id)

    def finish(self, job_id: str, now: float, result: ScoreResult | None = None,
               error: JobError | None = None) -> bool:
        record = self.get(job_id)
        if record is None or record.status.finished:
            return False
        status = JobStatus.done if result is not None else JobStatus.failed
        field, payload = ("result", result.model_dump_json()) if result is not None else ("error", error.model_dump_json())
        increments = {f"finished:{status.value}": 1, **latency_counter_increments(record, result)}
        finished = bool(self._finish(
            keys=[self._job_key(job_id), self._active, self._counters],
            args=[status.value, now, field, payload, self.result_expires, job_id, json.dumps(increments)],
        ))
        if finished and (record.request.competition is not None or record.request.event is not None):
            self._keep_event_index(record.request.competition, record.request.event)
        return finished

    def unfinished_ids(self) -> list[str]:
        return self.client.zrange(self._active, 0, -1)

    def state_counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in JobStatus}
        ids = self.unfinished_ids()
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self._job_key(job_id), "status")
        for status in pipe.execute():
            if status in (JobStatus.queued, JobStatus.running):
                counts[status] += 1
        finished = self.counters()
        for status in (JobStatus.done, JobStatus.failed):
            counts[status.value] = int(finished.get(f"finished:{status.value}", 0))
        return counts

    def counters(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.client.hgetall(self._counters).items()}

    def _keep_event_index(self, competition: str | None, event: str | None) -> None:
        """Outlive the job that just finished: its record is kept ``result_expires`` from now."""
        pipe = self.client.pipeline(transaction=False)
        pipe.expire(f"{self.prefix}event:{_event_key(competition, event)}", 2 * self.result_expires)
        pipe.expire(f"{self.prefix}events", 2 * self.result_expires)
        pipe.execute()

    def event_jobs(self, competition: str | None, event: str | None) -> list[JobRecord]:
        index = f"{self.prefix}event:{_event_key(competition, event)}"
        ids = self.client.zrange(index, 0, -1)
        records = self.get_many(ids) if ids else []
        expired = [job_id for job_id, record in zip(ids, records, strict=True) if record is None]
        if expired:
            self.client.zrem(index, *expired)
        return [record for record in records if record is not None]

    def events(self) -> list[EventRef]:
        events_key = f"{self.prefix}events"
        found = []
        for key, last in self.client.hgetall(events_key).items():
            competition, event = json.loads(key)
            jobs = self.event_jobs(competition, event)
            if jobs:
                found.append((float(last), EventRef(competition=competition, event=event, dives=len(jobs))))
            else:
                self.client.hdel(events_key, key)
        return [ref for _, ref in sorted(found, key=lambda pair: -pair[0])]

    def save_batch(self, batch: BatchRecord, ttl: float) -> None:
        self.client.set(f"{self.prefix}batch:{batch.id}", batch.model_dump_json(), ex=int(ttl))

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        raw = self.client.get(f"{self.prefix}batch:{batch_id}")
        return BatchRecord.model_validate_json(raw) if raw else None

    def register_worker(self, worker_id: str, description: ModelDescription, ttl: float, now: float) -> None:
        fingerprint = description.info.model.fingerprint
        pipe = self.client.pipeline(transaction=True)
        pipe.set(f"{self.prefix}model:{fingerprint}", description.model_dump_json(), ex=int(self.result_expires))
        pipe.hset(f"{self.prefix}workers", worker_id,
                  json.dumps({"fingerprint": fingerprint, "expires_at": now + ttl}))
        pipe.execute()

    def unregister_worker(self, worker_id: str) -> None:
        self.client.hdel(f"{self.prefix}workers", worker_id)

    def live_models(self, now: float) -> list[ModelDescription]:
        workers_key = f"{self.prefix}workers"
        live: dict[str, int] = {}
        for worker_id, raw in self.client.hgetall(workers_key).items():
            entry = json.loads(raw)
            if entry["expires_at"] > now:
                live[entry["fingerprint"]] = live.get(entry["fingerprint"], 0) + 1
            else:
                self.client.hdel(workers_key, worker_id)
        models = []
        for fingerprint in sorted(live):
            raw = self.client.get(f"{self.prefix}model:{fingerprint}")
            if raw:
                model = ModelDescription.model_validate_json(raw)
                model.info.workers = live[fingerprint]
                models.append(model)
        return models

    def ping(self) -> None:
        self.client.ping()

    def close(self) -> None:
        self.client.close()


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
