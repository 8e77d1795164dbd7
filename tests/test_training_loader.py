"""Frames for end-to-end training (training/loader.py) and the device/precision choice (training/device.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.media import read_index, write_frame_folder, write_h264
from training.compute_dtype import native_bfloat16
from training.datasets.records import DiveRecord
from training.device import choose_precision, resolve_device
from training.feature_cache import decode_record
from training.loader import (
    Augmentation,
    InferenceClips,
    PairClips,
    TrainingView,
    ViewSource,
    augment,
    decode_training_view,
    make_loader,
)
from video.preprocessing import Preprocessing

WINDOW = Preprocessing(num_frames=16, resize=40, crop=32, sampling="window_end")
JITTER = Augmentation(temporal_jitter=3, random_crop=True, crop_margin=4, horizontal_flip=True)


@pytest.fixture(scope="module")
def index_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_h264(tmp_path_factory.mktemp("loader") / "index.mp4", frames=40, width=64, height=48)


def test_temporal_jitter_moves_the_whole_window_and_stays_in_the_video(index_video: Path) -> None:
    inside = DiveRecord(key="a", final_score=50.0, video=index_video, end_frame=30)  # window 15..30
    view = decode_training_view(inside, WINDOW, JITTER)
    assert view.shifts.tolist() == [-3, -2, -1, 0, 1, 2, 3]
    seen = set()
    for seed in range(40):
        frames = augment(view, WINDOW, JITTER, np.random.default_rng(seed))
        indices = [read_index(f) for f in frames]
        shift = indices[0] - 15
        assert indices == list(range(15 + shift, 31 + shift)) and -3 <= shift <= 3
        seen.add(shift)
    assert seen == set(range(-3, 4))
    at_end = DiveRecord(key="b", final_score=50.0, video=index_video)  # the window ends on the last frame
    assert decode_training_view(at_end, WINDOW, JITTER).shifts.tolist() == [-3, -2, -1, 0]


def test_unaugmented_draws_are_the_inference_input(index_video: Path, tmp_path: Path) -> None:
    """Without augmentation a view gives exactly the decoder's frames: for a margin crop of a resized video and
    for a whole stretched frame of a JPEG folder (CoRe's input)."""
    texture = write_h264(tmp_path / "texture.mp4", frames=30, width=80, height=60, pattern="texture")
    record = DiveRecord(key="t", final_score=50.0, video=texture, end_frame=25)
    expected = decode_record(record, WINDOW).frames
    assert np.array_equal(augment(decode_training_view(record, WINDOW, JITTER), WINDOW, JITTER, None), expected)
    folder = write_frame_folder(tmp_path / "frames", frames=30, width=60, height=34, pattern="texture")
    stretch = Preprocessing(num_frames=16, crop=24, normalization="imagenet", sampling="window_end",
                            stretch_to=(28, 50))
    whole = Augmentation(temporal_jitter=3, random_crop=True, crop_margin=None, horizontal_flip=True)
    record = DiveRecord(key="f", final_score=50.0, frames_dir=folder, end_frame=25)
    view = decode_training_view(record, stretch, whole)
    assert view.frames.shape[1:] == (50, 28, 3)  # the whole 28 wide x 50 tall frame, for random crops
    assert np.array_equal(augment(view, stretch, whole, None), decode_record(record, stretch).frames)


def test_random_crops_and_flips_cover_the_frame_and_only_it() -> None:
    height, width, crop = 9, 7, 4
    frames = np.arange(2 * height * width * 3, dtype=np.int64).reshape(2, height, width, 3).astype(np.uint8)
    view = TrainingView(frames, np.array([[0, 1]]), np.array([0]))
    preprocessing = Preprocessing(num_frames=2, resize=7, crop=crop)
    augmentation = Augmentation(random_crop=True, horizontal_flip=True)
    corners, flips = set(), 0
    for seed in range(200):
        drawn = augment(view, preprocessing, augmentation, np.random.default_rng(seed))
        match = [(top, left, flip) for top in range(height - crop + 1) for left in range(width - crop + 1)
                 for flip in (False, True)
                 if np.array_equal(drawn, (frames[:, top:top + crop, left:left + crop])[:, :, ::-1 if flip else 1])]
        assert len(match) == 1
        corners.add(match[0][:2])
        flips += match[0][2]
    assert corners == {(t, left) for t in range(height - crop + 1) for left in range(width - crop + 1)}
    assert 70 < flips < 130


def test_pairs_draw_the_same_frames_whichever_worker_loads_them(index_video: Path, tmp_path: Path) -> None:
    records = [DiveRecord(key=str(i), final_score=50.0, video=index_video, end_frame=20 + i) for i in range(4)]
    source = ViewSource(records, WINDOW, JITTER, cache_dir=tmp_path / "views")
    pairs = PairClips(source, np.array([0, 1, 2, 3]), np.array([1, 0, 3, 2]), seed=5, epoch=2)
    one = [b for b in make_loader(pairs, 2, 0, torch.device("cpu"))]
    two = [b for b in make_loader(pairs, 2, 2, torch.device("cpu"))]
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a["query"], b["query"]) and torch.equal(a["exemplar"], b["exemplar"])
    assert not torch.equal(PairClips(source, pairs.queries, pairs.exemplars, 5, 3)[0]["query"], one[0]["query"][0])
    cached = ViewSource(records, WINDOW, JITTER, cache_dir=tmp_path / "views")  # now read back from the .npy files
    assert torch.equal(InferenceClips(cached)[1], InferenceClips(ViewSource(records, WINDOW, JITTER))[1])


def test_device_and_precision_follow_the_machine() -> None:
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
    cpu = choose_precision(torch.device("cpu"), "auto")
    assert cpu.dtype == (torch.bfloat16 if native_bfloat16() else None) and not cpu.scales_loss
    assert choose_precision(torch.device("cpu"), "float32").name == "float32"
    with pytest.raises(ValueError, match="GPUs"):
        choose_precision(torch.device("cpu"), "float16")
    with choose_precision(torch.device("cpu"), "bfloat16").autocast():
        assert torch.nn.functional.linear(torch.ones(1, 2), torch.ones(3, 2)).dtype == torch.bfloat16
