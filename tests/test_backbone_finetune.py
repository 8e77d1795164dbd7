"""End-to-end backbone fine-tuning (the demo model's path) on the tiny profile, and its frame cache."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models.i3d import I3D
from models.scorer import Scorer
from training.backbone import resample_frames, train_backbone
from training.datasets.folder_csv import load_folder_csv
from training.feature_cache import decode_record
from training.frame_cache import cached_frames, oversampled
from training.pipeline import label_config, train_model
from training.profiles import PROFILES
from video.decode import decode_video
from video.preprocessing import Preprocessing
from video.sampling import uniform_frame_indices

PROFILE = PROFILES["tiny-finetune"]


@pytest.fixture(scope="module")
def finetuned(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model directory, cache directory) of a 2-epoch fine-tuning on the tiny dataset."""
    out, cache = tmp_path_factory.mktemp("finetuned") / "model", tmp_path_factory.mktemp("finetune-cache")
    train_model(tiny_dataset, out, PROFILE, cache_dir=cache, progress=False)
    return out, cache


def test_finetuning_changes_the_backbone_and_records_each_epoch(finetuned: tuple[Path, Path]) -> None:
    model_dir, _ = finetuned
    report = json.loads((model_dir / "report" / "training.json").read_text())
    history = report["backbone_history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(math.isfinite(h["train_mse"]) and -1.0 <= h["val_spearman"] <= 1.0 for h in history)
    assert all(h["train_seconds"] > 0 for h in history)
    # The profile's default "auto" was resolved on this machine, and the choice is in the report and the card.
    compute = report["backbone_compute"]
    assert compute["requested"] == "auto" and compute["dtype"] in ("float32", "bfloat16") and compute["reason"]
    card = json.loads((model_dir / "model_card.json").read_text())
    assert card["training"]["backbone_compute"] == compute
    assert f"fine-tuning computed in {compute['dtype']}" in (model_dir / "MODEL_CARD.md").read_text()
    torch.manual_seed(0)  # train_model's seed: the backbone it started from
    initial = I3D(width=PROFILE.backbone_width).state_dict()
    trained = load_file(str(model_dir / "backbone.safetensors"))
    assert trained.keys() == initial.keys()
    assert not torch.equal(trained["Conv3d_1a_7x7.conv3d.weight"], initial["Conv3d_1a_7x7.conv3d.weight"])


def test_bank_features_made_from_cached_frames_equal_the_scorers(finetuned: tuple[Path, Path],
                                                                 tiny_dataset: Path) -> None:
    """The training computes features from the fine-tuning's frame cache in batches; the scorer decodes
    one video at a time. Both must give the same vector, up to the bank's float16 storage: a batch and a
    single video sum in a different order, which can move a value across a float16 rounding boundary."""
    model_dir, _ = finetuned
    scorer = Scorer.from_dir(model_dir)
    records = {r.key: r for r in load_folder_csv(tiny_dataset / "labels.csv")}
    for index in (0, len(scorer.bank) - 1):
        record = records[scorer.bank.exemplars[index].id]
        fresh = scorer.extract_features(decode_video(record.video, scorer.preprocessing))
        torch.testing.assert_close(fresh, scorer.bank.clip_features[index], rtol=2**-10, atol=1e-6)


def test_frame_cache_decodes_in_parallel_what_one_process_decodes(tiny_dataset: Path, tmp_path: Path) -> None:
    records = load_folder_csv(tiny_dataset / "labels.csv")[:6]
    pooled = cached_frames(records, PROFILE.preprocessing, tmp_path / "two", progress=False, workers=2)
    single = cached_frames(records, PROFILE.preprocessing, tmp_path / "one", progress=False, workers=1)
    assert pooled.shape == (6, PROFILE.preprocessing.num_frames, PROFILE.preprocessing.crop,
                            PROFILE.preprocessing.crop, 3)
    np.testing.assert_array_equal(pooled, single)
    np.testing.assert_array_equal(pooled[4], decode_record(records[4], PROFILE.preprocessing).frames)
    again = cached_frames(records, PROFILE.preprocessing, tmp_path / "two", progress=False)
    assert again.filename == pooled.filename  # reused, not decoded again


def test_oversampled_frames_hold_the_inference_frames_at_even_positions(tiny_dataset: Path) -> None:
    for num_frames in (1, 2, 16, 32, 103):
        for first, last in ((0, 74), (0, 124), (3, 57), (10, 10), (0, 2000)):
            dense = uniform_frame_indices(first, last, 2 * num_frames - 1)
            np.testing.assert_array_equal(dense[::2], uniform_frame_indices(first, last, num_frames))
    record = load_folder_csv(tiny_dataset / "labels.csv")[0]
    dense = decode_record(record, oversampled(PROFILE.preprocessing)).frames
    assert len(dense) == 2 * PROFILE.preprocessing.num_frames - 1
    np.testing.assert_array_equal(dense[::2], decode_record(record, PROFILE.preprocessing).frames)
    with pytest.raises(ValueError, match="uniform"):
        oversampled(Preprocessing(num_frames=16, resize=40, crop=32, sampling="window_end"))


def test_resampling_shifts_and_stretches_each_video_within_the_jitter() -> None:
    videos = np.broadcast_to(np.arange(31, dtype=np.uint8)[None, :, None, None, None], (64, 31, 2, 2, 3))
    rng = np.random.default_rng(0)
    even = resample_frames(videos, 16, 0.0, rng)
    np.testing.assert_array_equal(even, videos[:, ::2])
    indices = resample_frames(videos, 16, 2.0, rng)[:, :, 0, 0, 0].astype(int)
    assert indices.shape == (64, 16)
    assert (np.diff(indices, axis=1) >= 1).all()  # still in time order, no frame twice
    assert indices[:, 0].max() == 2 and indices[:, -1].min() == 28  # window ends move inward by <= 2
    assert len({tuple(row) for row in indices}) > 10  # each video draws its own window


def test_bfloat16_fine_tuning_runs_the_backbone_in_bfloat16_and_validates_in_float32(
        tiny_dataset: Path, tmp_path: Path) -> None:
    records = load_folder_csv(tiny_dataset / "labels.csv")
    profile = replace(PROFILE, backbone=replace(PROFILE.backbone, epochs=1, resample_jitter=0.0,
                                                compute_dtype="bfloat16"))
    torch.manual_seed(0)
    backbone = I3D(width=profile.backbone_width)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    seen: list[tuple[bool, torch.dtype]] = []
    backbone.Mixed_5c.register_forward_hook(lambda module, inputs, output: seen.append((module.training, output.dtype)))
    fine_tuning = train_backbone(backbone, records[:16], records[16:], profile, label_config(records), tmp_path,
                                 progress=False)
    history = fine_tuning.history
    assert fine_tuning.compute.dtype == "bfloat16" and fine_tuning.compute.requested == "bfloat16"
    assert len(history) == 1 and math.isfinite(history[0]["train_mse"])
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}
    assert {dtype for training, dtype in seen if not training} == {torch.float32}
    after = backbone.state_dict()
    assert all(after[k].dtype == before[k].dtype for k in before)  # float32 master weights, int64 counters
    assert not torch.equal(after["Conv3d_1a_7x7.conv3d.weight"], before["Conv3d_1a_7x7.conv3d.weight"])


def test_action_class_loss_trains_the_backbone_too_and_validation_runs_every_nth_epoch(
        tiny_dataset: Path, tmp_path: Path) -> None:
    records = load_folder_csv(tiny_dataset / "labels.csv")
    train = [replace(r, action_class=None) if i % 4 == 0 else r for i, r in enumerate(records[:16])]
    assert len({r.action_class for r in train if r.action_class}) > 1

    def fine_tune(weight: float) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
        profile = replace(PROFILE, backbone=replace(PROFILE.backbone, epochs=3, validate_every=2,
                                                    action_class_weight=weight, compute_dtype="float32"))
        torch.manual_seed(0)
        backbone = I3D(width=profile.backbone_width)
        fine_tuning = train_backbone(backbone, train, records[16:], profile, label_config(records), tmp_path,
                                     progress=False)
        return fine_tuning.history, backbone.state_dict()

    plain_history, plain = fine_tune(0.0)
    history, weights = fine_tune(1.0)
    assert [("val_spearman" in h) for h in history] == [False, True, True]
    assert all("train_class_cross_entropy" not in h for h in plain_history)
    assert all(math.isfinite(h["train_class_cross_entropy"]) and h["train_class_cross_entropy"] > 0 for h in history)
    assert plain_history[0]["train_mse"] != history[0]["train_mse"]  # a different backbone after the first step
    assert not torch.equal(weights["Mixed_5c.b0.conv3d.weight"], plain["Mixed_5c.b0.conv3d.weight"])
