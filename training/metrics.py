"""The field's metrics for action quality assessment.

- Spearman's rank correlation rho between predicted and true scores (Parmar & Morris 2017 onwards).
- Fisher-z average of per-action rho: tanh(mean_a artanh(rho_a)) (CoRe, Sec. 4.1).
- Relative L2 distance: R-l2 = (1/K) sum_k ((|s_k - s_hat_k|) / (s_max - s_min))^2 (CoRe, Sec. 4.1),
  usually reported x 100. The papers' code takes s_max and s_min from the evaluated set's own true scores
  (CoRe ``tools/runner.py``: ``true_scores.max() - true_scores.min()``; TPT ``utils/util.py``
  ``ResultsHandler.update_results``, x 100), per class on AQA-7 (one model and one test set per class;
  TPT's multi-class run: within each class): :func:`relative_l2_test_range`, :func:`per_class_relative_l2`.
  :func:`relative_l2` takes the range from the caller (e.g. a label range), which is a different number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import spearmanr


def spearman(predicted: Sequence[float], true: Sequence[float]) -> float:
    """Spearman's rho; NaN when either side is constant or there are fewer than 3 items."""
    predicted, true = np.asarray(predicted, float), np.asarray(true, float)
    if len(true) < 3 or np.ptp(true) == 0 or np.ptp(predicted) == 0:
        return float("nan")
    return float(spearmanr(predicted, true).statistic)


def relative_l2(predicted: Sequence[float], true: Sequence[float], score_min: float, score_max: float) -> float:
    """R-l2 = mean(((|s - s_hat|) / (s_max - s_min))^2), not multiplied by 100."""
    if score_max <= score_min:
        raise ValueError(f"score range must be positive, got [{score_min}, {score_max}]")
    predicted, true = np.asarray(predicted, float), np.asarray(true, float)
    return float(np.mean((np.abs(true - predicted) / (score_max - score_min)) ** 2))


def relative_l2_test_range(predicted: Sequence[float], true: Sequence[float]) -> float:
    """R-l2 as the papers compute it: the range is the evaluated set's own ``max(true) - min(true)``.

    Not multiplied by 100; NaN when every true score is the same (the range is zero).
    """
    true = np.asarray(true, float)
    if len(true) == 0 or np.ptp(true) == 0:
        return float("nan")
    return relative_l2(predicted, true, float(true.min()), float(true.max()))


def per_class_relative_l2(predicted: Sequence[float], true: Sequence[float], classes: Sequence[str | None],
                          min_items: int = 3) -> dict[str, float]:
    """:func:`relative_l2_test_range` within each class of at least ``min_items`` items (its own range)."""
    predicted, true = np.asarray(predicted, float), np.asarray(true, float)
    labels = np.asarray([c if c is not None else "" for c in classes], dtype=object)
    return {str(cls): relative_l2_test_range(predicted[labels == cls], true[labels == cls])
            for cls in sorted(set(labels)) if (labels == cls).sum() >= min_items}


def fisher_z_average(rhos: Sequence[float]) -> float:
    """Average correlations through Fisher's z: tanh(mean(artanh(rho))); rho = +-1 is clipped."""
    values = np.clip(np.asarray([r for r in rhos if np.isfinite(r)], float), -0.999999, 0.999999)
    if len(values) == 0:
        return float("nan")
    return float(np.tanh(np.mean(np.arctanh(values))))


def per_class_spearman(predicted: Sequence[float], true: Sequence[float], classes: Sequence[str | None],
                       min_items: int = 3) -> dict[str, float]:
    """Spearman rho within each action class that has at least ``min_items`` dives."""
    predicted, true = np.asarray(predicted, float), np.asarray(true, float)
    labels = np.asarray([c if c is not None else "" for c in classes], dtype=object)
    result = {}
    for cls in sorted(set(labels)):
        mask = labels == cls
        if mask.sum() >= min_items:
            result[str(cls)] = spearman(predicted[mask], true[mask])
    return result
