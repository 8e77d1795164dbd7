"""A Python client of the scoring API (used by ``aqa batch --url``, the tests and scripts).

    with ScoringClient("http://127.0.0.1:8000", api_key="...") as client:
        job = client.score("dive.mp4", difficulty=3.2)      # upload, then wait for the result
        print(job.result.score)

Every non-2xx answer raises :class:`ApiError` with the server's error code and message.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal, Self

import httpx

from service.schemas import (
    Batch,
    EventRef,
    EventResults,
    ExemplarList,
    Job,
    JobAccepted,
    ModelInfo,
    Readiness,
)


class ApiError(Exception):
    """The server answered with an error body ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


RETRIED_STATUSES = (429, 503)
"""Answers that mean 'not now': the queue is full, or the job store is unreachable for a moment."""


class ScoringClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        try:
            error = response.json()["error"]
            code, message = error["code"], error["message"]
        except (ValueError, KeyError, TypeError):
            code, message = f"http_{response.status_code}", response.text[:200]
        retry_after = response.headers.get("Retry-After")
        raise ApiError(response.status_code, code, message, float(retry_after) if retry_after else None)

    def submit(self, video: Path, *, difficulty: float | None = None, action_class: str | None = None,
               competition: str | None = None, event: str | None = None, diver: str | None = None,
               round: int | None = None, wait: float = 0) -> JobAccepted | Job:
        """Upload a video; a :class:`Job` if it finished within ``wait`` seconds, else :class:`JobAccepted`."""
        fields = {"difficulty": difficulty, "action_class": action_class, "competition": competition, "event": event,
                  "diver": diver, "round": round}
        data = {k: str(v) for k, v in fields.items() if v is not None}
        video = Path(video)
        with video.open("rb") as file:
            response = self._check(self.http.post(
                "/v1/scores", params={"wait": wait} if wait else None, data=data,
                files={"video": (video.name, file, "application/octet-stream")},
            ))
        return Job.model_validate(response.json()) if response.status_code == 200 else \
            JobAccepted.model_validate(response.json())

    def submit_retrying(self, video: Path, *, patience: float = 600.0, **fields: object) -> JobAccepted | Job:
        """:meth:`submit`, waiting out 429 (queue full) and 503 (store unreachable) as Retry-After asks."""
        deadline = time.monotonic() + patience
        while True:
            try:
                return self.submit(video, **fields)
            except ApiError as exc:
                if exc.status not in RETRIED_STATUSES or time.monotonic() > deadline:
                    raise
                time.sleep(exc.retry_after or 1.0)

    def job(self, job_id: str) -> Job:
        return Job.model_validate(self._check(self.http.get(f"/v1/jobs/{job_id}")).json())

    def wait(self, job_id: str, timeout: float = 600.0, poll: float = 0.25) -> Job:
        """Poll until the job is done or failed (waiting out 503s); TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                job = self.job(job_id)
            except ApiError as exc:
                if exc.status != 503 or time.monotonic() > deadline:
                    raise
                time.sleep(exc.retry_after or 1.0)
                continue
            if job.status.finished:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status.value} after {timeout:g} s")
            time.sleep(poll)

    def score(self, video: Path, timeout: float = 600.0, **fields: object) -> Job:
        """Upload (waiting out a full queue) and wait for the finished job."""
        submitted = self.submit_retrying(video, **fields)
        return submitted if isinstance(submitted, Job) else self.wait(submitted.job_id, timeout)

    def create_batch(self, *, job_ids: list[str] | None = None, archive_folder: str | None = None,
                     recursive: bool = False, labels_csv: str | None = None, competition: str | None = None,
                     event: str | None = None) -> Batch:
        body: dict[str, object] = {"job_ids": job_ids} if job_ids is not None else {
            "archive": {"folder": archive_folder, "recursive": recursive, "labels_csv": labels_csv,
                        "competition": competition, "event": event}}
        return Batch.model_validate(self._check(self.http.post("/v1/batches", json=body)).json())

    def batch(self, batch_id: str) -> Batch:
        return Batch.model_validate(self._check(self.http.get(f"/v1/batches/{batch_id}")).json())

    def batch_results(self, batch_id: str, format: Literal["csv", "json"] = "csv") -> str | list[dict]:
        response = self._check(self.http.get(f"/v1/batches/{batch_id}/results", params={"format": format}))
        return response.json() if format == "json" else response.text

    def events(self) -> list[EventRef]:
        return [EventRef.model_validate(e) for e in self._check(self.http.get("/v1/events")).json()]

    def event_results(self, *, competition: str | None = None, event: str | None = None) -> EventResults:
        params = {k: v for k, v in (("competition", competition), ("event", event)) if v is not None}
        return EventResults.model_validate(self._check(self.http.get("/v1/events/results", params=params)).json())

    def models(self) -> list[ModelInfo]:
        return [ModelInfo.model_validate(m) for m in self._check(self.http.get("/v1/models")).json()]

    def exemplars(self, fingerprint: str | None = None) -> ExemplarList:
        params = {"fingerprint": fingerprint} if fingerprint else None
        return ExemplarList.model_validate(self._check(self.http.get("/v1/exemplars", params=params)).json())

    def healthy(self) -> bool:
        try:
            return self.http.get("/healthz").is_success
        except httpx.TransportError:
            return False

    def readiness(self) -> Readiness:
        """The readiness report, whether ready (200) or not (503)."""
        return Readiness.model_validate(self.http.get("/readyz").json())
