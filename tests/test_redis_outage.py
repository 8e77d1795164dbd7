"""Issue #18 items 2 and 3: Celery mode through a Redis restart and a 30 s outage, with a user's defaults.

Redis here is a server of the test's own on a free port, with AOF on (``appendfsync everysec``) as
docker-compose.yml runs it. The API and the worker are `aqa serve` and `aqa worker` with every setting
at its default, only the ports, the data dir and the model pointed at the test's, and the test-only
``AQA_TEST_TASK_DELAY_SECONDS`` making each job last half a second more: the tiny model scores a dive in
milliseconds, and without it all ten jobs could finish before the restart.

- Restarted mid-run: every accepted job still ends done with one stored result, the queue depth returns
  to 0 and no upload is left behind (a result that could not be stored is retried until Redis is back).
- Stopped for 30 s: every route that needs the store answers 503 with Retry-After within a second (the
  others 200 / 503 as they should), never a 500, on one keep-alive connection that is never dropped
  unannounced; once Redis is back the service scores again by itself.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.client import ScoringClient
from tests.service_processes import RedisServer, free_port, service_env, start_api, start_worker, wait_until

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 30.0
TASK_DELAY_SECONDS = 0.5  # test only: each job lasts this much longer, so a restart falls mid-run


@pytest.fixture(scope="module")
def stack(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RedisServer, Path]]:
    redis_server = RedisServer(tmp_path_factory.mktemp("redis"))
    data = tmp_path_factory.mktemp("outage-data")
    env = service_env(broker_url=redis_server.url, model_dir=tiny_model_dir, data_dir=data, port=free_port(),
                      test_task_delay_seconds=TASK_DELAY_SECONDS)
    worker = api = None
    try:
        worker = start_worker(env, data / "worker.log")
        api, url = start_api(env, data / "api.log")
        with ScoringClient(url) as client:
            wait_until(lambda: client.readiness().ready, 120, "a worker to announce its model", interval=0.5)
        yield url, redis_server, data
    finally:
        if api is not None:
            api.stop()
        if worker is not None:
            worker.stop()
        redis_server.stop()


def dive(tiny_dataset: Path, n: int) -> Path:
    return tiny_dataset / "videos" / f"dive_{n:05d}.mp4"


def queue_depth(url: str) -> int:
    metrics = httpx.get(f"{url}/metrics", timeout=5).text
    return int(float(re.search(r"^aqa_queue_depth (\S+)$", metrics, re.MULTILINE).group(1)))


def finished_done(url: str) -> int:
    metrics = httpx.get(f"{url}/metrics", timeout=5).text
    return int(float(re.search(r'^aqa_jobs_finished_total\{state="done"\} (\S+)$', metrics, re.MULTILINE).group(1)))


def uploads_left(data: Path) -> list[Path]:
    return sorted((data / "uploads").glob("*"))


def test_a_redis_restart_mid_run_loses_no_job(stack: tuple[str, RedisServer, Path], tiny_dataset: Path) -> None:
    url, redis_server, data = stack
    done_before = finished_done(url)
    with ScoringClient(url) as client:
        job_ids = [client.submit(dive(tiny_dataset, n)).job_id for n in range(10)]
        wait_until(lambda: client.job(job_ids[0]).status.value == "done", 120, "a first job to finish",
                   interval=0.05)
        states = [client.job(j).status.value for j in job_ids]
        redis_server.restart()
        jobs = [client.wait(j, timeout=300) for j in job_ids]
    counts = {state: states.count(state) for state in sorted(set(states))}
    print(f"\nRedis restarted with jobs {counts}; afterwards "
          f"{sum(j.status.value == 'done' for j in jobs)} of 10 done, attempts {[j.attempts for j in jobs]}")
    assert 0 < states.count("done") < 10  # the restart came mid-run
    assert [j.status.value for j in jobs] == ["done"] * 10
    assert finished_done(url) == done_before + 10  # one stored result per job
    wait_until(lambda: queue_depth(url) == 0, 30, "the queue depth to return to 0")
    assert uploads_left(data) == []


def multipart(video: Path) -> tuple[bytes, str]:
    boundary = "aqa-outage-test"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="{video.name}"\r\n'
            "Content-Type: video/mp4\r\n\r\n").encode() + video.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_a_30_second_outage_answers_503_in_time_and_scoring_resumes_by_itself(
        stack: tuple[str, RedisServer, Path], tiny_dataset: Path) -> None:
    url, redis_server, data = stack
    with ScoringClient(url) as client:
        before = [client.submit(dive(tiny_dataset, n)).job_id for n in range(10, 13)]
        batch = client.create_batch(job_ids=before).id
    body, content_type = multipart(dive(tiny_dataset, 13))
    requests = [
        ("POST", "/v1/scores", body, {"Content-Type": content_type}, 503),
        ("GET", f"/v1/jobs/{before[0]}", None, {}, 503),
        ("POST", "/v1/batches", json.dumps({"job_ids": before}).encode(), {"Content-Type": "application/json"}, 503),
        ("GET", f"/v1/batches/{batch}", None, {}, 503),
        ("GET", f"/v1/batches/{batch}/results", None, {}, 503),
        ("GET", "/v1/models", None, {}, 503),
        ("GET", "/v1/exemplars", None, {}, 503),
        ("GET", "/v1/model-card", None, {}, 503),
        ("GET", "/v1/events", None, {}, 503),
        ("GET", "/v1/events/results?event=final", None, {}, 503),
        ("GET", "/", None, {}, 200),  # the desk page itself needs no store
        ("GET", "/metrics", None, {}, 503),
        ("GET", "/readyz", None, {}, 503),
        ("GET", "/healthz", None, {}, 200),
    ]
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    answers: list[tuple[str, int, float, str | None]] = []
    announced_closes = 0
    redis_server.stop()
    stopped = time.monotonic()
    try:
        while time.monotonic() - stopped < OUTAGE_SECONDS:
            for method, path, payload, headers, _ in requests:
                started = time.monotonic()
                connection.request(method, path, body=payload, headers=headers)  # raises if the connection dropped
                response = connection.getresponse()
                response.read()
                answers.append((f"{method} {path}", response.status, time.monotonic() - started,
                                response.getheader("Retry-After")))
                if response.will_close:  # announced (Connection: close): the client knows to reconnect
                    announced_closes += 1
            time.sleep(0.5)
    finally:
        redis_server.start()
        connection.close()
    expected = {f"{m} {p}": status for m, p, _, _, status in requests}
    wrong = [a for a in answers if a[1] != expected[a[0]]]
    assert not wrong, wrong[:5]
    slowest = max(a[2] for a in answers)
    assert slowest < 1.0, [a for a in answers if a[2] >= 1.0][:5]
    assert all(a[3] == "2" for a in answers if a[1] == 503 and a[0] != "GET /readyz")
    rounds = len(answers) // len(requests)
    print(f"\nRedis down {OUTAGE_SECONDS:g} s: {len(answers)} requests ({rounds} rounds of {len(requests)} routes), "
          f"no 500, slowest answer {slowest * 1000:.0f} ms, {announced_closes} announced connection closes")

    with ScoringClient(url) as client:
        jobs = [client.wait(j, timeout=300) for j in before]
        after = client.score(dive(tiny_dataset, 14), timeout=300)
    assert [j.status.value for j in jobs] == ["done"] * 3 and after.status.value == "done"
    assert [j.attempts for j in jobs] == [1, 1, 1]  # the running one's result waited for Redis; nothing ran twice
    wait_until(lambda: queue_depth(url) == 0, 30, "the queue depth to return to 0")
    assert uploads_left(data) == []
