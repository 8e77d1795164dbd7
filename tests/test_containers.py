"""The container files: docker-compose.yml parses into the intended services, and the exact commands the
Dockerfile and compose file run work outside Docker (no Docker engine here) against the real Redis."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from models.scorer import Scorer
from service.client import ScoringClient
from service.schemas import Job
from tests.service_processes import (
    REDIS_URL,
    REPO,
    RedisNamespace,
    ServiceProcess,
    aqa_executable,
    free_port,
    memory_kib,
    start_api,
    start_worker,
)

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
DOCKERFILE = (REPO / "Dockerfile").read_text()
MIB = 2**20


def stages() -> dict[str, str]:
    """Dockerfile stage name -> its FROM image."""
    return {m.group(2): m.group(1) for m in re.finditer(r"^FROM\s+(\S+)\s+AS\s+(\S+)", DOCKERFILE, re.MULTILINE)}


def test_compose_has_redis_with_aof_api_gpu_worker_and_optional_flower() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"redis", "api", "worker", "flower"}
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert services["redis"]["volumes"] == ["redis-data:/data"]
    assert services["api"]["build"]["target"] == "cpu" and services["api"]["command"] == ["aqa", "serve"]
    assert services["worker"]["build"]["target"] == "gpu" and services["worker"]["command"][:2] == ["aqa", "worker"]
    [device] = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert services["flower"]["profiles"] == ["monitoring"]
    assert "profiles" not in services["api"] and "profiles" not in services["worker"]
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["AQA_BROKER_URL"] == "redis://redis:6379/0" and env["AQA_DATA_DIR"] == "/data"
        assert "uploads:/data" in services[name]["volumes"]  # the API's uploads are the workers' input
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert float(services["api"]["environment"]["AQA_VISIBILITY_TIMEOUT"]) > float(
        services["api"]["environment"]["AQA_TASK_TIME_LIMIT"])
    assert services["api"]["environment"] == {**services["worker"]["environment"], "AQA_HOST": "0.0.0.0",
                                               "AQA_PORT": "8000"}  # one configuration for both
    threads = ("AQA_TORCH_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    assert not [v for name in ("api", "worker") for v in services[name]["environment"] if v in threads]
    gpu_stage = DOCKERFILE[DOCKERFILE.index("AS gpu"):]
    assert not [v for v in threads if v in DOCKERFILE] and "PYTORCH_NVML_BASED_CUDA_CHECK=1" in gpu_stage


def test_dockerfile_has_a_cpu_and_a_cuda_gpu_target() -> None:
    targets = stages()
    assert targets["cpu"].startswith("python:") and targets["gpu"].startswith("nvidia/cuda:")
    gpu_stage = DOCKERFILE[DOCKERFILE.index("AS gpu"):]
    assert "onnxruntime-gpu" in gpu_stage and "pip uninstall -y onnxruntime" in gpu_stage
    cpu_stage = DOCKERFILE[DOCKERFILE.index("AS cpu"):DOCKERFILE.index("AS gpu")]
    assert "download.pytorch.org/whl/cpu" in cpu_stage
    for package in ("aqa", "video", "models", "exemplar_bank", "workers", "service"):
        assert f"COPY {package} {package}" in cpu_stage and f"COPY {package} {package}" in gpu_stage
    assert re.search(r'^CMD \["aqa", "serve"\]', cpu_stage, re.MULTILINE)


def compose_environment(service: str, overrides: dict[str, str]) -> dict[str, str]:
    """The service's environment as compose would pass it (${VAR:-default} resolved), then ``overrides``."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("AQA_")}
    for key, value in COMPOSE["services"][service]["environment"].items():
        env[key] = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1), m.group(2)), str(value))
    env.update(overrides)
    return env


def host_command(command: list[str]) -> list[str]:
    """A container command run here: `aqa` is this environment's console script."""
    return [aqa_executable() if command[0] == "aqa" else command[0], *command[1:]]


@pytest.fixture(scope="module")
def compose_stack(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ServiceProcess]]:
    """The compose api and worker commands, run as compose would configure them, on the real Redis."""
    namespace = RedisNamespace()
    data = tmp_path_factory.mktemp("compose-data")
    port = str(free_port())
    overrides = {f"AQA_{k.upper()}": v for k, v in namespace.settings().items()}
    overrides.update(AQA_DATA_DIR=str(data), AQA_MODEL_DIR=str(tiny_model_dir),
                     AQA_MAX_QUEUE_DEPTH="8", AQA_MAX_UPLOAD_BYTES=str(256 * MIB))
    services = COMPOSE["services"]
    assert services["api"]["environment"]["AQA_BROKER_URL"].replace("redis:6379", "127.0.0.1:6379") == REDIS_URL
    worker = start_worker(compose_environment("worker", overrides), data / "worker.log",
                          host_command(services["worker"]["command"]))
    api = None
    try:
        api, url = start_api(compose_environment("api", {**overrides, "AQA_HOST": "127.0.0.1", "AQA_PORT": port}),
                             data / "api.log", host_command(services["api"]["command"]))
        yield url, api
    finally:
        if api is not None:
            api.stop()
        worker.stop()
        namespace.cleanup()


@pytest.mark.slow
def test_the_compose_commands_serve_scores_through_celery(compose_stack: tuple[str, ServiceProcess],
                                                         tiny_dataset: Path, tiny_model_dir: Path) -> None:
    url, _ = compose_stack
    videos = sorted((tiny_dataset / "videos").glob("*.mp4"))[:20]

    def score(video: Path) -> Job:
        with ScoringClient(url) as client:
            return client.score(video, timeout=120)

    with ThreadPoolExecutor(20) as pool:
        jobs = list(pool.map(score, videos))
    assert [j.status.value for j in jobs] == ["done"] * 20
    assert len({j.id for j in jobs}) == 20
    expected = Scorer.from_dir(tiny_model_dir).score(videos[0])
    assert jobs[0].result.score == pytest.approx(expected.score, rel=1e-6)  # what `aqa score` says
    with ScoringClient(url) as client:
        assert client.readiness().ready and client.readiness().mode == "celery"
        [model] = client.models()
    assert model.workers == 1


@pytest.mark.slow
def test_the_dockerfile_healthcheck_command_passes(compose_stack: tuple[str, ServiceProcess]) -> None:
    url, _ = compose_stack
    line = re.search(r"^\s+CMD (python -c .*)$", DOCKERFILE, re.MULTILINE).group(1)
    command = shlex.split(line.replace("http://127.0.0.1:8000", url))
    subprocess.run(command, timeout=30, check=True)


@pytest.mark.slow
def test_the_celery_mode_api_refuses_a_1_gib_upload_under_300_mb(compose_stack: tuple[str, ServiceProcess]) -> None:
    url, api = compose_stack
    boundary = "aqa-test-boundary"

    def body() -> Iterator[bytes]:
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="huge.mp4"\r\n\r\n'.encode()
        chunk = bytes(MIB)
        for _ in range(1024):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    started = time.monotonic()
    response = httpx.post(f"{url}/v1/scores", content=body(), timeout=120,
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    seconds = time.monotonic() - started
    memory = memory_kib(api.pid)
    assert response.status_code == 413 and response.json()["error"]["code"] == "upload_too_large"
    print(f"\n1 GiB upload to the Celery-mode API (cap 256 MiB): 413 after {seconds:.1f} s; API RSS "
          f"{memory['VmRSS'] / 1024:.0f} MB, peak {memory['VmHWM'] / 1024:.0f} MB")
    assert memory["VmHWM"] < 300 * 1024
