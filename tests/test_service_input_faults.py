"""Issue #18 items 4 and 6, in process (embedded app, the real tiny model): inputs that used to get a 500
or a wrong answer get a 4xx with the reason, or are handled.

- POST /v1/batches: a NUL in ``folder`` or ``labels_csv``, a labels CSV that is not UTF-8 or is a video,
  a CSV field over 131,072 bytes, unusable paths, bodies outside the schema.
- Uploads: a file part named only by ``filename*`` (RFC 2231); orphans of interrupted uploads are swept
  at start-up while uploads in progress and queued jobs keep their files.
- Results CSV (API export and ``aqa batch``): cells a spreadsheet would run as formulas are neutralised
  and control characters dropped.
"""

from __future__ import annotations

import csv
import fcntl
import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.app import create_app
from service.batch import run_batch
from service.jobs.sqlite import SqliteJobStore
from service.schemas import JobRecord, JobRequest, JobStatus
from service.settings import ServiceSettings


@pytest.fixture(scope="module")
def archive(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fault-archive")
    shutil.copy(tiny_dataset / "videos" / "dive_00000.mp4", folder / "clip.mp4")
    (folder / "latin1.csv").write_bytes("video,difficulty\nplongée.mp4,3.0\n".encode("latin-1"))
    shutil.copy(tiny_dataset / "videos" / "dive_00001.mp4", folder / "labels.csv")  # a video named like a CSV
    (folder / "huge-field.csv").write_text("video,difficulty\n" + "x" * 140_000 + ".mp4,3.0\n")
    (folder / "no-video-cell.csv").write_text("video,difficulty\n,3.0\n")
    (folder / "outside.csv").write_text("video,difficulty\n../../etc/passwd,3.0\n")
    return folder


@pytest.fixture(scope="module")
def app(tiny_model_dir: Path, archive: Path, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return create_app(ServiceSettings(model_dir=tiny_model_dir, data_dir=tmp_path_factory.mktemp("faults"),
                                      archive_roots=str(archive)))


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


@pytest.mark.parametrize(("archive_spec", "status", "code", "says"), [
    ({"folder": "{root}\x00/etc"}, 422, "invalid_request", "NUL"),
    ({"folder": "{root}", "labels_csv": "meet\x00.csv"}, 422, "invalid_request", "NUL"),
    ({"folder": "{root}", "labels_csv": "latin1.csv"}, 422, "invalid_labels_csv", "not a UTF-8"),
    ({"folder": "{root}", "labels_csv": "labels.csv"}, 422, "invalid_labels_csv", "UTF-8"),
    ({"folder": "{root}", "labels_csv": "huge-field.csv"}, 422, "invalid_labels_csv", "field larger than field limit"),
    ({"folder": "{root}", "labels_csv": "no-video-cell.csv"}, 422, "invalid_labels_csv", "'video' cell is empty"),
    ({"folder": "{root}", "labels_csv": "outside.csv"}, 422, "invalid_labels_csv", "outside the folder"),
    ({"folder": "{root}", "labels_csv": "missing.csv"}, 404, "archive_not_found", "no file"),
    ({"folder": "{root}/" + "x" * 300}, 422, "invalid_request", "File name too long"),
])
def test_unusable_archive_requests_get_a_4xx_with_the_reason(client: TestClient, archive: Path, archive_spec: dict,
                                                            status: int, code: str, says: str) -> None:
    spec = {k: v.replace("{root}", str(archive)) for k, v in archive_spec.items()}
    error = error_of(client.post("/v1/batches", json={"archive": spec}), status)
    assert error["code"] == code and says in error["message"]


@pytest.mark.parametrize(("body", "status"), [
    (b'{"archive": null}', 422),
    (b"{}", 422),
    (b'{"job_ids": ["a"], "archive": {"folder": "/x"}}', 422),
    (b'{"archive": {"folder": "/x", "unknown": 1}}', 422),
    (b"{not json", 422),
    (b'{"job_ids": ["\xff"]}', 400),  # not UTF-8: FastAPI cannot even decode it
])
def test_batch_bodies_outside_the_schema_get_a_documented_4xx(client: TestClient, body: bytes, status: int) -> None:
    response = client.post("/v1/batches", content=body, headers={"Content-Type": "application/json"})
    error_of(response, status)
    documented = client.get("/openapi.json").json()["paths"]["/v1/batches"]["post"]["responses"]
    assert str(status) in documented


def test_the_batch_body_schema_says_exactly_one_of_job_ids_and_archive(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/batches"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    shapes = [spec["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]] for ref in body["anyOf"]]
    assert sorted(tuple(s["required"]) for s in shapes) == [("archive",), ("job_ids",)]
    assert all(s["additionalProperties"] is False for s in shapes)


def multipart(disposition: str, content: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = "aqa-fault-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: video/mp4\r\n\r\n").encode() \
        + content + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_a_file_part_named_only_by_filename_star_is_the_video(client: TestClient, archive: Path) -> None:
    body, headers = multipart("form-data; name=\"video\"; filename*=UTF-8''plong%C3%A9e%20107B.mp4",
                              (archive / "clip.mp4").read_bytes())
    response = client.post("/v1/scores", params={"wait": 30}, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["source_name"] == "plongée 107B.mp4" and response.json()["status"] == "done"


def test_the_results_csv_neutralises_formulas_and_drops_control_characters(client: TestClient, archive: Path) -> None:
    video = (archive / "clip.mp4").read_bytes()
    job_ids = []
    for name in ("=1+2*HYPERLINK(A1).mp4", "@SUM(A1)\x00\x07.mp4", "-2+3.mp4"):
        body, headers = multipart(f'form-data; name="video"; filename="{name}"', video)
        job_ids.append(client.post("/v1/scores", params={"wait": 30}, content=body, headers=headers).json()["id"])
    batch = client.post("/v1/batches", json={"job_ids": job_ids}).json()["id"]
    exported = client.get(f"/v1/batches/{batch}/results").text
    assert "\x00" not in exported and "\x07" not in exported
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [r["source"] for r in rows] == ["'=1+2*HYPERLINK(A1).mp4", "'@SUM(A1).mp4", "'-2+3.mp4"]
    assert all(float(r["score"]) > 0 for r in rows)  # numbers stay numbers


def test_aqa_batch_writes_safe_cells_and_still_resumes(tiny_model_dir: Path, archive: Path, tmp_path: Path) -> None:
    folder = tmp_path / "meet"
    folder.mkdir()
    shutil.copy(archive / "clip.mp4", folder / "=cmd.mp4")
    out = tmp_path / "results.csv"
    settings = ServiceSettings(model_dir=tiny_model_dir)
    first = run_batch(folder, out, settings=settings, progress=False)
    [row] = list(csv.DictReader(out.open()))
    assert first.done == 1 and row["source"] == "'=cmd.mp4" and row["status"] == "done"
    again = run_batch(folder, out, settings=settings, progress=False)
    assert again.skipped == 1 and again.done == 0  # the neutralised name still matches its video
    assert len(list(csv.DictReader(out.open()))) == 1


def test_orphaned_uploads_are_swept_at_start_up(tiny_model_dir: Path, archive: Path, tmp_path: Path) -> None:
    settings = ServiceSettings(model_dir=tiny_model_dir, data_dir=tmp_path)
    settings.upload_dir.mkdir(parents=True)
    orphan = settings.upload_dir / "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f.mp4"  # a crash mid-upload left it
    orphan.write_bytes(b"\0" * 1000)
    queued = settings.upload_dir / "1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e.mp4"  # accepted before the stop
    shutil.copy(archive / "clip.mp4", queued)
    store = SqliteJobStore(settings.sqlite_path, result_expires=3600)
    store.admit([JobRecord(id=queued.stem, status=JobStatus.queued, created_at=time.time(), request=JobRequest(
        source_name="clip.mp4", video_path=str(queued.resolve()), owns_file=True))], max_depth=5)
    receiving = settings.upload_dir / "2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d.mp4"  # another process is receiving it
    with receiving.open("wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with TestClient(create_app(settings)) as client:
            assert not orphan.exists() and receiving.exists()
            deadline = time.monotonic() + 60
            while client.get(f"/v1/jobs/{queued.stem}").json()["status"] != "done":
                assert time.monotonic() < deadline
                time.sleep(0.1)
    assert not queued.exists()  # scored after the restart, then deleted as every finished upload is
    store.close()
