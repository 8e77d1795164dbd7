"""The fault read-out of an evaluation on synthetic dives, against hand-built examples and a real model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from training.pipeline import evaluate_model_dir
from training.synth.readout import FAULTS, fault_readout, read_factors


def _example(coefficients: list[float], intercept: float) -> tuple[list[dict], dict[str, dict[str, str]]]:
    """12 dives whose predicted deduction is exactly ``intercept + coefficients . deductions``."""
    rng = np.random.default_rng(0)
    predictions, factors = [], {}
    for i in range(12):
        deductions = rng.uniform(0.0, 2.0, size=len(FAULTS))
        panel_mean, difficulty = 10.0 - deductions.sum(), float(rng.choice([2.0, 3.0, 3.5]))
        predicted_mean = 10.0 - (intercept + float(np.dot(coefficients, deductions)))
        key = f"videos/dive_{i:05d}.mp4"
        factors[key] = {"video": key, "panel_mean": str(panel_mean),
                        **{f"deduction_{f}": str(d) for f, d in zip(FAULTS, deductions)}}
        predictions.append({"key": key, "true_final": 3 * panel_mean * difficulty,
                            "pred_final": 3 * predicted_mean * difficulty, "difficulty": difficulty,
                            "difficulty_used": difficulty})
    return predictions, factors


def test_readout_recovers_how_much_of_each_fault_the_score_follows() -> None:
    predictions, factors = _example([1.0, 0.0, 0.5, 2.0, 0.25], intercept=0.3)
    readout = fault_readout(predictions, factors)
    got = {fault: value["coefficient"] for fault, value in readout["fault_coefficients"].items()}
    assert got == pytest.approx({"under_rotation": 1.0, "looseness": 0.0, "entry_line": 0.5, "splash": 2.0,
                                 "height": 0.25}, abs=1e-9)
    assert all(value["standard_error"] < 1e-6 for value in readout["fault_coefficients"].values())
    # labels made from the noise-free panel mean: the ceiling is perfect ranking
    assert readout["ceiling"] == pytest.approx({"execution_spearman": 1.0, "final_spearman": 1.0})


def test_readout_refuses_videos_without_factors_and_too_few_dives() -> None:
    predictions, factors = _example([1.0] * 5, intercept=0.0)
    with pytest.raises(ValueError, match="no row in factors.csv, e.g. videos/dive_00003.mp4"):
        fault_readout(predictions, {k: v for k, v in factors.items() if not k.endswith("3.mp4")})
    with pytest.raises(ValueError, match="at least 8 dives"):
        fault_readout(predictions[:7], factors)


def test_evaluating_a_synthetic_set_reports_the_readout_in_the_card_and_a_plain_set_does_not(
        tiny_model_dir: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    evaluation = evaluate_model_dir(model, tiny_dataset, tmp_path / "cache", update_card=True, name="tiny set",
                                    progress=False)
    readout = evaluation.summary()["synthetic_readout"]
    assert set(readout["fault_coefficients"]) == set(FAULTS)
    assert 0.8 < readout["ceiling"]["execution_spearman"] <= 1.0  # judges' noise on 24 dives
    card = (model / "MODEL_CARD.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith("| tiny set |") and "+-" in line)
    splash = readout["fault_coefficients"]["splash"]
    assert f"{splash['coefficient']:.2f} +- {splash['standard_error']:.2f}" in row
    plain = tmp_path / "plain"
    shutil.copytree(tiny_dataset, plain)
    (plain / "factors.csv").unlink()
    assert read_factors(plain) is None
    assert evaluate_model_dir(tiny_model_dir, plain / "labels.csv", tmp_path / "cache",
                              progress=False).synthetic_readout is None
