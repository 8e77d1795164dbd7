"""``aqa batch`` embedded (no --url): results CSV, per-item errors, resuming. (--url: test_service_e2e.py.)"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from aqa.cli import main
from models.scorer import QueryLabels, Scorer
from service.batch import list_inputs, run_batch
from service.settings import ServiceSettings


@pytest.fixture
def folder(tiny_dataset: Path, tmp_path: Path) -> Path:
    """Three dives (one in a sub-folder) and a file that only looks like a video."""
    folder = tmp_path / "meet"
    (folder / "semi").mkdir(parents=True)
    shutil.copy(tiny_dataset / "videos" / "dive_00012.mp4", folder / "a.mp4")
    shutil.copy(tiny_dataset / "videos" / "dive_00013.mp4", folder / "b.mp4")
    shutil.copy(tiny_dataset / "videos" / "dive_00014.mp4", folder / "semi" / "c.mp4")
    (folder / "d.mp4").write_text("judging sheet\n")
    (folder / "notes.txt").write_text("not listed: not a video suffix\n")
    return folder


def read(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(out.open()))


def test_a_folder_is_scored_with_per_item_errors(folder: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    settings = ServiceSettings(model_dir=tiny_model_dir)
    summary = run_batch(folder, out, settings=settings, progress=False)
    assert (summary.total, summary.done, summary.failed, summary.errors, summary.skipped) == (4, 3, 1, 0, 0)
    rows = read(out)
    assert [r["source"] for r in rows] == ["a.mp4", "b.mp4", "d.mp4", "semi/c.mp4"]
    expected = Scorer.from_dir(tiny_model_dir).score(folder / "a.mp4", QueryLabels())
    assert float(rows[0]["score"]) == pytest.approx(expected.score, abs=1e-3)
    assert rows[0]["model_id"] == expected.model.id and rows[0]["status"] == "done"
    assert rows[2]["status"] == "failed" and rows[2]["error_code"] == "not_a_video"
    assert rows[2]["error_message"] == "The file is plain text, not a video."


def test_a_rerun_skips_finished_items_and_retries_transient_errors(folder: Path, tiny_model_dir: Path,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    settings = ServiceSettings(model_dir=tiny_model_dir)
    run_batch(folder, out, settings=settings, progress=False)
    rows = read(out)
    rows[1].update(status="error", score="", error_code="unreachable", error_message="connection refused")
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = run_batch(folder, out, settings=settings, progress=False)
    assert (summary.skipped, summary.done, summary.failed) == (3, 1, 0)
    again = read(out)
    assert [r["status"] for r in again] == ["done", "done", "failed", "done"]
    assert again[0] == rows[0]  # a finished item's row is kept as it was


def test_a_csv_lists_videos_with_their_difficulty(tiny_dataset: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    inputs = list_inputs(tiny_dataset / "labels.csv")
    assert len(inputs) == 24 and inputs[0].difficulty is not None and inputs[0].video.is_file()
    subset = tmp_path / "two.csv"
    subset.write_text("video,difficulty,action_class\n"
                      f"{inputs[0].video},{inputs[0].difficulty},{inputs[0].action_class}\n"
                      f"{tmp_path / 'missing.mp4'},3.0,\n")
    out = tmp_path / "out.csv"
    assert main(["batch", str(subset), "--out", str(out), "--model", str(tiny_model_dir), "--no-progress"]) == 0
    rows = read(out)
    assert rows[0]["status"] == "done" and float(rows[0]["difficulty"]) == inputs[0].difficulty
    assert rows[1]["status"] == "failed" and rows[1]["error_code"] == "file_not_found"


def test_an_unreadable_source_is_a_one_line_cli_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["batch", str(tmp_path / "nothing"), "--out", str(tmp_path / "o.csv")]) == 1
    assert "is neither a folder nor a CSV file" in capsys.readouterr().err
