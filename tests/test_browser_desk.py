"""The judges' desk in a real browser (Debian's chromium, Playwright) against real `aqa serve` processes, offline.

/docs and /redoc render every operation with no network; a dive dropped on the desk is uploaded (the
progress bar moves), followed and shown with the API's own score; a TPT part and an alignment column
seek the video; a wrong key, a read-only key, a text file and a slow job each say what happened in words;
the model page shows the card and its report. Screenshots go to ``--screenshots DIR`` (or pytest's tmp).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page

from tests.browser import READ_KEY, SCORE_KEY, OfflinePage, Server, drop_file, start_server

pytestmark = pytest.mark.slow

UPLOAD_BYTES_PER_SECOND = 15_000  # a throttled network, so the upload's progress is seen between 0 and 100%
SLOW_JOB_SECONDS = 12  # the desk calls a job slow after 10 s


@pytest.fixture(scope="module")
def slow_server(desk_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("slow-server"), model_dir=desk_model_dir,
                            test_task_delay_seconds=SLOW_JOB_SECONDS)


def synthetic_dive(folder: Path, seed: int, **size: int) -> Path:
    from training.synth.generate import generate_dataset

    generate_dataset(folder, n=1, seed=seed, progress=False, **size)
    return next((folder / "videos").glob("*.mp4"))


@pytest.fixture(scope="module")
def demo_dive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic dive at the renderer's default size."""
    return synthetic_dive(tmp_path_factory.mktemp("demo-dive"), seed=42)


@pytest.fixture(scope="module")
def large_dive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 640 x 480 dive (about 50 kB): its upload over a throttled network takes a few seconds."""
    return synthetic_dive(tmp_path_factory.mktemp("large-dive"), seed=5, width=640, height=480)


def api_job(server: Server, job_id: str) -> dict:
    response = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers={"X-API-Key": READ_KEY}, timeout=10)
    response.raise_for_status()
    return response.json()


def open_desk(offline: OfflinePage, server: Server, key: str = SCORE_KEY) -> Page:
    page = offline.page
    page.goto(f"{server.url}/")
    offline.enter_key(key)
    page.wait_for_selector("#key-panel", state="hidden")
    return page


def wait_for_result(page: Page, timeout: float = 90) -> str:
    page.wait_for_selector("#result-card:not([hidden])", timeout=timeout * 1000)
    return page.get_attribute("#result-card", "data-job-id")


def test_the_api_docs_render_every_operation_offline(offline_page: OfflinePage, demo_server: Server,
                                                     screenshots: Path) -> None:
    page = offline_page.page
    operations = sum(len(methods) for methods in httpx.get(f"{demo_server.url}/openapi.json").json()["paths"].values())
    page.goto(f"{demo_server.url}/docs")
    page.locator(".opblock").nth(operations - 1).wait_for(timeout=30_000)
    assert page.locator(".opblock").count() == operations and page.locator(".opblock-summary-path").first.is_visible()
    page.screenshot(path=screenshots / "docs.png")
    page.goto(f"{demo_server.url}/redoc")
    page.locator("[data-section-id^='operation/']").nth(operations - 1).wait_for(state="attached", timeout=30_000)
    assert "POST" in page.inner_text("body").upper()
    assert offline_page.blocked == []  # nothing was even tried from a CDN


def test_the_desk_asks_for_a_key_and_says_when_one_is_wrong_or_may_only_read(
        offline_page: OfflinePage, tpt_server: Server, tiny_dataset: Path) -> None:
    page = offline_page.page
    page.goto(f"{tpt_server.url}/")
    page.wait_for_selector("#key-panel:not([hidden])")
    assert page.inner_text("#key-message") == "This server needs an API key. Enter the key your operator gave you."
    offline_page.enter_key("not-a-key")
    page.wait_for_function("() => document.getElementById('key-message').textContent.includes('not valid')")
    assert page.inner_text("#key-message") == "This API key is not valid on this server. Check it and enter it again."
    assert page.evaluate("sessionStorage.getItem('aqa.apiKey')") is None

    offline_page.enter_key(READ_KEY)
    page.wait_for_selector("#key-panel", state="hidden")
    assert page.evaluate("sessionStorage.getItem('aqa.apiKey')") == READ_KEY
    page.reload()  # kept for the session
    page.wait_for_selector("#key-status button")
    assert page.is_hidden("#key-panel")
    page.set_input_files("#video-file", str(tiny_dataset / "videos" / "dive_00001.mp4"))
    page.click("#submit")
    page.wait_for_selector("#form-message:not([hidden])")
    assert page.inner_text("#form-message") == (
        "This API key may only read results: scoring a dive needs a key with the 'score' role.")

    page.click("#key-status button")  # forget the key: asked again
    page.wait_for_selector("#key-panel:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('aqa.apiKey')") is None


def test_a_dropped_dive_is_uploaded_followed_and_shown_with_the_apis_score(
        offline_page: OfflinePage, tpt_server: Server, large_dive: Path, screenshots: Path) -> None:
    page = open_desk(offline_page, tpt_server)
    video = large_dive
    drop_file(page, "#drop-zone", video)
    assert page.inner_text("#file-name") == f"{video.name} ({video.stat().st_size / 1e3:.0f} kB)"
    page.fill("#difficulty", "2.8")
    page.fill("#action-class", "107b")
    page.evaluate("""() => {
        window.uploadProgress = [];
        new MutationObserver(() => window.uploadProgress.push(Number(document.getElementById('upload-bar').value)))
            .observe(document.getElementById('upload-bar'), { attributes: true });
    }""")
    network = page.context.new_cdp_session(page)
    network.send("Network.enable")
    network.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                       "uploadThroughput": UPLOAD_BYTES_PER_SECOND})
    page.click("#submit")
    job_id = wait_for_result(page)
    network.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                       "uploadThroughput": -1})
    progress = page.evaluate("window.uploadProgress")
    assert progress[-1] == 100 and any(0 < value < 100 for value in progress), progress
    assert page.get_attribute("#job-card", "data-job-id") == job_id
    assert page.locator("#job-steps li.reached").count() == 4

    job = api_job(tpt_server, job_id)
    result = job["result"]
    assert job["status"] == "done" and job["source_name"] == video.name and job["action_class"] == "107B"
    assert page.inner_text("#score") == f"{result['score']:.2f}"
    assert page.inner_text("#interval-values") == f"{result['interval']['low']:.2f} – {result['interval']['high']:.2f}"
    assert "2.8 (given with the upload)" in page.inner_text("#facts")
    assert page.is_hidden("#familiarity-warning")

    votes = page.locator("#votes-table tbody tr")
    assert votes.count() == len(result["votes"]) == page.locator("#vote-chart circle").count()
    first = result["votes"][0]
    assert votes.nth(0).locator("td").nth(0).inner_text() == first["id"]
    assert votes.nth(0).locator("td.vote-value").inner_text() == f"{first['vote'] * result['difficulty']:.2f}"

    # the video is the uploaded file; TPT's parts are spans on its timeline, and a click seeks there
    page.wait_for_function("() => document.getElementById('video').readyState >= 2")
    page.screenshot(path=screenshots / "desk-tpt-result.png", full_page=True)
    parts = result["evidence"]["parts"]
    spans = page.locator(".part-span")
    assert spans.count() == len(parts) > 1
    target = max(parts, key=lambda p: p["span_seconds"][0])
    span = page.locator(f".part-span[data-part='{target['part']}']")
    span.click()
    page.wait_for_function(f"() => Math.abs(document.getElementById('video').currentTime - {target['span_seconds'][0]}) < 0.01")
    assert target["span_seconds"][0] > 0

    # the alignment with the closest exemplar: a column per clip of the dive, a click seeks to that clip
    alignment = result["evidence"]["alignment"]
    assert page.is_visible("#alignment-block") and alignment["exemplar_id"] in page.inner_text("#alignment-text")
    columns = page.locator("#alignment-chart rect[data-clip]")
    assert columns.count() == len(alignment["query_clip_seconds"])
    columns.nth(columns.count() - 1).click()
    last_clip_start = alignment["query_clip_seconds"][-1][0]
    page.wait_for_function(f"() => Math.abs(document.getElementById('video').currentTime - {last_clip_start}) < 0.01")



def test_a_video_unlike_the_training_dives_shows_the_familiarity_warning(
        offline_page: OfflinePage, demo_server: Server, tiny_dataset: Path, screenshots: Path) -> None:
    """A real job of the demo model on a video unlike its training dives (160 x 120, where it saw 320 x 240):
    the page shows the API's own familiarity verdict, message and reasons."""
    page = open_desk(offline_page, demo_server)
    page.set_input_files("#video-file", str(tiny_dataset / "videos" / "dive_00004.mp4"))
    page.click("#submit")
    job_id = wait_for_result(page)
    familiarity = api_job(demo_server, job_id)["result"]["familiarity"]
    assert familiarity["in_distribution"] is False
    warning = page.locator("#familiarity-warning")
    assert warning.is_visible()
    assert page.inner_text("#familiarity-message") == familiarity["message"]
    assert all(reason in warning.inner_text() for reason in familiarity["reasons"])
    page.screenshot(path=screenshots / "desk-familiarity-warning.png")


def test_a_text_file_is_refused_in_words(offline_page: OfflinePage, tpt_server: Server, tmp_path: Path) -> None:
    notes = tmp_path / "dive.mp4"
    notes.write_text("Round 3, 107B, entry a little short.\n" * 20)
    expected = httpx.post(f"{tpt_server.url}/v1/scores", headers={"X-API-Key": SCORE_KEY},
                          files={"video": (notes.name, notes.read_bytes(), "video/mp4")}).json()["error"]["message"]
    page = open_desk(offline_page, tpt_server)
    drop_file(page, "#drop-zone", notes)
    page.click("#submit")
    page.wait_for_selector("#form-message:not([hidden])")
    message = page.inner_text("#form-message")
    assert message == expected and "{" not in message and "not a video" in message.lower()
    assert page.is_hidden("#job-card")

    page.fill("#difficulty", "5.5")  # checked on the page before anything is sent
    page.click("#submit")
    assert page.inner_text("#form-message") == "The difficulty must be a number above 0 and at most 5 (for example 3.2)."


def test_a_slow_job_says_so_and_then_shows_its_result(offline_page: OfflinePage, slow_server: Server,
                                                      tiny_dataset: Path, screenshots: Path) -> None:
    page = open_desk(offline_page, slow_server)
    page.set_input_files("#video-file", str(tiny_dataset / "videos" / "dive_00002.mp4"))
    page.click("#submit")
    page.wait_for_selector("#job-message[data-slow]", timeout=30_000)
    message = page.inner_text("#job-message")
    assert message.startswith("Still scoring after 1") and "Keep this page open: the result will appear here." in message
    assert page.locator("#job-steps li.reached").count() == 3  # uploaded, queued, running
    page.screenshot(path=screenshots / "desk-slow-job.png")
    job_id = wait_for_result(page, timeout=SLOW_JOB_SECONDS + 60)
    assert page.is_hidden("#job-message")
    assert page.inner_text("#score") == f"{api_job(slow_server, job_id)['result']['score']:.2f}"


def test_the_demo_model_scores_a_dive_and_its_card_shows_the_report(offline_page: OfflinePage, demo_server: Server,
                                                                    demo_dive: Path, screenshots: Path) -> None:
    page = open_desk(offline_page, demo_server)
    drop_file(page, "#drop-zone", demo_dive)
    page.fill("#difficulty", "3.2")
    page.fill("#action-class", "107B")
    page.click("#submit")
    job_id = wait_for_result(page)
    result = api_job(demo_server, job_id)["result"]
    assert page.inner_text("#score") == f"{result['score']:.2f}"
    assert page.is_hidden("#alignment-block") and page.locator(".part-span").count() == 0  # a CoRe model
    page.wait_for_function("() => document.getElementById('video').readyState >= 2")
    page.screenshot(path=screenshots / "desk-demo-result.png", full_page=True)

    page.goto(f"{demo_server.url}/model")
    page.wait_for_selector("#card:not([hidden])")
    card = httpx.get(f"{demo_server.url}/v1/model-card", headers={"X-API-Key": READ_KEY}).json()
    assert page.inner_text("#model-title") == f"{card['model_id']} {card['version']}"
    rows = page.locator("#metrics tbody tr")
    assert rows.count() == len(card["evaluations"])
    test_split = card["evaluations"]["test split"]
    assert f"{test_split['final']['spearman']:.3f}" in rows.nth(0).inner_text()
    assert "served now" in page.inner_text("#model-live")
    assert page.locator("#model-limits li").count() == len(card["limits"])
    page.wait_for_selector("#report-block:not([hidden])")
    report = page.frame_locator("#report")
    assert report.locator("img").count() >= 4
    assert "Interval coverage" in report.locator("body").inner_text()
    page.screenshot(path=screenshots / "model-card.png", full_page=True)
