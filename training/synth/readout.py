"""What a model reads of synthetic dives: its scores against the renderer's noise-free ground truth.

``aqa synth`` writes ``factors.csv`` next to ``labels.csv``: per video the noise-free panel mean and
the points each visible fault costs (:mod:`.execution`). Never training data; here it explains an
evaluation:

- **ceiling**: Spearman of the noise-free panel mean (times the difficulty for the final score) against
  the judged labels: what a model that reads every fault exactly would reach; the rest is judging noise.
- **fault read-out**: the least-squares fit of the model's predicted deduction ``10 - e_hat / 3``
  (``e_hat`` the predicted execution, three judges' sum) on the five faults' deductions and an
  intercept. A coefficient of 1 means the score drops one point per point that fault costs (the
  model reads it at full scale); 0 means the model does not see it. Standard errors are the ordinary
  least-squares ones, ``sqrt(diag(s^2 (X^T X)^-1))``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.metrics import spearman
from training.synth.execution import MAX_SCORE

FACTORS_FILE = "factors.csv"
FAULTS = ("under_rotation", "looseness", "entry_line", "splash", "height")
JUDGES_COUNTED = 3
"""Execution labels sum the middle three judges' scores."""
MIN_DIVES = len(FAULTS) + 3
"""Fewer dives leave the fit without degrees of freedom for its standard errors."""


def read_factors(dataset_dir: Path) -> dict[str, dict[str, str]] | None:
    """``factors.csv`` rows of a synthetic set by video path, or None for a set without one."""
    path = Path(dataset_dir) / FACTORS_FILE
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        return {row["video"]: row for row in csv.DictReader(handle)}


def fault_readout(predictions: Sequence[dict[str, Any]], factors: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Ceiling and per-fault read-out of an evaluation's ``predictions`` (rows keyed by video path).

    Needs the difficulty of every dive and at least :data:`MIN_DIVES` dives.
    """
    missing = [row["key"] for row in predictions if row["key"] not in factors]
    if missing:
        raise ValueError(f"{len(missing)} evaluated videos have no row in {FACTORS_FILE}, e.g. {missing[0]}")
    if len(predictions) < MIN_DIVES:
        raise ValueError(f"a fault read-out needs at least {MIN_DIVES} dives, got {len(predictions)}")
    rows = [factors[row["key"]] for row in predictions]
    panel_mean = np.array([float(row["panel_mean"]) for row in rows])
    deductions = np.array([[float(row[f"deduction_{fault}"]) for fault in FAULTS] for row in rows])
    true_final = np.array([row["true_final"] for row in predictions], float)
    difficulty = np.array([row["difficulty"] for row in predictions], float)
    used = np.array([row["difficulty_used"] or row["difficulty"] for row in predictions], float)
    predicted_deduction = MAX_SCORE - np.array([row["pred_final"] for row in predictions], float) / used / JUDGES_COUNTED

    design = np.column_stack([deductions, np.ones(len(rows))])
    coefficients, *_ = np.linalg.lstsq(design, predicted_deduction, rcond=None)
    residual = predicted_deduction - design @ coefficients
    variance = residual @ residual / (len(rows) - design.shape[1])
    errors = np.sqrt(np.diag(variance * np.linalg.inv(design.T @ design)))
    return {
        "ceiling": {"execution_spearman": spearman(panel_mean, true_final / difficulty),
                    "final_spearman": spearman(panel_mean * difficulty, true_final)},
        "fault_coefficients": {fault: {"coefficient": float(c), "standard_error": float(e)}
                               for fault, c, e in zip(FAULTS, coefficients, errors)},
    }
