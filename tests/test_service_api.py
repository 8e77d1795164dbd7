"""The HTTP API in-process (embedded mode, the real tiny model): routes, auth, errors, batches, metrics."""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from models.scorer import QueryLabels, Scorer
from service.app import create_app
from service.settings import ServiceSettings
from tests.media import truncated_copy
from tests.service_processes import readme_text

SCORE_KEY, READ_KEY = "test-score-key", "test-read-key"
SCORE = {"X-API-Key": SCORE_KEY}
READ = {"X-API-Key": READ_KEY}
MAX_UPLOAD = 2 * 2**20


@pytest.fixture(scope="module")
def archive(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An operator's archive folder: three dives listed in a labels CSV, plus a broken file."""
    folder = tmp_path_factory.mktemp("archive")
    rows = list(csv.DictReader((tiny_dataset / "labels.csv").open()))[:3]
    (folder / "videos").mkdir()
    with (folder / "meet.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["video", "difficulty", "action_class"])
        writer.writeheader()
        for row in rows:
            shutil.copy(tiny_dataset / row["video"], folder / row["video"])
            writer.writerow({"video": row["video"], "difficulty": row["difficulty"], "action_class": row["action_class"]})
        writer.writerow({"video": "broken.mp4"})
    (folder / "broken.mp4").write_bytes(b"\0" * 1000)
    return folder


@pytest.fixture(scope="module")
def app(tiny_model_dir: Path, archive: Path, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    settings = ServiceSettings(
        model_dir=tiny_model_dir, data_dir=tmp_path_factory.mktemp("service"),
        api_keys=f"{SCORE_KEY}:score,{READ_KEY}:read", archive_roots=str(archive), max_upload_bytes=MAX_UPLOAD,
    )
    return create_app(settings)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def scorer(tiny_model_dir: Path) -> Scorer:
    return Scorer.from_dir(tiny_model_dir)


def dive(tiny_dataset: Path, n: int) -> Path:
    return tiny_dataset / "videos" / f"dive_{n:05d}.mp4"


def upload(client: TestClient, video: Path, wait: float = 0, headers: dict = SCORE, **fields: str):
    return client.post("/v1/scores", params={"wait": wait} if wait else None, headers=headers, data=fields,
                       files={"video": (video.name, video.read_bytes(), "video/mp4")})


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


def wait_done(client: TestClient, job_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}", headers=READ).json()
        if job["status"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_an_upload_is_scored_exactly_like_the_scorer_does(client: TestClient, tiny_dataset: Path,
                                                          scorer: Scorer) -> None:
    video = dive(tiny_dataset, 2)
    response = upload(client, video, wait=30, difficulty="3.2", action_class="107B", competition="Nationals",
                      event="3m final")
    assert response.status_code == 200, response.text
    job = response.json()
    expected = scorer.score(video, QueryLabels(difficulty=3.2, action_class="107B"))
    result = job["result"]
    assert job["status"] == "done" and job["error"] is None and job["attempts"] == 1
    assert (job["difficulty"], job["action_class"], job["competition"], job["event"]) == (3.2, "107B", "Nationals",
                                                                                          "3m final")
    assert result["score"] == pytest.approx(expected.score, rel=1e-6)
    assert result["interval"]["low"] < result["score"] < result["interval"]["high"]
    assert [(v["id"], v["final_score"]) for v in result["votes"]] == [(v.id, v.final_score) for v in expected.votes]
    assert [v["relative"] for v in result["votes"]] == pytest.approx([v.relative for v in expected.votes], rel=1e-5)
    assert result["model"] == expected.model.model_dump()
    assert set(result["timings"]) == {"decode", "features", "voting", "total"}


def test_without_wait_the_upload_is_accepted_and_followed_by_its_status_url(client: TestClient,
                                                                            tiny_dataset: Path) -> None:
    response = upload(client, dive(tiny_dataset, 3))
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["status_url"] == f"/v1/jobs/{accepted['job_id']}" == response.headers["Location"]
    assert wait_done(client, accepted["job_id"])["status"] == "done"


def test_unusable_uploads_are_refused_with_the_probe_reason(client: TestClient, tiny_dataset: Path,
                                                            tmp_path: Path) -> None:
    text = tmp_path / "dive.mp4"
    text.write_text("this is a judging sheet, not a video\n")
    assert assert_error(upload(client, text), 422, "not_a_video")["message"] == "The file is plain text, not a video."
    cut = truncated_copy(dive(tiny_dataset, 4), tmp_path / "cut.mp4", keep_fraction=0.4)
    assert "truncated" in assert_error(upload(client, cut), 422, "truncated")["message"]
    uploads = list((client.app.state.services.settings.upload_dir).iterdir())
    assert not [p for p in uploads if p.suffix == ".mp4" and p.stat().st_size < 100]  # refused files are deleted


@pytest.mark.parametrize(("request_kwargs", "status", "code"), [
    ({"data": {"difficulty": "three"}}, 422, "invalid_request"),
    ({"data": {"difficulty": "9"}}, 422, "invalid_request"),
    ({"data": {"dificulty": "3.0"}}, 422, "invalid_request"),
    ({"files": {"difficulty": (None, "3.0")}}, 422, "missing_video"),
    ({"files": None, "data": {"difficulty": "3.0"}}, 415, "unsupported_media_type"),
    ({"files": {"clip": ("a.mp4", b"x")}}, 422, "invalid_request"),
    ({"json_body": {"video": "x"}}, 415, "unsupported_media_type"),
    ({"files": {"video": ("big.mp4", b"\0" * (MAX_UPLOAD + 1))}}, 413, "upload_too_large"),
])
def test_bad_submissions_get_a_json_error(client: TestClient, tiny_dataset: Path, request_kwargs: dict,
                                          status: int, code: str) -> None:
    kwargs = {"files": {"video": ("d.mp4", dive(tiny_dataset, 5).read_bytes())}, **request_kwargs}
    if "json_body" in kwargs:
        response = client.post("/v1/scores", headers=SCORE, json=kwargs["json_body"])
    else:
        response = client.post("/v1/scores", headers=SCORE, data=kwargs.get("data"), files=kwargs["files"])
    assert_error(response, status, code)


def test_api_keys_and_roles(client: TestClient, tiny_dataset: Path) -> None:
    assert_error(client.get("/v1/models"), 401, "missing_api_key")
    assert_error(client.get("/v1/models", headers={"X-API-Key": "guess"}), 401, "invalid_api_key")
    assert_error(upload(client, dive(tiny_dataset, 6), headers=READ), 403, "forbidden")
    assert client.get("/v1/models", headers=READ).status_code == 200
    assert client.get("/v1/models", headers=SCORE).status_code == 200
    assert client.get("/healthz").status_code == 200  # probes and metrics need no key
    assert client.get("/metrics").status_code == 200


def test_routing_and_unexpected_errors_use_the_same_body(app: FastAPI, client: TestClient) -> None:
    assert_error(client.get("/v1/jobs/0123456789abcdef", headers=READ), 404, "job_not_found")
    assert_error(client.get("/v1/no-such-route"), 404, "not_found")
    assert_error(client.delete("/healthz"), 405, "method_not_allowed")
    assert_error(client.get("/v1/batches/x/results", params={"format": "xml"}, headers=READ), 422, "invalid_request")

    def explode() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/test-only/explode", explode)
    error = assert_error(client.get("/test-only/explode"), 500, "internal_error")
    assert "a bug" not in error["message"]  # internals stay in the log


def test_a_full_queue_answers_429_with_retry_after(tiny_model_dir: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    settings = ServiceSettings(model_dir=tiny_model_dir, data_dir=tmp_path, max_queue_depth=1,
                               retry_after_seconds=7, test_task_delay_seconds=1.0)
    with TestClient(create_app(settings)) as small:
        assert upload(small, dive(tiny_dataset, 7), headers={}).status_code == 202
        refused = upload(small, dive(tiny_dataset, 8), headers={})
        assert_error(refused, 429, "queue_full")
        assert refused.headers["Retry-After"] == "7"


def test_models_exemplars_and_health(client: TestClient, scorer: Scorer) -> None:
    [model] = client.get("/v1/models", headers=READ).json()
    assert model["model"] == scorer.model_ref.model_dump() and model["workers"] == 1
    assert model["num_exemplars"] == len(scorer.bank) and model["runtime"] == "torch" and model["device"] == "cpu"
    bank = client.get("/v1/exemplars", headers=READ).json()
    assert [(e["id"], e["final_score"], e["difficulty"]) for e in bank["exemplars"]] == [
        (e.id, e.final_score, e.difficulty) for e in scorer.bank.exemplars]
    assert_error(client.get("/v1/exemplars", params={"fingerprint": "nope"}, headers=READ), 404, "model_not_found")
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] and ready["mode"] == "embedded" and all(c["ok"] for c in ready["checks"].values())


def test_metrics_show_queue_jobs_and_stage_latencies(client: TestClient, tiny_dataset: Path) -> None:
    upload(client, dive(tiny_dataset, 9), wait=30)
    text = client.get("/metrics").text
    assert "aqa_queue_depth 0.0" in text and "aqa_queue_capacity 100.0" in text
    assert 'aqa_jobs{state="queued"}' in text
    done = next(line for line in text.splitlines() if line.startswith('aqa_jobs_finished_total{state="done"}'))
    assert float(done.split()[-1]) >= 1
    for stage in ("queue_wait", "decode", "features", "voting", "total"):
        assert f'aqa_stage_seconds_count{{stage="{stage}"}}' in text
    assert "aqa_workers 1.0" in text


def test_batch_of_uploaded_jobs(client: TestClient, tiny_dataset: Path) -> None:
    ids = [upload(client, dive(tiny_dataset, n)).json()["job_id"] for n in (10, 11)]
    created = client.post("/v1/batches", headers=SCORE, json={"job_ids": ids})
    assert created.status_code == 201
    batch_id = created.json()["id"]
    for job_id in ids:
        wait_done(client, job_id)
    batch = client.get(f"/v1/batches/{batch_id}", headers=READ).json()
    assert batch["finished"] and batch["progress"] == 1.0 and batch["counts"]["done"] == 2
    assert [i["job_id"] for i in batch["items"]] == ids
    assert_error(client.post("/v1/batches", headers=SCORE, json={"job_ids": ["f" * 32]}), 404, "job_not_found")
    assert_error(client.post("/v1/batches", headers=SCORE, json={}), 422, "invalid_request")
    assert_error(client.get("/v1/batches/nope", headers=READ), 404, "batch_not_found")


def test_batch_of_an_allowed_archive_with_labels_and_exports(client: TestClient, archive: Path,
                                                             scorer: Scorer) -> None:
    rows = list(csv.DictReader((archive / "meet.csv").open()))
    created = client.post("/v1/batches", headers=SCORE,
                          json={"archive": {"folder": str(archive), "labels_csv": "meet.csv"}})
    assert created.status_code == 201, created.text
    batch_id = created.json()["id"]
    deadline = time.monotonic() + 60
    while not (batch := client.get(f"/v1/batches/{batch_id}", headers=READ).json())["finished"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert batch["total"] == 4 and batch["counts"]["done"] == 3 and batch["counts"]["failed"] == 1
    exported = list(csv.DictReader(io.StringIO(client.get(f"/v1/batches/{batch_id}/results", headers=READ).text)))
    assert [r["source"] for r in exported] == [r["video"] for r in rows]
    first = scorer.score(archive / rows[0]["video"], QueryLabels(float(rows[0]["difficulty"]),
                                                                       rows[0]["action_class"]))
    assert float(exported[0]["score"]) == pytest.approx(first.score, abs=1e-3)
    assert float(exported[0]["difficulty"]) == float(rows[0]["difficulty"])
    assert exported[3]["status"] == "failed" and exported[3]["error_code"] == "not_a_video"
    as_json = client.get(f"/v1/batches/{batch_id}/results", params={"format": "json"}, headers=READ).json()
    assert [r["status"] for r in as_json] == ["done"] * 3 + ["failed"]


def test_batch_of_a_whole_archive_folder(client: TestClient, archive: Path) -> None:
    flat = client.post("/v1/batches", headers=SCORE, json={"archive": {"folder": str(archive)}}).json()
    assert [i["source_name"] for i in flat["items"]] == ["broken.mp4"]
    deep = client.post("/v1/batches", headers=SCORE, json={"archive": {"folder": str(archive), "recursive": True}})
    assert sorted(i["source_name"] for i in deep.json()["items"]) == sorted(
        ["broken.mp4"] + [str(p.relative_to(archive)) for p in (archive / "videos").iterdir()])
    assert_error(client.post("/v1/batches", headers=SCORE, json={"archive": {"folder": str(archive / "videos" / "x")}}),
                 404, "archive_not_found")


def test_archives_outside_the_allowed_roots_are_refused(client: TestClient, tmp_path: Path) -> None:
    assert_error(client.post("/v1/batches", headers=SCORE, json={"archive": {"folder": str(tmp_path)}}), 403,
                 "archive_not_allowed")
    assert_error(client.post("/v1/batches", headers=SCORE, json={"archive": {"folder": "/etc/../tmp"}}), 403,
                 "archive_not_allowed")


def test_openapi_documents_the_upload_form_errors_and_keys(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    upload_op = spec["paths"]["/v1/scores"]["post"]
    form = upload_op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["video"] and form["properties"]["difficulty"]["example"] == 3.2
    assert {"413", "422", "429"} <= set(upload_op["responses"])
    assert "APIKeyHeader" in json.dumps(spec["components"]["securitySchemes"])
    assert spec["components"]["schemas"]["ErrorBody"]["examples"]


def test_every_setting_is_documented_in_the_readme() -> None:
    readme, text = readme_text()
    missing = [f"AQA_{name.upper()}" for name in ServiceSettings.model_fields if f"`AQA_{name.upper()}`" not in text]
    assert not missing, f"{readme} does not document {', '.join(missing)}"
