"""Comparing model directories on one dataset: table, JSON and plot (tiny models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aqa.cli import main
from training.compare import COMPARISON_JSON, COMPARISON_MD, COMPARISON_PNG, compare_models
from training.pipeline import evaluate_model_dir


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compare-cache")


def test_comparison_has_one_row_per_model_with_the_evaluation_numbers(
    tiny_model_dir: Path, pcln_model_dir: Path, tiny_dataset: Path, cache_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "comparison"
    rows = compare_models([tiny_model_dir, pcln_model_dir], tiny_dataset, cache_dir, out, timed_videos=2,
                          progress=False)
    assert [(r.model, r.head) for r in rows] == [("model", "core"), ("pcln", "pcln")]
    for row, model in zip(rows, (tiny_model_dir, pcln_model_dir)):
        alone = evaluate_model_dir(model, tiny_dataset, cache_dir, progress=False)
        assert row.num_dives == alone.num_dives == 24
        assert row.final_spearman == pytest.approx(alone.final["spearman"])
        assert row.final_relative_l2_x100 == pytest.approx(alone.final["relative_l2_x100"])
        assert row.execution_spearman == pytest.approx(alone.execution["spearman"])
        assert row.execution_relative_l2_x100 == pytest.approx(alone.execution["relative_l2_x100"])
        assert row.seconds_per_video > 0 and row.timed_videos == 2
        assert (out / row.model / "evaluation.json").is_file()

    saved = json.loads((out / COMPARISON_JSON).read_text())
    assert [r["model"] for r in saved["rows"]] == ["model", "pcln"] and saved["use_difficulty"]
    table = (out / COMPARISON_MD).read_text().splitlines()
    body = [line for line in table if line.startswith("| ") and "Spearman" not in line]
    assert len(body) == 2 and body[1].startswith("| pcln | pcln | ")
    assert f"{rows[0].final_spearman:.4f}" in body[0]
    assert (out / COMPARISON_PNG).stat().st_size > 5000


def test_eval_command_compares_several_models(tiny_model_dir: Path, pcln_model_dir: Path, tiny_dataset: Path,
                                              cache_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    models = ["--model", str(tiny_model_dir), "--model", str(tiny_model_dir)]
    common = [str(tiny_dataset), *models, "--cache", str(cache_dir), "--timed-videos", "1"]
    assert main(["eval", *common]) == 1
    assert "needs --out" in capsys.readouterr().err

    out = tmp_path / "cli"
    assert main(["eval", *common, "--out", str(out), "--no-difficulty"]) == 0
    printed = capsys.readouterr().out
    assert "| model | core |" in printed and "| model-2 | core |" in printed and "estimated" in printed
    rows = json.loads((out / COMPARISON_JSON).read_text())["rows"]
    # the same model twice: the same metrics, two rows
    assert len(rows) == 2 and rows[0]["final_spearman"] == rows[1]["final_spearman"]
