"""Reference evaluation protocols (training/protocols.py) and the preprocessing options they need.

Real files throughout: H.264 made with PyAV, JPEG/PNG frame folders, annotation pickles with MTL-AQA's key
structure, a model directory written by the test, and the real MTL-AQA annotations when present.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from aqa.cli import main
from models.clips import ClipProtocol
from models.core import CoReHead
from models.gart import GroupBoundaries
from models.i3d import I3D
from models.model_dir import BACKBONE_WEIGHTS, HEAD_WEIGHTS, BackboneConfig, LabelConfig, ModelConfig
from tests.media import read_index, write_frame_folder, write_h264
from tests.paths import MTL_AQA_DIR
from training.datasets.mtl_aqa import load_mtl_aqa
from training.datasets.records import DiveRecord
from training.feature_cache import decode_record
from training.protocols import (
    PROTOCOLS,
    REPORT_JSON,
    REPORT_MD,
    ProtocolError,
    choose_exemplars,
    core_mtl_window,
    load_protocol_split,
    reference_metrics,
    run_protocol,
    voting_weights,
)
from video.decode import decode_video
from video.errors import FrameRangeError
from video.frame_folder import decode_frame_folder
from video.preprocessing import Preprocessing
from video.sampling import floor_uniform_frame_indices, sample_frame_indices, uniform_frame_indices

SMALL = Preprocessing(num_frames=10, resize=40, crop=32)


# --- preprocessing options ---------------------------------------------------------------------


def test_defaults_keep_the_recorded_dict_and_so_the_fingerprints() -> None:
    assert Preprocessing().to_dict() == {"num_frames": 103, "resize": 256, "crop": 224, "normalization": "kinetics"}
    core = Preprocessing(normalization="imagenet", sampling="window_end", stretch_to=(256, 455))
    assert core.to_dict()["stretch_to"] == [256, 455] and core.to_dict()["sampling"] == "window_end"
    assert "stretch_filter" not in core.to_dict()
    assert Preprocessing.from_dict(json.loads(json.dumps(core.to_dict()))) == core
    with pytest.raises(ValueError, match="unknown sampling"):
        Preprocessing(sampling="random")
    with pytest.raises(ValueError, match="crop <= both sides"):
        Preprocessing(crop=224, stretch_to=(200, 455))
    with pytest.raises(ValueError, match="applies to stretch_to only"):
        Preprocessing(stretch_filter="nearest")
    with pytest.raises(ValueError, match="unknown preprocessing field"):
        Preprocessing.from_dict({"num_frames": 8, "temporal": "x"})


def test_sampling_modes_pick_the_documented_frames() -> None:
    assert uniform_frame_indices(0, 10, 4).tolist() == [0, 3, 7, 10]
    assert floor_uniform_frame_indices(0, 10, 4).tolist() == [0, 3, 6, 10]  # np.linspace(...).astype(int)
    assert sample_frame_indices(0, 49, 5, "window_end").tolist() == [45, 46, 47, 48, 49]
    assert sample_frame_indices(40, 49, 15, "window_end").tolist() == list(range(35, 50))  # starts before 40
    with pytest.raises(FrameRangeError, match="would start at frame -3"):
        sample_frame_indices(0, 6, 10, "window_end")


def test_window_end_on_h264_and_on_a_jpeg_folder(tmp_path: Path) -> None:
    clip = write_h264(tmp_path / "clip.mp4", frames=40, width=96, height=54)
    folder = write_frame_folder(tmp_path / "frames", frames=40, width=96, height=54)
    window = replace(SMALL, sampling="window_end")
    for decoded in (decode_video(clip, window, start_frame=25, end_frame=31),
                    decode_frame_folder(folder, window, start_frame=25, end_frame=31)):
        assert decoded.frame_indices.tolist() == list(range(22, 32))
        assert [read_index(f) for f in decoded.frames] == list(range(22, 32))
    floor = replace(SMALL, num_frames=4, sampling="uniform_floor")
    assert [read_index(f) for f in decode_frame_folder(folder, floor, end_frame=10).frames] == [0, 3, 6, 10]
    with pytest.raises(FrameRangeError):
        decode_video(clip, window, end_frame=5)


def write_ramp_folder(folder: Path, width: int, height: int, frames: int = 2) -> Path:
    """PNG frames whose red rises linearly with x (0..255) and green with y: bilinear keeps such ramps."""
    folder.mkdir(parents=True)
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    image = np.stack([x, y, np.full_like(x, 128)], axis=2).round().astype(np.uint8)
    for i in range(frames):
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    return folder


def test_stretch_resizes_to_width_x_height_and_crops_at_rounded_offsets(tmp_path: Path) -> None:
    """Stretching 160 x 90 to 32 wide x 59 tall, crop 28: offsets round(2.0) = 2 and round(15.5) = 16 (not
    floor's 15), as torchvideotransforms' CenterCrop. A source pixel centre maps to (out + 0.5) * scale - 0.5."""
    width, height, out_w, out_h, crop = 160, 90, 32, 59, 28
    folder = write_ramp_folder(tmp_path / "ramp", width, height)
    stretch = Preprocessing(num_frames=2, crop=crop, stretch_to=(out_w, out_h))
    frame = decode_frame_folder(folder, stretch).frames[0].astype(float)
    assert frame.shape == (crop, crop, 3)
    columns = (2 + np.arange(crop) + 0.5) * width / out_w - 0.5
    rows = (16 + np.arange(crop) + 0.5) * height / out_h - 0.5
    inner = slice(2, crop - 2)  # away from the image border, where the filter clamps
    assert np.abs(frame[5, inner, 0] - columns[inner] * 255 / (width - 1)).max() < 1.0
    assert np.abs(frame[inner, 5, 1] - rows[inner] * 255 / (height - 1)).max() < 1.0
    floor_rows = (15 + np.arange(crop) + 0.5) * height / out_h - 0.5
    assert np.abs(frame[inner, 5, 1] - floor_rows[inner] * 255 / (height - 1)).min() > 3.0

    nearest = replace(stretch, stretch_filter="nearest")
    picked = decode_frame_folder(folder, nearest).frames[0]
    assert set(np.unique(picked[..., 0])) <= set(np.unique(np.asarray(Image.open(folder / "00000.png"))[..., 0]))


def test_stretch_on_h264_matches_the_frame_folder(tmp_path: Path) -> None:
    folder = write_frame_folder(tmp_path / "frames", frames=6, width=160, height=90, pattern="texture", suffix=".png")
    clip = write_h264(tmp_path / "clip.mp4", frames=6, width=160, height=90, pattern="texture")
    stretch = Preprocessing(num_frames=3, crop=28, normalization="imagenet", stretch_to=(32, 59))
    from_video = decode_video(clip, stretch).frames.astype(float)
    from_folder = decode_frame_folder(folder, stretch).frames.astype(float)
    assert from_video.shape == from_folder.shape == (3, 28, 28, 3)
    assert np.abs(from_video - from_folder).mean() < 4.0  # only H.264 coding apart


# --- exemplar choice ---------------------------------------------------------------------------


def dives(difficulties: list[float], prefix: str, actions: list[str] | None = None) -> list[DiveRecord]:
    return [DiveRecord(key=f"{prefix}{i:02d}", final_score=20.0 + i, difficulty=d,
                       action_class=actions[i] if actions else None) for i, d in enumerate(difficulties)]


def test_same_difficulty_rule_is_seeded_and_follows_core() -> None:
    train = dives([3.0] * 14 + [2.0] * 4 + [3.5] * 3, "t")
    query = DiveRecord(key="q1", final_score=60.0, difficulty=3.0)
    chosen = choose_exemplars(query, train, "same_difficulty", 10, seed=0)
    assert len(chosen) == len(set(chosen)) == 10 and all(train[i].difficulty == 3.0 for i in chosen)
    assert choose_exemplars(query, train, "same_difficulty", 10, seed=0) == chosen
    assert choose_exemplars(query, list(train), "same_difficulty", 10, seed=0) == chosen
    assert choose_exemplars(query, train, "same_difficulty", 10, seed=1) != chosen
    assert choose_exemplars(replace(query, key="q2"), train, "same_difficulty", 10, seed=0) != chosen
    few = choose_exemplars(replace(query, difficulty=2.0), train, "same_difficulty", 10)
    assert sorted(few) == [14, 15, 16, 17]  # CoRe votes with all of them when fewer than 10
    with pytest.raises(ProtocolError, match="no training dive with difficulty 4.1"):
        choose_exemplars(replace(query, difficulty=4.1), train, "same_difficulty", 10)


def test_tpt_rule_tops_up_from_the_nearest_difficulty_in_split_order() -> None:
    train = dives([2.0, 3.5, 2.0, 3.5, 3.4, 3.4, 3.4, 2.0, 3.4, 3.4, 3.4, 3.4, 3.4, 3.4], "t")
    query = DiveRecord(key="q", final_score=50.0, difficulty=3.5)
    chosen = choose_exemplars(query, train, "same_difficulty_then_nearest", 10)
    assert sorted(chosen[:2]) == [1, 3]
    assert chosen[2:] == [4, 5, 6, 8, 9, 10, 11, 12]  # difficulty 3.4 (nearest), unshuffled, in split order
    short = choose_exemplars(query, train[:8], "same_difficulty_then_nearest", 10)
    assert short[2:] == [4, 5, 6, 0, 2, 7]  # then the next nearest, 2.0
    # TPT's test loop averages only the same-difficulty exemplars (get_mask): the top-ups weigh nothing
    weights = voting_weights(query, train, chosen, "same_difficulty_then_nearest")
    assert weights.tolist() == [0.5, 0.5] + [0.0] * 8
    assert voting_weights(query, train, chosen, "same_difficulty").tolist() == [0.1] * 10


def test_same_action_and_any_rules() -> None:
    train = dives([3.0] * 12, "t", actions=["107B"] * 5 + ["405C"] * 7)
    query = DiveRecord(key="q", final_score=70.0, difficulty=3.0, action_class="405C")
    chosen = choose_exemplars(query, train, "same_action", 10)
    assert sorted(chosen) == list(range(5, 12))
    assert len(choose_exemplars(query, train, "any", 10)) == 10
    with pytest.raises(ProtocolError, match="no training dive with action '201A'"):
        choose_exemplars(replace(query, action_class="201A"), train, "same_action", 10)


def test_core_rule_on_the_real_mtl_aqa_split() -> None:
    split = load_mtl_aqa(MTL_AQA_DIR)
    voters = [choose_exemplars(q, split.train, "same_difficulty", 10, seed=0) for q in split.test]
    assert all(split.train[i].difficulty == q.difficulty for q, v in zip(split.test, voters) for i in v)
    counts = np.array([len(v) for v in voters])
    assert (counts == 10).sum() == 339 and (counts < 10).sum() == 14  # difficulties with < 10 training dives
    topped = [choose_exemplars(q, split.train, "same_difficulty_then_nearest", 10) for q in split.test]
    assert all(len(v) == 10 for v in topped)
    window = core_mtl_window(split.test)
    assert all(w.start_frame is None and w.end_frame == r.end_frame - 1 for w, r in zip(window, split.test))
    assert reference_metrics([r.final_score for r in split.test], [r.final_score for r in split.test])[
        "score_max"] - 0.0 == 104.5  # split 0's test range, R-l2's scale


# --- metrics -----------------------------------------------------------------------------------


def test_reference_metrics_on_hand_numbers() -> None:
    metrics = reference_metrics([10.0, 50.0, 90.0], [0.0, 50.0, 100.0])
    assert metrics["spearman"] == pytest.approx(1.0)
    assert metrics["l2"] == pytest.approx(200 / 3)
    assert metrics["relative_l2_x100"] == pytest.approx(100 * 2 * 0.1**2 / 3)
    # The scale is the test set's own range: MTL-AQA split 0 spans 0..104.5.
    mtl = reference_metrics([5.0, 50.0, 100.0], [0.0, 52.0, 104.5])
    assert mtl["relative_l2_x100"] == pytest.approx(100 * ((5 / 104.5) ** 2 + (2 / 104.5) ** 2 + (4.5 / 104.5) ** 2) / 3)
    aqa7 = reference_metrics([20.0, 40.0, 70.0], [10.0, 40.0, 90.0])  # scaled scores: range 80, not 100
    assert aqa7["relative_l2_x100"] == pytest.approx(100 * ((10 / 80) ** 2 + (20 / 80) ** 2) / 3)
    with pytest.raises(ProtocolError, match="same score"):
        reference_metrics([1.0, 2.0], [3.0, 3.0])


# --- end to end on a fake MTL-AQA layout -------------------------------------------------------

SOURCE_FRAMES = 118
# (video, clip) -> difficulty, end_frame; train first, then test
FAKE_DIVES = {
    (1, 1): (3.0, 104), (1, 2): (3.0, 110), (1, 3): (2.0, 112), (1, 4): (3.0, 116), (2, 1): (2.0, 105),
    (2, 2): (3.0, 108), (2, 3): (2.0, 113), (2, 4): (3.0, 117), (1, 5): (3.0, 106), (2, 5): (2.0, 109),
    (1, 6): (3.0, 115),
}
FAKE_TEST = [(1, 5), (2, 5), (1, 6)]


def write_fake_mtl_aqa(root: Path) -> Path:
    """MTL-AQA in CoRe's layout: info/ pickles with the real key structure, whole-source JPEG folders."""
    info = root / "info"
    info.mkdir(parents=True)
    annotations = {}
    for n, ((video, clip), (difficulty, end)) in enumerate(FAKE_DIVES.items()):
        judges = np.array([6.0, 6.5, 7.0, 7.0, 7.5, 8.0, 8.5]) - (n % 4) * 0.5
        annotations[(video, clip)] = {
            "primary_view": 0, "start_frame": end - 60, "end_frame": end, "difficulty": difficulty,
            "judge_scores": judges, "final_score": float(np.sort(judges)[2:5].sum() * difficulty),
            "position": 1, "armstand": 0, "rotation_type": 1, "ss_no": 5, "tw_no": 0, "dive_number": "105B",
        }
    (info / "final_annotations_dict_with_dive_number.pkl").write_bytes(pickle.dumps(annotations, protocol=2))
    train = [k for k in FAKE_DIVES if k not in FAKE_TEST]
    (info / "train_split_0.pkl").write_bytes(pickle.dumps(train, protocol=2))
    (info / "test_split_0.pkl").write_bytes(pickle.dumps(FAKE_TEST, protocol=2))
    for video in (1, 2):
        write_frame_folder(root / "new" / "new_total_frames_256s" / f"{video:02d}", frames=SOURCE_FRAMES,
                           width=48, height=27)
    return root


def write_test_model(folder: Path, labels: LabelConfig) -> Path:
    """A CoRe model directory with a tiny random I3D and our own preprocessing (not the reference's)."""
    torch.manual_seed(0)
    backbone = I3D(width=0.125).eval()
    head = CoReHead(backbone.feature_dim, hidden=16, depth=2, label_scale=labels.scale)
    groups = GroupBoundaries.from_deltas(np.linspace(0.05, 4.0, 40), 4, symmetric=True, score_range=labels.scale)
    ModelConfig(
        model_id="protocol-test", version="test", head="core",
        backbone=BackboneConfig(width=0.125, feature_dim=backbone.feature_dim),
        preprocessing=Preprocessing(num_frames=16, resize=40, crop=32).to_dict(),
        clips=ClipProtocol.core_mtl().to_dict(), labels=labels,
        head_config={**head.config(), "boundaries": groups.to_list()},
    ).save(folder)
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(folder / BACKBONE_WEIGHTS))
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / HEAD_WEIGHTS))
    return folder


@pytest.fixture(scope="module")
def fake_mtl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_mtl_aqa(tmp_path_factory.mktemp("mtl-aqa"))


@pytest.fixture(scope="module")
def execution_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_model(tmp_path_factory.mktemp("model") / "core", LabelConfig(kind="execution", scale=30.0))


def test_protocol_records_read_cores_window(fake_mtl: Path) -> None:
    protocol = PROTOCOLS["core-mtl"]
    split = load_protocol_split(protocol, fake_mtl)
    assert [r.key for r in split.test] == ["01_05", "02_05", "01_06"]
    record = split.test[0]  # annotated end_frame 106: CoRe reads positions 3 .. 105
    preprocessing = protocol.input_for(Preprocessing(num_frames=16, resize=40, crop=32))
    assert (preprocessing.num_frames, preprocessing.sampling, preprocessing.crop) == (103, "window_end", 32)
    frames = decode_record(record, preprocessing).frames
    assert [read_index(f) for f in frames] == list(range(106 - 103, 106))


def test_core_mtl_protocol_end_to_end(fake_mtl: Path, execution_model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    report = run_protocol("core-mtl", fake_mtl, [execution_model], cache, seed=0, progress=False)
    part = report.parts[0]
    assert part.num_test == 3 and part.input["num_frames"] == 103 and part.input["sampling"] == "window_end"
    annotations = pickle.loads((fake_mtl / "info" / "final_annotations_dict_with_dive_number.pkl").read_bytes())
    train_difficulty = {f"{v:02d}_{c:02d}": annotations[(v, c)]["difficulty"] for v, c in FAKE_DIVES}
    for row in part.predictions:
        assert row["exemplars"] and all(train_difficulty[k] == row["difficulty"] for k in row["exemplars"])
        assert len(row["exemplars"]) == sum(1 for (v, c), (d, _) in FAKE_DIVES.items()
                                            if d == row["difficulty"] and (v, c) not in FAKE_TEST)
        assert np.isfinite(row["predicted"])
    true = [row["true"] for row in part.predictions]
    assert report.summary["relative_l2_x100"] == pytest.approx(
        100 * np.mean([((r["predicted"] - r["true"]) / (max(true) - min(true))) ** 2 for r in part.predictions]))
    assert any("stretch_to" in d for d in part.differences)  # the model's own resize is not CoRe's
    assert any("normalization: kinetics (reference imagenet)" in d for d in part.differences)
    assert report.published[0]["spearman"] == 0.9512

    again = run_protocol("core-mtl", fake_mtl, [execution_model], cache, seed=0, progress=False)
    assert [r["predicted"] for r in again.parts[0].predictions] == [r["predicted"] for r in part.predictions]

    reference = run_protocol("core-mtl", fake_mtl, [execution_model], cache, input_mode="reference", progress=False)
    assert reference.parts[0].input["stretch_to"] == [256, 455]
    assert not [d for d in reference.parts[0].differences if d.startswith("input")]


def test_tpt_mtl_votes_only_with_same_difficulty_exemplars(fake_mtl: Path, execution_model: Path,
                                                          tmp_path: Path) -> None:
    """Every fake test dive has fewer than 10 same-difficulty training dives, so tpt-mtl tops each up; with the
    top-ups at weight 0 it predicts what core-mtl predicts (which votes with all same-difficulty dives)."""
    core = run_protocol("core-mtl", fake_mtl, [execution_model], tmp_path / "cache", progress=False).parts[0]
    tpt = run_protocol("tpt-mtl", fake_mtl, [execution_model], tmp_path / "cache", progress=False).parts[0]
    for core_row, tpt_row in zip(core.predictions, tpt.predictions):
        assert len(tpt_row["exemplars"]) == 8 > len(core_row["exemplars"])  # all 8 training dives vote or top up
        assert sum(w > 0 for w in tpt_row["exemplar_weights"]) == len(core_row["exemplars"])
        assert tpt_row["predicted"] == pytest.approx(core_row["predicted"], rel=1e-6)


def test_eval_protocol_command(fake_mtl: Path, execution_model: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    out, cache = tmp_path / "report", tmp_path / "cache"
    assert main(["eval", "--protocol", "core-mtl", "--data", str(fake_mtl), "--model", str(execution_model),
                 "--out", str(out), "--cache", str(cache)]) == 0
    printed = capsys.readouterr().out
    assert "CoRe test protocol on MTL-AQA" in printed and "| protocol-test (core) | - | 3 |" in printed
    saved = json.loads((out / REPORT_JSON).read_text())
    assert saved["protocol"] == "core-mtl" and len(saved["parts"][0]["predictions"]) == 3
    assert (out / REPORT_MD).read_text().startswith("# CoRe test protocol")

    assert main(["eval", "--protocol", "core-mtl", "--model", str(execution_model)]) == 1
    assert "needs --data" in capsys.readouterr().err
    assert main(["eval"]) == 1
    assert "needs a DATASET" in capsys.readouterr().err
    assert main(["eval", "--protocol", "core-aqa7", "--data", str(fake_mtl), "--model", str(execution_model)]) == 1
    assert "one --action per --model" in capsys.readouterr().err


def test_execution_model_refused_where_dives_have_no_difficulty(tmp_path: Path, execution_model: Path) -> None:
    """AQA-7 has no difficulty: an execution-score model cannot run core-aqa7."""
    import scipy.io

    root = tmp_path / "Seven"
    (root / "Split_4").mkdir(parents=True)
    rows = np.array([[1, s, 30.0 + 10 * s] for s in (1, 2, 3)], dtype=float)
    scipy.io.savemat(root / "Split_4" / "split_4_train_list.mat", {"consolidated_train_list": rows[:2]})
    scipy.io.savemat(root / "Split_4" / "split_4_test_list.mat", {"consolidated_test_list": rows[2:]})
    for sample in (1, 2, 3):
        (root / "diving-out" / f"{sample:03d}").mkdir(parents=True)
    split = load_protocol_split(PROTOCOLS["core-aqa7"], root, action="diving")
    assert [(r.start_frame, r.end_frame) for r in split.test] == [(0, 102)]  # the first 103 frames
    assert split.test[0].final_score == pytest.approx((60.0 - 21.6) / (102.6 - 21.6) * 100)
    with pytest.raises(ProtocolError, match="do not all have a difficulty"):
        run_protocol("core-aqa7", root, [execution_model], tmp_path / "cache", actions=["diving"], progress=False)
