"""End to end against a real `aqa serve` (uvicorn subprocess, embedded workers) on a free port.

Parity with Scorer.score, 20 concurrent uploads under a small queue depth (429 + Retry-After, none
lost), a 1 GiB upload refused with 413 while the server's peak RSS is measured, a crash (kill -9) and
restart that loses no accepted job, the README's curl examples, and `aqa batch --url`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from aqa.cli import main
from models.scorer import QueryLabels, Scorer
from service.client import ApiError, ScoringClient
from service.settings import ServiceSettings
from tests.service_processes import (
    REPO,
    ServiceProcess,
    free_port,
    memory_kib,
    readme_text,
    service_env,
    start_api,
    wait_until,
)

pytestmark = pytest.mark.slow

SCORE_KEY, READ_KEY = "e2e-score-key", "e2e-read-key"
RETRY_AFTER = ServiceSettings.model_fields["retry_after_seconds"].default
UVICORN_KEEP_ALIVE = 5  # seconds an idle connection stays open (uvicorn's default, which `aqa serve` keeps)
UPLOAD_CAP = 256 * 2**20
MIB = 2**20


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-data")


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, data_dir: Path) -> Iterator[tuple[ServiceProcess, str]]:
    data = data_dir
    env = service_env(model_dir=tiny_model_dir, data_dir=data, port=free_port(),
                      api_keys=f"{SCORE_KEY}:score,{READ_KEY}:read", max_queue_depth=8,
                      max_upload_bytes=UPLOAD_CAP, test_task_delay_seconds=0.1)
    process, url = start_api(env, data / "api.log")
    try:
        yield process, url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def url(server: tuple[ServiceProcess, str]) -> str:
    return server[1]


def dives(tiny_dataset: Path) -> list[Path]:
    return sorted((tiny_dataset / "videos").glob("*.mp4"))


def test_a_served_score_equals_the_scoring_core(url: str, tiny_dataset: Path, tiny_model_dir: Path) -> None:
    video = dives(tiny_dataset)[0]
    with ScoringClient(url, api_key=SCORE_KEY) as client:
        job = client.score(video, difficulty=2.8, action_class="107B")
    expected = Scorer.from_dir(tiny_model_dir).score(video, QueryLabels(difficulty=2.8, action_class="107B"))
    assert job.status.value == "done"
    assert job.result.score == pytest.approx(expected.score, rel=1e-6)
    assert [v.id for v in job.result.votes] == [v.id for v in expected.votes]
    assert job.result.model == expected.model


def test_twenty_concurrent_uploads_all_finish_and_a_full_queue_says_429(url: str, tiny_dataset: Path) -> None:
    videos = dives(tiny_dataset)[:20]
    refusals: list[ApiError] = []

    def upload(video: Path) -> str:
        with ScoringClient(url, api_key=SCORE_KEY) as client:
            while True:
                try:
                    return client.submit(video).job_id
                except ApiError as exc:
                    if exc.status != 429:
                        raise
                    refusals.append(exc)
                    time.sleep(exc.retry_after)

    with ThreadPoolExecutor(20) as pool:
        job_ids = list(pool.map(upload, videos))
    assert len(set(job_ids)) == 20
    assert refusals and all(r.code == "queue_full" and r.retry_after == RETRY_AFTER for r in refusals)
    with ScoringClient(url, api_key=READ_KEY) as client:
        jobs = [client.wait(job_id, timeout=120) for job_id in job_ids]
    assert [j.status.value for j in jobs] == ["done"] * 20
    assert [j.source_name for j in jobs] == [v.name for v in videos]
    print(f"\n20 concurrent uploads: {len(refusals)} answered 429 (queue depth 8) and were retried; all 20 done")


def test_a_1_gib_upload_is_refused_with_413_in_bounded_memory(server: tuple[ServiceProcess, str],
                                                              data_dir: Path) -> None:
    process, url = server
    boundary = "aqa-test-boundary"

    def body() -> Iterator[bytes]:
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="huge.mp4"\r\n'
               "Content-Type: video/mp4\r\n\r\n").encode()
        chunk = bytes(MIB)
        for _ in range(1024):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    before = memory_kib(process.pid)
    started = time.monotonic()
    response = httpx.post(f"{url}/v1/scores", content=body(), timeout=120,
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "X-API-Key": SCORE_KEY})
    seconds = time.monotonic() - started
    after = memory_kib(process.pid)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "upload_too_large"
    uploads = [p for p in (data_dir / "uploads").iterdir() if p.stat().st_size > MIB]
    assert uploads == []  # the partial upload is deleted
    print(f"\n1 GiB upload to the embedded server (cap {UPLOAD_CAP // MIB} MiB): 413 after {seconds:.1f} s; "
          f"RSS {before['VmRSS'] / 1024:.0f} -> {after['VmRSS'] / 1024:.0f} MB, "
          f"peak {before['VmHWM'] / 1024:.0f} -> {after['VmHWM'] / 1024:.0f} MB")
    # This process also holds torch and the model (its baseline); the upload itself must add nothing but
    # buffers. The API process of a Celery deployment (no torch) is held under 300 MB in test_containers.py.
    assert after["VmHWM"] - before["VmHWM"] < 16 * 1024


def test_a_client_that_waits_retry_after_reuses_its_connection(url: str) -> None:
    """Retry-After (2 s) is well below the 5 s keep-alive: waiting it out never races the server's close."""
    assert RETRY_AFTER <= UVICORN_KEEP_ALIVE - 2
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        for _ in range(4):
            connection.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head, body = read_response(connection)
            assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower()
            assert json.loads(body) == {"status": "ok"}
            time.sleep(RETRY_AFTER)  # what a client told Retry-After does before trying again on this connection


def read_response(connection: socket.socket) -> tuple[bytes, bytes]:
    """One whole HTTP/1.1 response (head, body) from a keep-alive connection: the head may arrive without
    its body, so read on until Content-Length bytes of body are in."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = connection.recv(65536)
        assert chunk, "the server closed the connection"
        body += chunk
    return head, body


def stalled_upload(host: str, port: int, first_bytes: int) -> socket.socket:
    """An upload that declares 10 MiB, sends its headers and ``first_bytes`` of body, then nothing."""
    boundary = "stalled"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="slow.mp4"\r\n\r\n').encode()
    connection = socket.create_connection((host, port), timeout=60)
    connection.sendall((f"POST /v1/scores HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {SCORE_KEY}\r\n"
                        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                        f"Content-Length: {10 * MIB}\r\n\r\n").encode() + head + bytes(first_bytes))
    return connection


def whole_answer(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    return answer


def test_stalled_uploads_are_ended_and_release_their_files(server: tuple[ServiceProcess, str], data_dir: Path) -> None:
    """Issue #18 item 6: 20 uploads that stall mid-body each get 408 after AQA_UPLOAD_IDLE_SECONDS (20 s)."""
    process, url = server
    host, port = url.removeprefix("http://").split(":")
    uploads = data_dir / "uploads"

    def held() -> tuple[int, int]:
        """Sockets and upload files the server process holds open."""
        targets = []
        for fd in Path(f"/proc/{process.pid}/fd").iterdir():
            try:
                targets.append(os.readlink(fd))
            except FileNotFoundError:  # closed while we looked
                pass
        return sum(t.startswith("socket:") for t in targets), sum(t.startswith(str(uploads)) for t in targets)

    sockets_before, _ = held()
    started = time.monotonic()
    connections = [stalled_upload(host, int(port), 64 * 1024) for _ in range(20)]
    try:
        wait_until(lambda: held()[1] >= 20, 10, "the 20 partial uploads to be open on the server")
        during = held()
        answers = [whole_answer(c) for c in connections]  # blocks until the server gives up on each
        seconds = time.monotonic() - started
        wait_until(lambda: held()[0] <= sockets_before and held()[1] == 0, 15,
                   "the server to let go of the stalled uploads")
    finally:
        for connection in connections:
            connection.close()
    assert all(a.startswith(b"HTTP/1.1 408") and b'"upload_timeout"' in a for a in answers), answers[0][:300]
    idle = ServiceSettings.model_fields["upload_idle_seconds"].default
    assert idle <= seconds < idle + 10
    assert list(uploads.glob("*.mp4")) == []
    print(f"\n20 stalled uploads: {during[0] - sockets_before} sockets and {during[1]} partial files held; all "
          f"answered 408 after {seconds:.1f} s, the server then held none of them (the clients still connected)")


def test_wrong_or_missing_keys_over_http(url: str, tiny_dataset: Path) -> None:
    video = dives(tiny_dataset)[0]
    for headers, status, code in [({}, 401, "missing_api_key"), ({"X-API-Key": "nope"}, 401, "invalid_api_key"),
                                  ({"X-API-Key": READ_KEY}, 403, "forbidden")]:
        response = httpx.post(f"{url}/v1/scores", headers=headers, files={"video": video.open("rb")})
        assert response.status_code == status and response.json()["error"]["code"] == code


def readme_service_examples() -> str:
    """The bash block between the README's service-curl markers."""
    readme, text = readme_text()
    match = re.search(r"<!-- service-curl:start -->\s*```bash\n(.*?)```\s*<!-- service-curl:end -->", text, re.DOTALL)
    if match is None:
        pytest.fail(f"{readme} has no service curl examples (the block between <!-- service-curl:start --> and "
                    "<!-- service-curl:end -->)")
    return match.group(1)


def test_the_readme_curl_examples_work_as_written(url: str, tiny_dataset: Path, tmp_path: Path) -> None:
    script = readme_service_examples()
    shutil.copy(dives(tiny_dataset)[1], tmp_path / "dive.mp4")
    env = {**os.environ, "AQA_URL": url, "AQA_KEY": SCORE_KEY}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert '"status":"done"' in done.stdout and '"votes":' in done.stdout
    assert "source,job_id,status,score" in done.stdout  # the batch CSV export


def test_batch_cli_through_the_service_resumes(url: str, tiny_dataset: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "meet"
    folder.mkdir()
    for video in dives(tiny_dataset)[20:23]:
        shutil.copy(video, folder / video.name)
    (folder / "sheet.mp4").write_text("not a video\n")
    out = tmp_path / "results.csv"
    args = ["batch", str(folder), "--out", str(out), "--url", url, "--api-key", SCORE_KEY, "--no-progress"]
    assert main(args) == 0
    assert "4 videos: 3 scored, 1 failed, 0 to retry, 0 already done earlier" in capsys.readouterr().out
    rows = out.read_text().splitlines()
    assert len(rows) == 5 and "not_a_video" in rows[4]
    assert main(args) == 0
    assert "0 scored, 0 failed, 0 to retry, 4 already done earlier" in capsys.readouterr().out


def test_jobs_accepted_before_a_crash_finish_after_a_restart(tiny_model_dir: Path, tiny_dataset: Path,
                                                             tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = service_env(model_dir=tiny_model_dir, data_dir=data, port=free_port(),
                      test_task_delay_seconds=2.0)
    first, url = start_api(env, tmp_path / "first.log")
    host, port = url.removeprefix("http://").split(":")
    try:
        with ScoringClient(url) as client:
            job_ids = [client.submit(video).job_id for video in dives(tiny_dataset)[:3]]
            wait_until(lambda: client.job(job_ids[0]).status.value == "running", 20, "the first job to start")
        half_sent = stalled_upload(host, int(port), 256 * 1024)  # an upload under way when the server dies
        wait_until(lambda: len(list((data / "uploads").glob("*"))) == 4, 10, "the upload to reach the disk")
        first.kill()  # kill -9 the whole server mid-job: nothing gets to clean up
        half_sent.close()
    finally:
        first.stop()
    [orphan] = set((data / "uploads").glob("*")) - {data / "uploads" / f"{j}.mp4" for j in job_ids}
    env["AQA_TEST_TASK_DELAY_SECONDS"] = "0"
    second, url = start_api(env, tmp_path / "second.log")
    try:
        with ScoringClient(url) as client:
            jobs = [client.wait(job_id, timeout=60) for job_id in job_ids]
    finally:
        second.stop()
    assert [j.status.value for j in jobs] == ["done"] * 3
    assert [j.attempts for j in jobs] == [2, 1, 1]
    assert "re-queueing 3 job(s) accepted before the last stop" in second.log()
    assert not orphan.exists() and "deleted 1 upload(s) left behind by an interrupted request" in second.log()
    assert list((data / "uploads").glob("*")) == []


def test_serve_refuses_to_start_without_its_model(tmp_path: Path) -> None:
    env = service_env(model_dir=tmp_path / "no-model", data_dir=tmp_path, port=free_port())
    done = subprocess.run([sys.executable, "-m", "aqa.cli", "serve"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert f"error: The model directory {tmp_path / 'no-model'} does not exist." in done.stderr
