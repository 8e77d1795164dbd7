"""Every setting of the scoring service, in one place (environment variables prefixed ``AQA_``).

The API (``aqa serve``), the Celery worker (``aqa worker``), the embedded pool and the batch runner all
read this class, so one environment configures a whole deployment. The README's settings table is
written from the field descriptions below.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.pretrained import DEMO_MODEL_DIR
from video.probe import VideoLimits

MIB = 2**20
_DEFAULT_LIMITS = VideoLimits()


class Role(StrEnum):
    """What an API key may do: ``read`` jobs, batches, models; ``score`` also submit work."""

    read = "read"
    score = "score"


class ConfigurationError(Exception):
    """The service is configured in a way it cannot run with; the message says what to change."""


class ServiceSettings(BaseSettings):
    """Settings of the API, the workers and the batch runner (``AQA_<FIELD>`` in the environment)."""

    model_config = SettingsConfigDict(env_prefix="AQA_", extra="ignore", frozen=True)

    # --- what is served -------------------------------------------------------------------------
    model_dir: Path = Field(DEMO_MODEL_DIR, description="Model directory (config, weights, exemplar bank).")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where workers run the model: 'auto' takes CUDA when present, else the CPU."
    )
    runtime: Literal["auto", "torch", "compiled", "onnx"] = Field(
        "auto", description="Runtime of the workers' backbone: 'auto' takes the one measured fastest on this machine "
        "(recorded in the model directory's runtime.json, timed again when the machine, versions or model change; "
        "`aqa runtime MODEL_DIR` builds the other runtimes so they can be chosen); 'torch' (eager); 'compiled' "
        "(AOTInductor, built by `aqa runtime MODEL_DIR`); 'onnx' (onnxruntime on the model directory's backbone.onnx, "
        "made by `aqa export onnx MODEL_DIR`; on CUDA when the device is cuda and onnxruntime-gpu is installed)."
    )
    torch_threads: int = Field(
        0, ge=0, description="Intra-op threads per worker process, of torch or onnxruntime (0: the runtime's default)."
    )

    # --- where and how the API listens ----------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address `aqa serve` binds (0.0.0.0 in containers).")
    port: int = Field(8000, ge=1, le=65535, description="Port `aqa serve` listens on.")
    data_dir: Path = Field(Path("runs/service"), description="Uploads and, in embedded mode, the jobs database.")
    api_keys: Annotated[dict[str, Role], NoDecode] = Field(
        default_factory=dict,
        description="Comma-separated KEY:ROLE pairs (roles: read, score), e.g. 'k1:score,k2:read'. "
        "Empty: no authentication (local use only; a warning is logged at start).",
    )

    # --- admission ------------------------------------------------------------------------------
    max_upload_bytes: int = Field(500 * MIB, gt=0, description="Largest accepted upload; larger ones get 413.")
    max_video_seconds: float = Field(_DEFAULT_LIMITS.max_seconds, gt=0, description="Longest accepted video.")
    max_video_pixels: int = Field(_DEFAULT_LIMITS.max_pixels, gt=0, description="Most pixels per frame.")
    max_video_frames: int = Field(_DEFAULT_LIMITS.max_frames, gt=0, description="Most frames per video.")
    max_queue_depth: int = Field(
        100, gt=0, description="Most jobs accepted and not finished; beyond it the API answers 429."
    )
    retry_after_seconds: int = Field(
        2, gt=0, description="Retry-After sent with a 429 (queue full) or a 503 (job store unreachable). Keep it "
        "well below the server's 5 s keep-alive, so a client that waits this long and retries on its pooled "
        "connection does not race the server closing that connection.",
    )
    upload_idle_seconds: float = Field(
        20.0, gt=0, description="An upload whose client sends nothing for this long is ended with 408 and its "
        "partial file deleted.",
    )
    upload_min_bytes_per_second: int = Field(
        8192, ge=0, description="Slowest average upload rate accepted once the first AQA_UPLOAD_IDLE_SECONDS "
        "have passed (a trickling client is ended with 408); 0 disables the check.",
    )
    max_wait_seconds: float = Field(60.0, ge=0, description="Cap of POST /v1/scores?wait=SECONDS.")
    archive_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description=f"Folders whose videos POST /v1/batches may score in place ('{os.pathsep}'-separated). "
        "Empty: server-side archives are refused.",
    )

    # --- queue: embedded pool or Celery on Redis ------------------------------------------------
    broker_url: str | None = Field(
        None, description="Redis URL of the Celery broker. Unset or empty: embedded mode (API + in-process pool)."
    )
    result_backend: str | None = Field(
        None, description="Redis URL for Celery results and the job records (default: the broker URL)."
    )
    queue_name: str = Field("aqa-scoring", description="Celery queue the API sends scoring jobs to.")
    key_prefix: str = Field("aqa:", description="Prefix of the Redis keys of the job store (jobs, batches, workers).")
    celery_key_prefix: str = Field(
        "", description="Prefix of Celery's own Redis keys and channels (queues, results, events). Empty keeps "
        "Celery's standard names, which Flower and the celery CLI expect."
    )
    visibility_timeout: float = Field(
        3600.0, gt=0,
        description="Redelivery delay: seconds after which a job taken by a worker that died (kill -9, "
        "lost machine) goes back to the queue. Keep it above task_time_limit, or a slow job is started "
        "a second time (harmless, results are idempotent, but wasted work).",
    )
    task_soft_time_limit: float = Field(
        300.0, gt=0, description="Seconds after which a scoring job is stopped and failed with a reason."
    )
    task_time_limit: float = Field(360.0, gt=0, description="Hard limit: the worker process is killed.")
    result_expires: int = Field(7 * 24 * 3600, gt=0, description="Seconds finished jobs and results are kept.")
    embedded_workers: int = Field(1, ge=1, description="Scoring threads of the embedded pool.")
    worker_batch_size: int = Field(
        8, ge=1, le=64,
        description="Dynamic batching: the most jobs a worker process (or embedded scoring thread) scores together "
        "(decoded ahead, several per forward pass). A worker that starts a job takes up to this many in all of the jobs waiting in the queue "
        "(leaving the oldest waiting ones to idle workers); 1 scores one job at a time. The time limits apply "
        "to the whole batch.",
    )
    worker_batch_wait_ms: float = Field(
        0.0, ge=0, le=1000,
        description="How long a worker that found fewer waiting jobs than worker_batch_size waits for more before "
        "scoring (0: only the jobs already waiting, no added latency; a GPU server may trade a few ms "
        "for fuller batches).",
    )
    refuse_unfamiliar: bool = Field(
        False, description="Fail a job with `out_of_distribution` (HTTP 422 when waited for) instead of scoring a "
        "video unlike the model's training dives (see the result's `familiarity`). Off: score it and flag it."
    )
    worker_heartbeat_seconds: float = Field(
        10.0, gt=0, description="How often workers announce themselves; gone after three missed beats, and then "
        "the API hands their running jobs back to the queue."
    )
    store_retry_seconds: float = Field(
        120.0, ge=0, description="How long a worker keeps retrying an unreachable job store (Redis restarting or "
        "down) before it gives the job back to the queue; a result is stored, and the job acknowledged, only "
        "once Redis answers again.",
    )
    max_attempts: int = Field(
        3, ge=1, description="Starts of a job before it is failed for good: each start beyond the first means a "
        "worker was lost mid-job (killed, out of memory, over the hard time limit).",
    )
    test_task_delay_seconds: float = Field(
        0.0, ge=0,
        description="TEST ONLY: seconds a worker sleeps after taking a job, before scoring, so tests can "
        "kill it mid-job. Leave at 0 in production.",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        keys: dict[str, str] = {}
        for pair in filter(None, (p.strip() for p in value.split(","))):
            key, sep, role = pair.rpartition(":")
            if not sep or not key:
                raise ValueError(f"API key entry {pair!r} is not KEY:ROLE (roles: read, score)")
            keys[key] = role
        return keys

    @field_validator("archive_roots", mode="before")
    @classmethod
    def _parse_archive_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [p for p in value.split(os.pathsep) if p]
        return value

    @field_validator("broker_url", "result_backend", mode="before")
    @classmethod
    def _redis_only(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None  # `AQA_BROKER_URL=` (as .env files write it) means unset: embedded mode
        if isinstance(value, str) and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{value!r}: only Redis URLs (redis://, rediss://, unix://) are supported")
        return value

    @model_validator(mode="after")
    def _consistent_time_limits(self) -> ServiceSettings:
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError("task_soft_time_limit must be below task_time_limit")
        return self

    @property
    def embedded(self) -> bool:
        """No broker: the API process runs the jobs itself."""
        return self.broker_url is None

    @property
    def store_url(self) -> str | None:
        """Redis URL holding the job records (None in embedded mode: SQLite in the data dir)."""
        return self.result_backend or self.broker_url

    @property
    def video_limits(self) -> VideoLimits:
        return VideoLimits(
            max_seconds=self.max_video_seconds, max_pixels=self.max_video_pixels, max_frames=self.max_video_frames
        )

    @property
    def upload_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    def check_runtime(self) -> None:
        """Refuse the onnx runtime for a model directory without an ONNX export, saying how to make one.

        Whether the export is current (made from these weights) is checked when the model is loaded.
        """
        if self.runtime != "onnx" or not self.model_dir.is_dir():
            return
        from models.onnx_backbone import ONNX_FILE

        if not (self.model_dir / ONNX_FILE).is_file():
            raise ConfigurationError(
                f"AQA_RUNTIME=onnx, but the model directory {self.model_dir} has no {ONNX_FILE}: create it with "
                f"`aqa export onnx {self.model_dir}`, or set AQA_RUNTIME=torch."
            )

    def check_model_dir(self) -> None:
        """Fail with a clear message when the configured model directory is missing."""
        if not self.model_dir.is_dir():
            fix = "set AQA_MODEL_DIR (or --model) to a model directory made by `aqa train`."
            if self.model_dir == DEMO_MODEL_DIR:
                fix = f"The bundled demo model is not there yet: create it with `aqa demo build`, or {fix}"
            else:
                fix = fix[0].upper() + fix[1:]
            raise ConfigurationError(f"The model directory {self.model_dir} does not exist. {fix}")
