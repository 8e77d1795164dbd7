"""A meet in a real browser: 10 dives by 3 divers started from an allowed server-side archive on the meet
page, followed live, then each diver's total and rank as a competition table shows them, sortable, as CSV."""

from __future__ import annotations

import csv
import io
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.browser import READ_KEY, SCORE_KEY, OfflinePage, Server

pytestmark = pytest.mark.slow

COMPETITION, EVENT = "Nationals 2026", "Women's 3m final"


@pytest.fixture(scope="module")
def meet_folder(tiny_dataset: Path, archive_root: Path) -> Path:
    """Ana dives 4 rounds; Bea and Cai 3 each, Cai on copies of Bea's videos, so their totals tie."""
    labels = {row["video"]: row for row in csv.DictReader((tiny_dataset / "labels.csv").open())}
    videos = sorted(labels)
    folder = archive_root / "nationals-3m-final"
    folder.mkdir()
    rows = []
    plan = [("Ana", r, videos[r - 1]) for r in (1, 2, 3, 4)] + [("Bea", r, videos[3 + r]) for r in (1, 2, 3)] \
        + [("Cai", r, videos[3 + r]) for r in (1, 2, 3)]
    for diver, dive_round, video in plan:
        name = f"{diver.lower()}-round{dive_round}.mp4"
        shutil.copy(tiny_dataset / video, folder / name)
        rows.append({"video": name, "diver": diver, "round": dive_round, "difficulty": labels[video]["difficulty"],
                     "action_class": labels[video]["action_class"]})
    with (folder / "labels.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def competition_table(scores: dict[str, list[float]]) -> list[tuple[int, str, str]]:
    """(rank, diver, total) as results are published: totals to 2 decimals, ties share a rank (1, 2, 2, 4)."""
    totals = sorted(((round(sum(s), 2), diver) for diver, s in scores.items()), key=lambda t: (-t[0], t[1]))
    table = []
    for position, (total, diver) in enumerate(totals, start=1):
        rank = table[-1][0] if table and f"{total:.2f}" == table[-1][2] else position
        table.append((rank, diver, f"{total:.2f}"))
    return table


def test_a_meet_of_10_dives_by_3_divers_shows_totals_and_ranks_live(
        offline_page: OfflinePage, demo_server: Server, meet_folder: Path, screenshots: Path, tmp_path: Path) -> None:
    page = offline_page.page
    page.goto(f"{demo_server.url}/meet")
    offline_page.enter_key(SCORE_KEY)
    page.wait_for_selector("#key-panel", state="hidden")
    page.fill("#competition", COMPETITION)
    page.fill("#event", EVENT)
    page.click("#archive-details summary")
    page.fill("#archive-folder", str(meet_folder))
    page.fill("#archive-labels", "labels.csv")
    page.click("#archive-start")

    # live: the table and its progress bar move while the batch runs, without a reload
    page.wait_for_selector("#results-card:not([hidden])")
    assert page.inner_text("#meet-message") == f"Scoring 10 videos from {meet_folder}."
    seen, live_shown = [], False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = page.evaluate("() => [Number(document.getElementById('event-progress').value), "
                              "document.getElementById('results-card').dataset.finished, "
                              "document.querySelectorAll('#dives tbody tr').length]")
        seen.append(tuple(state))
        if state[1] == "true":
            break
        if 0 < state[0] < 1 and not live_shown:
            page.screenshot(path=screenshots / "meet-live.png", full_page=True)
            live_shown = True
        time.sleep(0.2)
    assert seen[-1] == (1.0, "true", 10), seen[-1]
    assert any(progress < 1 and finished == "false" and rows == 10 for progress, finished, rows in seen), seen
    assert len({progress for progress, _, _ in seen}) >= 3  # the bar moved through intermediate values
    assert page.url.endswith("/meet?competition=Nationals+2026&event=Women%27s+3m+final")

    # the totals and ranks, from each job's own score in the API
    results = httpx.get(f"{demo_server.url}/v1/events/results", params={"competition": COMPETITION, "event": EVENT},
                        headers={"X-API-Key": READ_KEY}).json()
    diver_of = {row["video"]: row["diver"] for row in csv.DictReader((meet_folder / "labels.csv").open())}
    scores: dict[str, list[float]] = {}
    for dive in results["dives"]:
        job = httpx.get(f"{demo_server.url}/v1/jobs/{dive['job_id']}", headers={"X-API-Key": READ_KEY}).json()
        assert job["status"] == "done" and job["competition"] == COMPETITION and job["event"] == EVENT
        scores.setdefault(diver_of[job["source_name"]], []).append(job["result"]["score"])
    expected = competition_table(scores)
    assert {diver: len(s) for diver, s in scores.items()} == {"Ana": 4, "Bea": 3, "Cai": 3}
    assert sum(scores["Bea"]) == sum(scores["Cai"])  # the same videos: a tie the table must show
    shown = [tuple(cell.strip() for cell in row.split("\t")[:3])
             for row in page.locator("#standings tbody tr").all_inner_texts()]
    assert shown == [(str(rank), diver, total) for rank, diver, total in expected]
    tied = [rank for rank, diver, _ in expected if diver in ("Bea", "Cai")]
    assert tied[0] == tied[1]
    page.screenshot(path=screenshots / "meet.png", full_page=True)

    # sortable: by total, lowest first, then highest first
    page.click("#standings th[data-key='total']")
    ascending = page.locator("#standings tbody td.total").all_inner_texts()
    assert ascending == sorted(ascending, key=float) and \
        page.get_attribute("#standings th[data-key='total']", "aria-sort") == "ascending"
    page.click("#standings th[data-key='total']")
    assert page.locator("#standings tbody td.total").all_inner_texts() == sorted(ascending, key=float, reverse=True)
    page.click("#dives th[data-key='score']")
    dive_scores = [float(s) for s in page.locator("#dives tbody td.score").all_inner_texts()]
    assert dive_scores == sorted(dive_scores) and len(dive_scores) == 10

    # the CSV download: one row per dive with its diver's total and rank
    with page.expect_download() as download:
        page.click("#download-csv")
    assert download.value.suggested_filename == "Nationals_2026-Women_s_3m_final.csv"
    saved = tmp_path / "meet.csv"
    download.value.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert len(rows) == 10
    ranks = {diver: (str(rank), total) for rank, diver, total in expected}
    assert all((row["diver_rank"], row["diver_total"]) == ranks[row["diver"]] for row in rows)

    # the event is offered on the next visit
    page.goto(f"{demo_server.url}/meet")
    page.wait_for_function("() => document.querySelectorAll('#known-events option').length > 1")
    options = page.locator("#known-events option").all_inner_texts()
    assert f"{COMPETITION} – {EVENT} (10 dives)" in options
