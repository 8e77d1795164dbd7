"""Real service processes for tests: ``aqa serve`` (uvicorn), ``aqa worker`` (Celery), on free ports.

Every process starts in its own session (process group), so stopping it stops its children too (the
Celery pool). :class:`RedisNamespace` gives each test run its own key prefix and queue on the shared
Redis and deletes exactly its own keys afterwards (never FLUSHDB).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

REPO = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def aqa_executable() -> str:
    """The installed ``aqa`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "aqa"
    if not script.is_file():
        raise RuntimeError(f"{script} is missing: install the project (pip install -e .)")
    return str(script)


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def service_env(**settings: object) -> dict[str, str]:
    """This process's environment without AQA_* variables, plus ``AQA_<NAME>`` for each keyword."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQA_")}
    env.update({f"AQA_{k.upper()}": str(v) for k, v in settings.items() if v is not None})
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ServiceProcess:
    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group at once: a crash, no clean-up runs."""
        _signal_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.proc.pid, signal.SIGKILL)  # children left behind, if any
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        self._log.close()

    def fail(self, why: str) -> RuntimeError:
        return RuntimeError(f"{why}; command {' '.join(self.command)}; log tail:\n{self.log()[-3000:]}")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def start_api(env: dict[str, str], log_path: Path, command: list[str] | None = None,
              timeout: float = 90.0) -> tuple[ServiceProcess, str]:
    """Start ``aqa serve`` (or ``command``) on ``env``'s AQA_PORT; wait for /healthz. Returns (process, url)."""
    url = f"http://127.0.0.1:{env['AQA_PORT']}"
    process = ServiceProcess(command or [aqa_executable(), "serve"], env, log_path)

    def healthy() -> bool:
        if not process.alive():
            raise process.fail("the API exited during start-up")
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(healthy, timeout, "the API to answer /healthz", interval=0.2)
    except BaseException:
        process.stop()
        raise
    return process, url


def start_worker(env: dict[str, str], log_path: Path, command: list[str] | None = None,
                 timeout: float = 90.0) -> ServiceProcess:
    """Start ``aqa worker`` (or ``command``); wait until Celery says it is ready."""
    process = ServiceProcess(command or [aqa_executable(), "worker", "--concurrency=1"], env, log_path)

    def ready() -> bool:
        if not process.alive():
            raise process.fail("the worker exited during start-up")
        return " ready." in process.log()

    try:
        wait_until(ready, timeout, "the Celery worker to be ready", interval=0.2)
    except BaseException:
        process.stop()
        raise
    return process


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def readme_text() -> tuple[Path, str]:
    """README.md, or the file AQA_TEST_README names (to check a README section before it is merged)."""
    readme = Path(os.environ.get("AQA_TEST_README", REPO / "README.md"))
    return readme, readme.read_text() if readme.is_file() else ""


class RedisNamespace:
    """A key prefix and queue name of one's own on the shared Redis."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.prefix = f"aqatest-{tag}:"
        self.queue = f"aqatest-{tag}"
        self.client = redis.Redis.from_url(REDIS_URL, decode_responses=True)

    def settings(self) -> dict[str, str]:
        return {"broker_url": REDIS_URL, "key_prefix": self.prefix, "celery_key_prefix": f"{self.prefix}celery:",
                "queue_name": self.queue}

    def cleanup(self) -> None:
        keys = list(self.client.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            self.client.delete(*keys)
        self.client.close()


class RedisServer:
    """A redis-server of the test's own on a free port, with AOF on as docker-compose.yml runs it.

    It may be stopped and restarted (on the same data files), which the shared Redis on 6379 never is.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            wait_until(lambda: self._answers(client), 30, "the test Redis to answer")
        finally:
            client.close()

    @staticmethod
    def _answers(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:  # refused, or still loading its AOF
            return False

    def stop(self) -> None:
        """SIGTERM: Redis writes its AOF and exits, as on a restart or `docker compose stop`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
