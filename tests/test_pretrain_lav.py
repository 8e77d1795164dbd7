"""LAV pretraining on unlabelled videos, and models trained from its backbone (tiny profile)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aqa.cli import main
from models.i3d import I3D
from models.model_dir import BACKBONE_WEIGHTS, ModelConfig, ModelDirError
from models.scorer import QueryLabels, Scorer
from training.datasets.folder_csv import load_folder_csv
from training.pipeline import train_model
from training.pretrain_lav import (
    PRETRAIN_REPORT,
    LAVPretrainConfig,
    find_videos,
    load_backbone_init,
    pretrain_lav,
)
from training.profiles import PROFILES

# Small embedder, 6 clips per video (the tiny profile's 16 frames allow 9 starts), sigma in those 16 frames.
TEST_CONFIG = LAVPretrainConfig(epochs=3, pairs_per_step=4, steps_per_video=6, sigma=2.0, hidden=32,
                                embedding_dim=16, lr=3e-3)


@pytest.fixture(scope="module")
def lav_dir(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lav")
    pretrain_lav(tiny_dataset, out, PROFILES["tiny"], TEST_CONFIG, progress=False)
    return out


@pytest.fixture(scope="module")
def lav_model_dir(tiny_dataset: Path, lav_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lav-model") / "model"
    train_model(tiny_dataset, out, PROFILES["tiny"], cache_dir=tmp_path_factory.mktemp("lav-cache"), progress=False,
                init_backbone=lav_dir)
    return out


def test_videos_are_found_and_classes_read_but_not_scores(tiny_dataset: Path) -> None:
    videos = find_videos(tiny_dataset)
    records = load_folder_csv(tiny_dataset / "labels.csv")
    assert [v.path.name for v in videos] == sorted(r.video.name for r in records)
    classes = {r.video.name: r.action_class for r in records}
    assert all(v.action_class == classes[v.path.name] for v in videos)


def test_pretraining_loss_decreases_and_is_reported(lav_dir: Path) -> None:
    report = json.loads((lav_dir / PRETRAIN_REPORT).read_text())
    assert report["method"] == "lav" and report["num_videos"] == 24 and report["pairs_within_action_class"]
    epochs = [h["loss_total"] for h in report["history"]]
    steps = report["step_losses"]
    assert len(epochs) == 3 and len(steps) == 3 * 6  # 24 anchors, 4 pairs per step
    assert epochs[-1] < epochs[0]
    assert np.mean(steps[-4:]) < np.mean(steps[:4])
    assert report["config"]["gamma"] == 0.1 and report["config"]["alpha"] == 0.5 and report["config"]["margin"] == 2.0


def test_pretrained_backbone_loads_strictly_as_initialisation(lav_dir: Path) -> None:
    backbone = I3D(width=PROFILES["tiny"].backbone_width)
    report = load_backbone_init(backbone, lav_dir)
    assert report is not None and report["method"] == "lav"
    saved = load_file(str(lav_dir / BACKBONE_WEIGHTS))
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    # the backbone was trained: its first convolution moved away from the seeded initialisation
    torch.manual_seed(0)
    fresh = I3D(width=PROFILES["tiny"].backbone_width)
    assert not torch.allclose(fresh.Conv3d_1a_7x7.conv3d.weight, saved["Conv3d_1a_7x7.conv3d.weight"])
    with pytest.raises(ModelDirError, match="does not fit"):
        load_backbone_init(I3D(width=0.25), lav_dir)


def test_model_trained_from_lav_differs_and_shows_the_alignment(lav_model_dir: Path, lav_dir: Path,
                                                               tiny_model_dir: Path, tiny_dataset: Path) -> None:
    ours = load_file(str(lav_model_dir / BACKBONE_WEIGHTS))
    lav = load_file(str(lav_dir / BACKBONE_WEIGHTS))
    plain = load_file(str(tiny_model_dir / BACKBONE_WEIGHTS))
    key = "Conv3d_1a_7x7.conv3d.weight"  # BatchNorm re-estimation leaves convolutions alone
    torch.testing.assert_close(ours[key], lav[key])
    assert not torch.allclose(ours[key], plain[key])
    card = json.loads((lav_model_dir / "model_card.json").read_text())
    assert card["training"]["backbone_init"]["pretraining"]["method"] == "lav"

    def predictions(model: Path) -> dict[str, float]:
        rows = json.loads((model / "report" / "evaluation.json").read_text())["predictions"]
        return {r["key"]: r["pred_final"] for r in rows}
    with_lav, without = predictions(lav_model_dir), predictions(tiny_model_dir)
    assert with_lav.keys() == without.keys() and with_lav != without

    assert ModelConfig.load(lav_model_dir).alignment_evidence
    assert not ModelConfig.load(tiny_model_dir).alignment_evidence
    scorer = Scorer.from_dir(lav_model_dir)
    record = load_folder_csv(tiny_dataset / "labels.csv")[0]
    result = scorer.score(record.video, QueryLabels(difficulty=record.difficulty), exclude_ids=frozenset({record.key}))
    alignment = result.evidence["alignment"]
    clips = scorer.config.clip_protocol.num_clips
    assert alignment["exemplar_id"] in {v.id for v in result.votes}
    path = alignment["path"]
    assert path[0] == [0, 0] and path[-1] == [clips - 1, clips - 1]
    assert all((i1 - i0, j1 - j0) in {(1, 0), (0, 1), (1, 1)} for (i0, j0), (i1, j1) in itertools.pairwise(path))
    assert len(alignment["query_clip_seconds"]) == clips and alignment["mean_cost"] >= 0


def test_cli_pretrains_on_a_folder_and_skips_unreadable_files(tiny_dataset: Path, tmp_path: Path) -> None:
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for name in ("dive_00000.mp4", "dive_00001.mp4"):
        shutil.copy(tiny_dataset / "videos" / name, folder / name)
    (folder / "notes.mp4").write_text("not a video")
    (folder / "readme.txt").write_text("ignored")
    out = tmp_path / "lav"
    assert main(["pretrain", "lav", str(folder), "--out", str(out), "--profile", "tiny", "--epochs", "1"]) == 0
    report = json.loads((out / PRETRAIN_REPORT).read_text())
    assert report["num_videos"] == 2 and not report["pairs_within_action_class"]
    assert [Path(s["video"]).name for s in report["skipped"]] == ["notes.mp4"]
    assert (out / BACKBONE_WEIGHTS).is_file()
