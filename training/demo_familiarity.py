"""Calibrate the bundled demo model's familiarity check without retraining it.

``python -m training.demo_familiarity [--model models/demo]``

The demo was trained before ``familiarity.json`` existed; ``aqa demo build`` now writes it through
``train_model``. For the committed weights this module does what ``train_model`` would have done, from
what the demo recipe (``training/demo.py``) fixes:

1. recompute the recipe's split from the seed-1 labels alone (labels have their own random stream, so
   nothing is rendered) and check the bank holds the training then the validation dives, in that order;
2. re-render a sample of the validation dives (seed 1, x264 ``ultrafast``, 320x240 at 25 fps) and check
   each is the very file the bank was built from (its sha256) and gives the bank's feature;
3. calibrate on the validation dives, each against the bank without itself, as ``train_model`` does;
4. record the training videos' formats: every training and validation dive's length from its nuisance
   timing (checked against probes of the re-rendered sample), at the recipe's size and frame rate.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from exemplar_bank.familiarity import FAMILIARITY_FILE, FamiliarityCalibration, InputRanges, Range
from exemplar_bank.familiarity import calibrate as calibrate_familiarity
from models.file_hash import file_sha256
from models.pretrained import DEMO_MODEL_DIR
from models.scorer import Scorer
from training.datasets.folder_csv import split_records
from training.datasets.records import DiveRecord
from training.demo import DEMO_PROFILE, TRAIN_DIVES, TRAIN_SEED, TRAIN_X264_PRESET
from training.model_card import read_card, write_card
from training.pipeline import familiarity_summary
from training.profiles import PROFILES
from training.synth.generate import video_name
from training.synth.render import action_seconds
from training.synth.scene import sample_labels, sample_synth_dive
from video.decode import decode_video
from video.probe import probe_video

WIDTH, HEIGHT, FPS = 320, 240, 25
"""The demo training set's format (``generate_dataset`` defaults)."""
CHECKED_DIVES = 10
FEATURE_COSINE_MIN = 0.9999
"""A re-rendered dive's feature against the bank's (stored in float16)."""


class DemoMismatch(RuntimeError):
    """The committed demo does not match its recipe: calibrating it from the recipe would be wrong."""


def recipe_split() -> tuple[list[str], list[str]]:
    """(training ids, validation ids) of the demo recipe, as ``train_model`` splits them."""
    records = []
    for index in range(TRAIN_DIVES):
        dive, panel = sample_labels(TRAIN_SEED, index)
        records.append(DiveRecord(key=video_name(index), final_score=panel.final_score, difficulty=dive.difficulty,
                                  action_class=dive.code))
    profile = PROFILES[DEMO_PROFILE]
    outer = split_records(records, profile.test_fraction, seed=0)
    inner = split_records(outer.train, profile.validation_fraction / (1 - profile.test_fraction), seed=1)
    return [r.key for r in inner.train], [r.key for r in inner.test]


def index_of(video_id: str) -> int:
    return int(Path(video_id).stem.split("_")[1])


def recipe_frame_count(index: int) -> int:
    """Frames of training dive ``index``, from its nuisance timing (as ``DiveRenderer`` counts them)."""
    dive = sample_synth_dive(TRAIN_SEED, index)
    return max(1, round(dive.nuisance.duration_s(action_seconds(dive.motion())) * FPS))


def check_rerendered(scorer: Scorer, validation_ids: list[str], work: Path) -> list[int]:
    """Re-render ``CHECKED_DIVES`` validation dives; raise :class:`DemoMismatch` unless each is the bank's file
    and feature. Returns the frame counts the probes report, in order."""
    row_of = {e.id: i for i, e in enumerate(scorer.bank.exemplars)}
    frames = []
    for video_id in validation_ids[:: max(1, len(validation_ids) // CHECKED_DIVES)][:CHECKED_DIVES]:
        exemplar, index = scorer.bank.exemplars[row_of[video_id]], index_of(video_id)
        path = work / Path(video_id).name
        sample_synth_dive(TRAIN_SEED, index).render(path, WIDTH, HEIGHT, FPS, TRAIN_X264_PRESET)
        if file_sha256(path) != exemplar.video_sha256:
            raise DemoMismatch(f"re-rendered {video_id} is not the file the bank was built from")
        feature = scorer.extract_features(decode_video(path, scorer.preprocessing)).mean(0)
        cosine = torch.nn.functional.cosine_similarity(feature, scorer.bank.pooled_features[row_of[video_id]], dim=0)
        if cosine < FEATURE_COSINE_MIN:
            raise DemoMismatch(f"re-rendered {video_id} gives another feature than the bank's (cosine {cosine:.6f})")
        info = probe_video(path)
        if (info.width, info.height, round(info.fps)) != (WIDTH, HEIGHT, FPS) or \
                info.frame_count != recipe_frame_count(index) or \
                not np.isclose(info.duration_seconds, info.frame_count / FPS, atol=1 / FPS):
            raise DemoMismatch(f"re-rendered {video_id} probes as {info}, not as the recipe says")
        frames.append(info.frame_count)
    return frames


def calibrate_demo(model_dir: Path = DEMO_MODEL_DIR) -> FamiliarityCalibration:
    """Steps 1-4 of the module docstring; writes ``familiarity.json`` and the card's familiarity section (a
    previous calibration is replaced; its benchmark measurements are kept when it can be read)."""
    path = model_dir / FAMILIARITY_FILE
    measured = json.loads(path.read_text()).get("measured", {}) if path.is_file() else {}
    path.unlink(missing_ok=True)
    scorer = Scorer.from_dir(model_dir)
    train_ids, validation_ids = recipe_split()
    if [e.id for e in scorer.bank.exemplars] != train_ids + validation_ids:
        raise DemoMismatch("the bank's rows are not the recipe's training then validation dives")
    with tempfile.TemporaryDirectory() as work:
        check_rerendered(scorer, validation_ids, Path(work))
    durations = [recipe_frame_count(index_of(i)) / FPS for i in train_ids + validation_ids]
    inputs = InputRanges(duration_seconds=Range(low=min(durations), high=max(durations)),
                         fps=Range(low=FPS, high=FPS), width=Range(low=WIDTH, high=WIDTH),
                         height=Range(low=HEIGHT, high=HEIGHT), aspect=Range(low=WIDTH / HEIGHT, high=WIDTH / HEIGHT),
                         num_videos=len(durations))
    calibration = calibrate_familiarity(
        scorer.bank, validation_ids, inputs,
        source=f"{len(validation_ids)} validation dives left out of the reference statistics: the demo's "
               "validation rows, re-rendered and checked by training/demo_familiarity.py")
    calibration.measured = measured
    calibration.save(model_dir)
    card = read_card(model_dir)
    card["familiarity"] = familiarity_summary(calibration)
    write_card(model_dir, card)
    return calibration


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEMO_MODEL_DIR)
    args = parser.parse_args(argv)
    calibration = calibrate_demo(args.model)
    print(f"wrote {args.model / 'familiarity.json'}: {len(calibration.calibration_distances)} calibration distances, "
          f"flag above percentile {calibration.threshold_percentile:g}; inputs {calibration.inputs.model_dump()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
