"""The familiarity over a real `aqa serve` (uvicorn, embedded workers, the bundled demo model).

By default an unfamiliar video is scored and flagged; with AQA_REFUSE_UNFAMILIAR it is refused with 422
``out_of_distribution`` (or, when not waited for, its job fails with that code); `aqa batch` writes the
familiarity columns, and through a refusing server a failed row.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.batch import run_batch
from service.settings import ServiceSettings
from tests.service_processes import ServiceProcess, free_port, service_env, start_api, wait_until

pytestmark = pytest.mark.slow


def serve(tmp_path_factory: pytest.TempPathFactory, **settings: object) -> Iterator[tuple[ServiceProcess, str]]:
    data = tmp_path_factory.mktemp("familiarity-service")
    process, url = start_api(service_env(data_dir=data, port=free_port(), **settings), data / "api.log")
    try:
        yield process, url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def default_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for _, url in serve(tmp_path_factory):
        yield url


@pytest.fixture(scope="module")
def refusing_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for _, url in serve(tmp_path_factory, refuse_unfamiliar="true"):
        yield url


def upload(url: str, video: Path, wait: float = 120) -> httpx.Response:
    with video.open("rb") as handle:
        return httpx.post(f"{url}/v1/scores", params={"wait": wait} if wait else None,
                          files={"video": (video.name, handle, "video/mp4")}, data={"difficulty": "3.0"},
                          timeout=wait + 30)


def test_by_default_an_unfamiliar_video_is_scored_and_flagged(default_url: str, non_dive_clip: Path,
                                                              demo_style_dive: Path) -> None:
    response = upload(default_url, non_dive_clip)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "done"
    familiarity = job["result"]["familiarity"]
    assert familiarity["in_distribution"] is False and familiarity["percentile"] == 100.0
    assert familiarity["message"].startswith("this video is unlike the dives this model was trained on")
    assert familiarity["reasons"][0].startswith("feature far from the bank")
    assert job["result"]["interval"]["method"] == "unfamiliar"

    familiar = upload(default_url, demo_style_dive).json()["result"]
    assert familiar["familiarity"]["in_distribution"] is True and familiar["familiarity"]["message"] is None
    assert familiar["interval"]["method"] == "conformal"


def test_a_refusing_server_answers_422_out_of_distribution(refusing_url: str, non_dive_clip: Path,
                                                          demo_style_dive: Path) -> None:
    response = upload(refusing_url, non_dive_clip)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "out_of_distribution"
    assert "unlike the dives this model was trained on (feature far from the bank" in error["message"]

    # Not waited for: accepted, then the job fails with the same code and never carries a score.
    accepted = upload(refusing_url, non_dive_clip, wait=0)
    assert accepted.status_code == 202
    job_url = f"{refusing_url}{accepted.json()['status_url']}"
    job = wait_until(lambda: (j := httpx.get(job_url).json())["status"] in ("done", "failed") and j, 120,
                     "the refused job to finish")
    assert job["status"] == "failed" and job["error"]["code"] == "out_of_distribution" and job["result"] is None

    familiar = upload(refusing_url, demo_style_dive)
    assert familiar.status_code == 200 and familiar.json()["status"] == "done"


def test_batch_results_carry_the_familiarity(refusing_url: str, non_dive_clip: Path, demo_style_dive: Path,
                                             tmp_path: Path) -> None:
    folder = tmp_path / "meet"
    folder.mkdir()
    shutil.copy(demo_style_dive, folder / "dive.mp4")
    shutil.copy(non_dive_clip, folder / "pattern.mp4")

    embedded = run_batch(folder, tmp_path / "embedded.csv", settings=ServiceSettings(), progress=False)
    assert (embedded.done, embedded.failed) == (2, 0)
    rows = {r["source"]: r for r in csv.DictReader((tmp_path / "embedded.csv").open())}
    assert rows["dive.mp4"]["in_distribution"] == "True" and rows["dive.mp4"]["familiarity_reasons"] == ""
    assert rows["pattern.mp4"]["in_distribution"] == "False"
    assert float(rows["pattern.mp4"]["familiarity_percentile"]) == 100.0
    assert rows["pattern.mp4"]["familiarity_reasons"].startswith("feature far from the bank")
    assert rows["pattern.mp4"]["interval_method"] == "unfamiliar"

    remote = run_batch(folder, tmp_path / "remote.csv", url=refusing_url, progress=False)
    assert (remote.done, remote.failed, remote.errors) == (1, 1, 0)
    rows = {r["source"]: r for r in csv.DictReader((tmp_path / "remote.csv").open())}
    assert rows["dive.mp4"]["status"] == "done" and rows["dive.mp4"]["in_distribution"] == "True"
    assert rows["pattern.mp4"]["status"] == "failed" and rows["pattern.mp4"]["error_code"] == "out_of_distribution"
