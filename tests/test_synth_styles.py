"""Shifted rendering styles and non-dive clips (`aqa synth --style`, `--non-dives`): the benchmark of the
familiarity check. The training style must stay what the demo model was trained on (byte for byte with its encoder)."""

from __future__ import annotations

import csv
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from aqa.cli import main as aqa_main
from exemplar_bank.bank import ExemplarBank
from models.file_hash import file_sha256
from models.pretrained import DEMO_MODEL_DIR
from models.scorer import Scorer
from training.synth.generate import generate_dataset, label_row
from training.synth.kinematics import BOARD_HEIGHT
from training.synth.nondive import NON_DIVE_KINDS, generate_non_dives
from training.synth.scene import sample_synth_dive
from training.synth.style import OTHER_BODY, PLATFORM_HEIGHT_M, SHIFTED_STYLES, STYLES
from video.decode import decode_video

BANK_ENCODER_LIBAVCODEC = (62, 28, 102)
"""The libavcodec (PyAV 18.1) that encoded the demo's training videos."""


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_the_training_style_still_renders_the_demo_banks_files(tmp_path: Path) -> None:
    """Validation dive 6 of the demo's seed-1 training set, rendered again (x264 ultrafast): with the encoder
    the demo was built with (PyAV 18 here) the file is byte for byte the one the bank records; with another
    (PyAV 19 bundles FFmpeg 8, on Python 3.12-3.13) the bytes differ, so the demo's backbone must read it as
    the bank holds it."""
    bank = ExemplarBank.load(DEMO_MODEL_DIR / "bank")
    index = next(i for i, e in enumerate(bank.exemplars) if e.id == "videos/dive_00006.mp4")
    path = tmp_path / "dive_00006.mp4"
    sample_synth_dive(1, 6).render(path, 320, 240, 25, "ultrafast")
    if file_sha256(path) == bank.exemplars[index].video_sha256:
        return
    assert av.library_versions["libavcodec"] != BANK_ENCODER_LIBAVCODEC, "same encoder, different file"
    scorer = Scorer.from_dir(DEMO_MODEL_DIR)
    features = scorer.extract_features(decode_video(path, scorer.preprocessing))
    similarity = torch.nn.functional.cosine_similarity(features, bank.clip_features[index], dim=-1)
    assert float(similarity.min()) > 0.9999  # another dive of the bank: about 0.92


def test_a_style_changes_the_pictures_not_the_dive() -> None:
    plain = sample_synth_dive(7, 3)
    first = plain.renderer(160, 120, 10).frame(5)
    for name in SHIFTED_STYLES:
        styled = sample_synth_dive(7, 3, STYLES[name])
        assert label_row("v", styled) == label_row("v", plain) and styled.faults == plain.faults
        assert np.abs(styled.renderer(160, 120, 10).frame(5).astype(int) - first).mean() > 1, name
    body = sample_synth_dive(7, 3, STYLES["body"]).motion()
    standing = body.joints(-1.0)  # before the press: upright on the board
    assert standing[2, 1] - standing[5, 1] == pytest.approx(OTHER_BODY.torso_m + OTHER_BODY.neck_m + OTHER_BODY.thigh_m
                                                            + OTHER_BODY.shin_m, abs=1e-9)
    assert sample_synth_dive(7, 3, STYLES["pool"]).motion().board_height == PLATFORM_HEIGHT_M != BOARD_HEIGHT
    fixed = sample_synth_dive(7, 3, STYLES["camera"]).renderer(160, 120, 10)
    assert np.ptp(fixed.track, axis=0).max() == 0.0  # a still camera
    look = sample_synth_dive(7, 3, STYLES["look"])
    np.testing.assert_array_equal(look.renderer(160, 120, 10).frame(4), look.renderer(160, 120, 10).frame(4))


def test_a_styled_set_records_its_style(tmp_path: Path) -> None:
    labels = generate_dataset(tmp_path / "look", n=2, seed=7, width=160, height=120, fps=10, style="look",
                              progress=False)
    plain = generate_dataset(tmp_path / "plain", n=2, seed=7, width=160, height=120, fps=10, progress=False)
    assert labels.read_text() == plain.read_text()
    with (tmp_path / "look" / "factors.csv").open() as handle:
        assert [row["style"] for row in csv.DictReader(handle)] == ["look", "look"]
    with pytest.raises(ValueError, match="unknown style 'cartoon'; choose from demo, body"):
        generate_dataset(tmp_path / "bad", n=1, seed=0, style="cartoon", progress=False)


def test_non_dive_clips_are_real_h264_of_every_kind_and_deterministic(tmp_path: Path) -> None:
    clips = generate_non_dives(tmp_path / "a", n=len(NON_DIVE_KINDS), seed=3, width=160, height=120, fps=10,
                               progress=False)
    with clips.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["kind"] for row in rows] == list(NON_DIVE_KINDS)
    for row in rows:
        frames = frames_of(clips.parent / row["video"])
        assert len(frames) == int(row["frames"]) and 30 <= len(frames) <= 50 and frames[0].shape == (120, 160, 3)
    again = generate_non_dives(tmp_path / "b", n=2, seed=3, width=160, height=120, fps=10, workers=2, progress=False)
    for name in ("videos/clip_00000.mp4", "videos/clip_00001.mp4"):  # the walker and testsrc2
        np.testing.assert_array_equal(frames_of(clips.parent / name)[-1], frames_of(again.parent / name)[-1])


def test_aqa_synth_styles_and_non_dives_on_the_command_line(tmp_path: Path, capsys) -> None:
    assert aqa_main(["synth", str(tmp_path / "walk"), "--n", "1", "--non-dives", "--width", "160", "--height", "120",
                     "--fps", "10"]) == 0
    assert "wrote 1 non-dive clips" in capsys.readouterr().out
    assert aqa_main(["synth", str(tmp_path / "x"), "--n", "1", "--style", "cartoon"]) == 1
    assert capsys.readouterr().err.startswith("error: unknown style 'cartoon'")
    assert aqa_main(["synth", str(tmp_path / "y"), "--n", "1", "--style", "body", "--non-dives"]) == 1
    assert "does not go with --non-dives" in capsys.readouterr().err
