"""The backbone's runtime chosen by measurement (``runtime.json``): recorded with the machine and versions,
reused while they match, measured again when they differ, and the same scores whichever runtime wins."""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from aqa.cli import main
from models.backbone_runtime import RUNTIME_RECORD, RuntimeRecord
from models.scorer import QueryLabels, Scorer


@pytest.fixture()
def model_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy, ignore=shutil.ignore_patterns(RUNTIME_RECORD + "*", "compiled"))
    return copy


def test_the_default_load_records_its_runtime_and_reuses_the_record(model_dir: Path) -> None:
    scorer = Scorer.from_dir(model_dir)  # the default: runtime "auto"
    record = RuntimeRecord.load(model_dir)
    assert record is not None and scorer.extractor.runtime == record.chosen == "torch"
    assert record.model.built == ["torch"] and set(record.not_built) == {"onnx", "compiled"}
    assert "aqa export onnx" in record.not_built["onnx"] and "aqa runtime" in record.not_built["compiled"]
    assert record.environment.cpu and record.environment.torch and record.environment.torch_threads >= 1
    assert record.timings["torch"].median_s > 0
    Scorer.from_dir(model_dir)
    assert RuntimeRecord.load(model_dir).measured_at == record.measured_at  # matched: not measured again


def test_a_record_from_another_machine_or_torch_is_measured_again(model_dir: Path) -> None:
    Scorer.from_dir(model_dir)
    path = model_dir / RUNTIME_RECORD
    data = json.loads(path.read_text())
    data["environment"]["torch"] = "1.0.0"
    data["chosen"] = "onnx"  # what that other machine found fastest; this one has no export
    data["measured_at"] = "2020-01-01T00:00:00+00:00"
    path.write_text(json.dumps(data))
    scorer = Scorer.from_dir(model_dir)
    record = RuntimeRecord.load(model_dir)
    assert record.measured_at != "2020-01-01T00:00:00+00:00" and record.environment.torch != "1.0.0"
    assert scorer.extractor.runtime == record.chosen == "torch"


@pytest.fixture(scope="module")
def built_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A copy of the tiny model after `aqa runtime` (ONNX export, AOTInductor package, timings), and its output."""
    copy = tmp_path_factory.mktemp("runtimes") / "model"
    shutil.copytree(tiny_model_dir, copy, ignore=shutil.ignore_patterns(RUNTIME_RECORD + "*", "compiled"))
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["runtime", str(copy)]) == 0
    return copy, out.getvalue()


def test_aqa_runtime_builds_every_runtime_times_them_and_the_winner_scores_the_same(
        built_model_dir: tuple[Path, str], tiny_dataset: Path) -> None:
    model_dir, printed = built_model_dir
    record = RuntimeRecord.load(model_dir)
    assert set(record.timings) == {"torch", "compiled", "onnx"} and not record.not_built
    assert f"chosen: {record.chosen}" in printed
    assert record.chosen == min(record.timings, key=lambda name: record.timings[name].median_s)
    assert all(timing.repeats == 5 and timing.max_rel_diff < 1e-4 for timing in record.timings.values())
    dive = tiny_dataset / "videos" / "dive_00003.mp4"
    labels = QueryLabels(difficulty=3.0)
    expected = Scorer.from_dir(model_dir, runtime="torch").score(dive, labels)
    for runtime in ("auto", "compiled", "onnx"):
        scorer = Scorer.from_dir(model_dir, runtime=runtime)
        assert scorer.extractor.runtime == (record.chosen if runtime == "auto" else runtime)
        result = scorer.score(dive, labels)
        assert [v.id for v in result.votes] == [v.id for v in expected.votes]
        assert result.score == pytest.approx(expected.score, abs=1e-4)


def test_a_compiled_runtime_that_was_never_built_is_a_clear_error(model_dir: Path) -> None:
    with pytest.raises(Exception, match="aqa runtime"):
        Scorer.from_dir(model_dir, runtime="compiled")
