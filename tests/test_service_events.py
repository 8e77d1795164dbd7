"""A meet over the API: diver and round on uploads and archive batches, the events index of both job stores,
GET /v1/events and /v1/events/results (JSON and CSV), the model card routes and the served pages."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import models.model_dir
from service.app import create_app
from service.batch import BatchInputError, list_inputs
from service.client import ScoringClient
from service.jobs import JobStore
from service.jobs.redis import RedisJobStore
from service.jobs.sqlite import SqliteJobStore
from service.routes import model_card
from service.routes.pages import DOCS_ASSETS_DIR, PAGES, STATIC_DIR
from service.schemas import EventRef, JobRecord, JobRequest, JobStatus
from service.settings import ServiceSettings
from tests.service_processes import REDIS_URL, RedisNamespace
from tests.test_service_jobs import score_result

SCORE_KEY, READ_KEY = "events-score-key", "events-read-key"
SCORE = {"X-API-Key": SCORE_KEY}
READ = {"X-API-Key": READ_KEY}


def filed(job_id: str, competition: str | None, event: str | None, created: float, diver: str = "Ana") -> JobRecord:
    request = JobRequest(source_name=f"{job_id}.mp4", video_path=f"/data/{job_id}.mp4", owns_file=False,
                         competition=competition, event=event, diver=diver, round=1)
    return JobRecord(id=job_id, status=JobStatus.queued, request=request, created_at=created)


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    """Both stores, keeping finished jobs 1 s."""
    namespace = RedisNamespace() if request.param == "redis" else None
    store = RedisJobStore(REDIS_URL, prefix=namespace.prefix, result_expires=1) if namespace else \
        SqliteJobStore(tmp_path / "jobs.sqlite3", result_expires=1)
    yield store
    store.close()
    if namespace:
        namespace.cleanup()


def test_the_job_stores_find_an_events_jobs_and_forget_expired_ones(store: JobStore) -> None:
    now = time.time()
    store.admit([filed("a", "Nationals", "3m final", now), filed("b", "Nationals", "1m final", now + 1),
                 filed("c", "Nationals", "3m final", now + 2, diver="Bea"), filed("d", None, "3m final", now + 3),
                 filed("e", None, None, now + 4)], max_depth=10)
    assert [r.id for r in store.event_jobs("Nationals", "3m final")] == ["a", "c"]
    assert [r.id for r in store.event_jobs(None, "3m final")] == ["d"]  # None matches a job without the field
    assert store.event_jobs("Nationals", None) == []
    assert store.events() == [EventRef(competition=None, event="3m final", dives=1),
                              EventRef(competition="Nationals", event="3m final", dives=2),
                              EventRef(competition="Nationals", event="1m final", dives=1)]
    assert store.event_jobs("Nationals", "3m final")[1].request.diver == "Bea"

    for job_id in ("a", "b"):  # finished jobs expire after result_expires (1 s here)
        store.finish(job_id, now=time.time(), result=score_result(50.0))
    time.sleep(1.5)
    store.purge_expired(time.time())  # the SQLite store's sweep; Redis keys expire by themselves
    assert [r.id for r in store.event_jobs("Nationals", "3m final")] == ["c"]
    assert [(e.event, e.dives) for e in store.events()] == [("3m final", 1), ("3m final", 1)]


@pytest.fixture(scope="module")
def archive(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An operator's archive of one event: four dives by two divers, with their rounds in a labels CSV."""
    folder = tmp_path_factory.mktemp("meet-archive")
    rows = list(csv.DictReader((tiny_dataset / "labels.csv").open()))[:4]
    with (folder / "labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["video", "difficulty", "action_class", "diver", "round"])
        writer.writeheader()
        for n, row in enumerate(rows):
            shutil.copy(tiny_dataset / row["video"], folder / Path(row["video"]).name)
            writer.writerow({"video": Path(row["video"]).name, "difficulty": row["difficulty"],
                             "action_class": row["action_class"], "diver": ["Ana", "Bea"][n % 2], "round": n // 2 + 1})
    (folder / "bad-round.csv").write_text(f"video,round\n{Path(rows[0]['video']).name},first\n")
    return folder


@pytest.fixture(scope="module")
def app(tiny_model_dir: Path, archive: Path, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    model_dir = tmp_path_factory.mktemp("carded") / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    settings = ServiceSettings(model_dir=model_dir, data_dir=tmp_path_factory.mktemp("events-service"),
                               torch_threads=1, api_keys=f"{SCORE_KEY}:score,{READ_KEY}:read", archive_roots=str(archive))
    return create_app(settings)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def wait_finished(client: TestClient, params: dict, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        results = client.get("/v1/events/results", params=params, headers=READ).json()
        if results["finished"] or time.monotonic() > deadline:
            return results
        time.sleep(0.2)


def test_an_upload_carries_its_diver_and_round_into_the_events_table(client: TestClient, tiny_dataset: Path) -> None:
    video = tiny_dataset / "videos" / "dive_00005.mp4"
    fields = {"competition": "Club cup", "event": "1m", "diver": "Cai", "round": "2", "difficulty": "2.0"}
    response = client.post("/v1/scores", params={"wait": 60}, headers=SCORE, data=fields,
                           files={"video": (video.name, video.read_bytes(), "video/mp4")})
    assert response.status_code == 200, response.text
    job = response.json()
    assert (job["diver"], job["round"], job["competition"], job["event"]) == ("Cai", 2, "Club cup", "1m")
    results = client.get("/v1/events/results", params={"competition": "Club cup", "event": "1m"}, headers=READ).json()
    [dive] = results["dives"]
    assert dive["job_id"] == job["id"] and dive["score"] == pytest.approx(job["result"]["score"])
    assert (dive["interval_low"], dive["interval_high"]) == (job["result"]["interval"]["low"],
                                                               job["result"]["interval"]["high"])
    assert results["standings"] == [{"rank": 1, "diver": "Cai", "total": round(job["result"]["score"], 2),
                                     "dives_counted": 1, "dives_pending": 0, "dives_failed": 0}]


@pytest.mark.parametrize("fields, problem", [({"round": "0"}, "form.round"), ({"round": "two"}, "form.round"),
                                             ({"diver": "x" * 201}, "form.diver")])
def test_an_invalid_round_or_diver_is_refused_with_the_field_named(client: TestClient, tiny_dataset: Path,
                                                                   fields: dict, problem: str) -> None:
    video = tiny_dataset / "videos" / "dive_00005.mp4"
    response = client.post("/v1/scores", headers=SCORE, data=fields,
                           files={"video": (video.name, video.read_bytes(), "video/mp4")})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == problem


def test_an_archive_batch_files_its_dives_under_the_event_with_divers_and_rounds(client: TestClient,
                                                                                archive: Path) -> None:
    body = {"archive": {"folder": str(archive), "labels_csv": "labels.csv", "competition": "Nationals",
                        "event": "3m final"}}
    batch = client.post("/v1/batches", json=body, headers=SCORE)
    assert batch.status_code == 201, batch.text
    params = {"competition": "Nationals", "event": "3m final"}
    results = wait_finished(client, params)
    assert results["finished"] and results["total"] == 4 and results["counts"]["done"] == 4
    assert [(d["round"], d["diver"]) for d in results["dives"]] == [(1, "Ana"), (1, "Bea"), (2, "Ana"), (2, "Bea")]
    jobs = {d["job_id"]: client.get(f"/v1/jobs/{d['job_id']}", headers=READ).json() for d in results["dives"]}
    totals = {}
    for job in jobs.values():
        assert job["batch_id"] == batch.json()["id"]
        totals[job["diver"]] = totals.get(job["diver"], 0.0) + job["result"]["score"]
    expected = sorted(((round(t, 2), d) for d, t in totals.items()), reverse=True)
    assert [(s["total"], s["diver"]) for s in results["standings"]] == expected
    assert [s["rank"] for s in results["standings"]] == ([1, 1] if expected[0][0] == expected[1][0] else [1, 2])

    exported = client.get("/v1/events/results", params={**params, "format": "csv"}, headers=READ)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert 'filename="Nationals-3m_final.csv"' in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["diver"], r["round"], r["score"]) for r in rows] == [
        (d["diver"], str(d["round"]), f"{d['score']:.2f}") for d in results["dives"]]
    assert {r["diver_rank"] for r in rows if r["diver"] == expected[0][1]} == {"1"}

    events = client.get("/v1/events", headers=READ).json()
    assert {"competition": "Nationals", "event": "3m final", "dives": 4} in events


def test_the_events_routes_need_a_key_and_an_event_name(client: TestClient, archive: Path) -> None:
    assert client.get("/v1/events").status_code == 401
    assert client.get("/v1/events/results", params={"event": "3m final"}).json()["error"]["code"] == "missing_api_key"
    nameless = client.get("/v1/events/results", headers=READ)
    assert nameless.status_code == 422 and "Name the event" in nameless.json()["error"]["message"]
    unknown = client.get("/v1/events/results", params={"event": "no such event"}, headers=READ).json()
    assert unknown["total"] == 0 and unknown["standings"] == [] and unknown["finished"]
    bad = client.post("/v1/batches", json={"archive": {"folder": str(archive), "labels_csv": "bad-round.csv",
                                                       "event": "x"}}, headers=SCORE)
    assert bad.status_code == 422 and "round 'first' is not a whole number" in bad.json()["error"]["message"]


def test_the_model_card_and_its_html_report_are_served(client: TestClient, app: FastAPI) -> None:
    assert model_card.MODEL_CARD_JSON == models.model_dir.MODEL_CARD_JSON
    model_dir = app.state.services.settings.model_dir
    card = client.get("/v1/model-card", headers=READ).json()
    saved = json.loads((model_dir / "model_card.json").read_text())
    assert (card["model_id"], card["version"], card["head"]) == (saved["model_id"], saved["version"], saved["head"])
    assert card["evaluations"]["test split"]["final"] == saved["evaluations"]["test split"]["final"]
    assert card["live"] is True and card["report_url"] == "/v1/model-card/report"
    report = client.get("/v1/model-card/report", headers=READ)
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in report.headers["content-security-policy"]
    assert "data:image/png;base64," in report.text
    assert client.get("/v1/model-card").status_code == 401

    (model_dir / "report" / "report.html").unlink()
    assert client.get("/v1/model-card", headers=READ).json()["report_url"] is None
    assert client.get("/v1/model-card/report", headers=READ).json()["error"]["code"] == "report_not_found"


def test_the_pages_and_the_docs_assets_are_served_from_the_package(client: TestClient) -> None:
    for url, page_spec in PAGES.items():
        page = client.get(url)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert (STATIC_DIR / page_spec.content).read_text() in page.text and "<!--" not in page.text
        assert f"<title>{html.escape(page_spec.title, quote=False)} – dive scoring</title>" in page.text
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
            assert client.get(asset).status_code == 200, asset
    for url in ("/docs", "/redoc"):
        docs = client.get(url).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', docs)
        assert assets and all(a.startswith("/") for a in assets), assets  # nothing from a CDN
        for asset in assets:
            assert client.get(asset).status_code == 200, asset
    assert (DOCS_ASSETS_DIR / "swagger-ui-bundle.js").stat().st_size > 100_000
    assert "/" not in client.get("/openapi.json").json()["paths"]  # pages stay out of the API schema


def test_the_client_and_aqa_batch_carry_the_meet_fields(client: TestClient, tiny_dataset: Path,
                                                        tmp_path: Path) -> None:
    listing = tmp_path / "meet.csv"
    listing.write_text("video,difficulty,competition,event,diver,round\n"
                       f"{tiny_dataset / 'videos' / 'dive_00006.mp4'},2.4,Club cup,platform,Dee,3\n")
    [item] = list_inputs(listing)
    assert (item.competition, item.event, item.diver, item.round, item.difficulty) == \
        ("Club cup", "platform", "Dee", 3, 2.4)
    listing.write_text("video,round\ndive.mp4,third\n")
    with pytest.raises(BatchInputError, match="round 'third' is not a whole number"):
        list_inputs(listing)

    with ScoringClient("http://testserver", api_key=SCORE_KEY, transport=client._transport) as api:
        job = api.score(item.video, timeout=60, difficulty=item.difficulty, competition=item.competition,
                        event=item.event, diver=item.diver, round=item.round)
        assert (job.diver, job.round, job.status.value) == ("Dee", 3, "done")
        results = api.event_results(competition="Club cup", event="platform")
        assert [(s.rank, s.diver, s.total) for s in results.standings] == [(1, "Dee", round(job.result.score, 2))]
        assert EventRef(competition="Club cup", event="platform", dives=1) in api.events()
