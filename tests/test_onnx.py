"""ONNX export of the backbone: parity with torch, stale-file refusal, and scoring through onnxruntime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from aqa.cli import main
from models.feature_extractor import FeatureExtractor
from models.model_dir import BACKBONE_WEIGHTS
from models.onnx_backbone import ONNX_FILE, ONNX_RECORD, OnnxBackboneError, OnnxExportRecord
from models.scorer import QueryLabels, Scorer, ScoreRequest
from training.export_onnx import OnnxExportError, export_onnx


@pytest.fixture(scope="module")
def exported_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny model with its backbone exported by ``aqa export onnx``."""
    model_dir = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    assert main(["export", "onnx", str(model_dir)]) == 0
    return model_dir


def test_the_export_records_its_opset_shape_weights_and_parity(exported_model_dir: Path) -> None:
    record = OnnxExportRecord.load(exported_model_dir)
    config = json.loads((exported_model_dir / "config.json").read_text())
    crop = config["preprocessing"]["crop"]
    assert record.opset == 18 and record.input_shape[0] == "batch"
    assert record.input_shape[1:] == (3, config["clips"]["length"], crop, crop)
    assert record.validation.passed and record.validation.batch == 3
    assert record.validation.max_abs_diff <= record.validation.allowed_diff


def test_onnxruntime_features_equal_torch_features_for_a_decoded_dive(exported_model_dir: Path,
                                                                      tiny_dataset: Path) -> None:
    torch_scorer = Scorer.from_dir(exported_model_dir, runtime="torch")
    onnx_scorer = Scorer.from_dir(exported_model_dir, runtime="onnx", onnx_threads=1)
    assert onnx_scorer.extractor.runtime == "onnx"
    assert onnx_scorer.extractor.fingerprint == torch_scorer.extractor.fingerprint
    dive = tiny_dataset / "videos" / "dive_00002.mp4"
    labels = QueryLabels(difficulty=2.8)
    expected, actual = torch_scorer.score(dive, labels), onnx_scorer.score(dive, labels)
    assert [v.id for v in actual.votes] == [v.id for v in expected.votes]
    assert actual.score == pytest.approx(expected.score, abs=1e-3)
    assert actual.vote_spread == pytest.approx(expected.vote_spread, abs=1e-3)


def test_a_batch_size_other_than_the_traced_one_runs(exported_model_dir: Path) -> None:
    extractor = FeatureExtractor.from_model_dir(exported_model_dir, runtime="onnx", onnx_threads=1)
    reference = FeatureExtractor.from_model_dir(exported_model_dir)
    shape = extractor.engine.clip_shape
    clips = torch.rand((5, *shape), generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected = reference.backbone.forward_features(clips)
    torch.testing.assert_close(extractor.engine.forward_features(clips), expected, atol=1e-3, rtol=1e-4)
    with pytest.raises(ValueError, match="takes \\(N, \\*"):
        extractor.engine.forward_features(torch.zeros((1, 3, 2, 8, 8)))


def test_an_export_from_older_weights_is_refused(exported_model_dir: Path, tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    shutil.copytree(exported_model_dir, stale)
    weights = load_file(str(stale / BACKBONE_WEIGHTS))
    first = next(iter(weights))
    weights[first] = weights[first] + 0.01
    save_file(weights, str(stale / BACKBONE_WEIGHTS))
    with pytest.raises(OnnxBackboneError, match="is stale: .*aqa export onnx"):
        Scorer.from_dir(stale, runtime="onnx")


def test_a_missing_or_replaced_onnx_file_is_refused(exported_model_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    shutil.copytree(exported_model_dir, missing)
    (missing / ONNX_RECORD).unlink()
    with pytest.raises(OnnxBackboneError, match="has no ONNX export"):
        FeatureExtractor.from_model_dir(missing, runtime="onnx")
    replaced = tmp_path / "replaced"
    shutil.copytree(exported_model_dir, replaced)
    with open(replaced / ONNX_FILE, "ab") as f:
        f.write(b"\0")
    with pytest.raises(OnnxBackboneError, match="is not the file"):
        FeatureExtractor.from_model_dir(replaced, runtime="onnx")


def test_an_unsupported_opset_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    with pytest.raises(OnnxExportError, match="opset 11 is not supported"):
        export_onnx(model_dir, opset=11)
    assert not (model_dir / ONNX_FILE).exists()


def test_sharing_cores_runs_the_eager_form(exported_model_dir: Path, tiny_dataset: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime keeps its own pool (as an AOTInductor package keeps its OpenMP thread count): while a stream's
    decodes hold cores the I3D's eager form runs instead, with torch's features; alone, the chosen runtime."""
    extractor = FeatureExtractor.from_model_dir(exported_model_dir, runtime="onnx")
    reference = FeatureExtractor.from_model_dir(exported_model_dir, runtime="torch")
    assert extractor.can_share_cores
    scorer = Scorer.from_dir(exported_model_dir, runtime="onnx")
    videos = sorted((tiny_dataset / "videos").glob("*.mp4"))[:3]
    frames = np.stack([scorer.decode(video).decoded.frames for video in videos])
    onnx_calls: list[int] = []
    run_onnx = extractor.engine.extract_clip_features
    monkeypatch.setattr(extractor.engine, "extract_clip_features",
                        lambda *args, **kwargs: onnx_calls.append(1) or run_onnx(*args, **kwargs))
    shared = extractor.from_frames(frames, sharing_cores=True)
    assert onnx_calls == []
    np.testing.assert_allclose(shared.numpy(), reference.from_frames(frames).numpy(), rtol=0, atol=1e-5)
    alone = extractor.from_frames(frames)
    assert onnx_calls == [1]
    np.testing.assert_allclose(alone.numpy(), shared.numpy(), rtol=0, atol=1e-3)


def test_a_pipelined_stream_with_onnx_serving_scores_as_each_video_alone(exported_model_dir: Path,
                                                                         tiny_dataset: Path) -> None:
    scorer = Scorer.from_dir(exported_model_dir, runtime="onnx")
    requests = [ScoreRequest(video, QueryLabels(difficulty=2.8))
                for video in sorted((tiny_dataset / "videos").glob("*.mp4"))[:8]]
    for request, outcome in scorer.score_stream(requests, max_batch=2):
        assert outcome.score == pytest.approx(scorer.score(request.path, request.labels).score, abs=1e-3)
