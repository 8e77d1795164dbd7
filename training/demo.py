"""Re-create the bundled demo model from nothing: ``aqa demo build`` (``make demo-model``).

1. render the training set: ``aqa synth`` seed 1, ``TRAIN_DIVES`` dives, x264 ``ultrafast`` (encodes 2 x faster;
   models score its renders and the default ``veryfast`` ones alike);
2. train with the ``cpu-finetune`` profile (backbone fine-tuning, CoRe head, bank, calibration, test split);
3. render a fresh set the model never saw (seed 7, 300 dives) and evaluate on it, with the true
   difficulty given and with the difficulty estimated from the bank; both go into the model card.
"""

from __future__ import annotations

import time
from pathlib import Path

from training.model_card import read_card, write_card
from training.pipeline import evaluate_model_dir, train_model
from training.profiles import PROFILES
from training.synth.generate import generate_dataset

TRAIN_SEED, TRAIN_DIVES = 1, 10000
TRAIN_X264_PRESET = "ultrafast"
FRESH_SEED, FRESH_DIVES = 7, 300
DEMO_MODEL_ID = "synth-dive-core"
DEMO_PROFILE = "cpu-finetune"

FRESH_SET = f"fresh synthetic set (seed {FRESH_SEED}, n={FRESH_DIVES})"


def demo_limits(card: dict) -> list[str]:
    """The card's limits, with the training size and the fresh-set execution Spearman this build measured."""
    profile = PROFILES[DEMO_PROFILE]
    frames, crop, epochs = profile.clips.length, profile.preprocessing.crop, profile.backbone.epochs
    execution = card["evaluations"][FRESH_SET]["execution"]["spearman"]
    return [
        ("Trained on synthetic dives only (`aqa synth`): it knows this renderer's figure, pool and camera, not real "
        "footage. Real scoring needs Kinetics I3D weights (`aqa weights import`) and training on MTL-AQA or "
        "FineDiving."),
        (f"CPU profile: a width-{profile.backbone_width:g} I3D reading each dive as one {frames}-frame clip of "
        f"{crop}x{crop} crops, fine-tuned for {epochs} epochs on {card['data']['train']:,} dives; it reads execution "
        f"only in part (execution Spearman {execution:.2f} on fresh synthetic dives) and fine details of a real dive "
        "are below its resolution."),
        "Without a given difficulty the model estimates it from the nearest exemplars; the card reports both cases.",
    ]


def build_demo_model(out: Path, work: Path, workers: int = 2) -> dict[str, float]:
    """Render, train and evaluate; returns the seconds spent in each step."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    train_dir, fresh_dir = work / f"synth-seed{TRAIN_SEED}", work / f"synth-seed{FRESH_SEED}"

    t = time.perf_counter()
    generate_dataset(train_dir, n=TRAIN_DIVES, seed=TRAIN_SEED, workers=workers, preset=TRAIN_X264_PRESET)
    seconds["render_training_set"] = time.perf_counter() - t

    t = time.perf_counter()
    data = {"generator": f"aqa synth {train_dir} --n {TRAIN_DIVES} --seed {TRAIN_SEED} --preset {TRAIN_X264_PRESET} "
                         "(320x240, 25 fps)"}
    train_model(train_dir / "labels.csv", out, PROFILES[DEMO_PROFILE], cache_dir=work / "feature-cache",
                model_id=DEMO_MODEL_ID, data_description=data)
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    generate_dataset(fresh_dir, n=FRESH_DIVES, seed=FRESH_SEED, workers=workers)
    evaluate_model_dir(out, fresh_dir, cache_dir=work / "feature-cache", out=work / "fresh-eval",
                       update_card=True, name=FRESH_SET)
    evaluate_model_dir(out, fresh_dir, cache_dir=work / "feature-cache", out=work / "fresh-eval-no-difficulty",
                       use_difficulty=False, update_card=True, name=f"{FRESH_SET}, difficulty estimated")
    seconds["fresh_set_evaluation"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - started

    card = read_card(out)
    card["limits"] = demo_limits(card)
    card["reproduce"] = {"command": "make demo-model  (= aqa demo build)",
                         "seconds_on_build_machine": {k: round(v, 1) for k, v in seconds.items()}}
    write_card(out, card)
    return seconds
