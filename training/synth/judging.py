"""A seven-judge panel calibrated to real MTL-AQA judging.

Each dive has a latent panel mean ``mu``: the score the panel would give without noise, and the only
thing the rendered execution shows (:mod:`.execution`). Judges then score like the real ones:

- ``mu`` follows the real distribution of a dive's mean judge score (inverse CDF through a monotone
  cubic interpolation of :data:`.calibration.DIVE_MEAN_QUANTILES`), with a Gaussian-copula
  correlation to the difficulty degree. The copula controls ranks, so it is tuned to the real rank
  statistics: Spearman(DD, dive mean) 0.20 and Spearman(DD, final score) 0.62 (measured 0.20 and
  0.62 on 60,000 synthetic dives). Pearson(DD, dive mean) then comes out 0.19 instead of the real
  0.10: real low-DD dives vary less around their mean (sd 0.94 below DD 2.5 against 1.42 above),
  a spread-by-difficulty effect the copula leaves out. Matching Pearson instead would drop
  Spearman(DD, final) to 0.56 and make difficulty alone a weaker predictor than in real data;
- judge ``j`` gives ``clip(round_to_half(mu + sd(mu) * e_j), 0, 10)``, ``e_j ~ N(0, 1)``, where
  ``sd(mu)`` grows linearly as the dive gets worse, as real judges disagree more about weak dives
  (:data:`.calibration.WITHIN_DIVE_SD_BINS`); its constants were fitted to that real disagreement
  per bin, measured on the rounded scores;
- final score = DD x (sum of the middle three of the seven scores), the two highest and two lowest
  dropped, as in FINA diving.

This is where the benchmark is "as hard as real judging": a model sees ``mu`` at best, and the judges'
noise on top of it is the real noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.special import ndtr, ndtri

from training.synth.calibration import DIVE_MEAN_QUANTILE_LEVELS, DIVE_MEAN_QUANTILES, JUDGES_PER_DIVE
from training.synth.dive_table import dd_cdf_midpoint

SCORE_STEP = 0.5
"""Judges score on a half-point grid."""
MAX_SCORE = 10.0

DD_COPULA_CORRELATION = 0.21
"""Normal-score correlation between DD and ``mu`` (see the module docstring)."""
NOISE_SD_PERFECT = 0.19
"""Judge noise sd for a perfect dive (mu = 10), before rounding."""
NOISE_SD_PER_POINT = 0.05
"""Extra judge noise sd per point the dive falls short of 10."""
NOISE_SD_MAX = 0.55
"""Judge noise sd never exceeds this (real disagreement stops growing below a dive mean of ~6).

Fitted by least squares to the real within-dive sd per dive-mean bin; on 60,000 synthetic dives the
bins come out 0.45 / 0.37 / 0.33 / 0.29 / 0.25 (real 0.47 / 0.38 / 0.32 / 0.28 / 0.26) and the
overall mean within-dive sd 0.349 (real 0.347)."""

_PANEL_MEAN_QUANTILE = PchipInterpolator(DIVE_MEAN_QUANTILE_LEVELS, DIVE_MEAN_QUANTILES)


@dataclass(frozen=True)
class PanelScores:
    """A panel's verdict on one dive."""

    panel_mean: float
    """Latent noise-free panel mean ``mu`` (0..10)."""
    judge_scores: tuple[float, ...]
    final_score: float


def panel_mean_quantile(level: np.ndarray | float) -> np.ndarray:
    """Inverse CDF of the real dive-mean distribution at ``level`` in [0, 1]."""
    return np.clip(_PANEL_MEAN_QUANTILE(np.clip(level, 0.0, 1.0)), 0.0, MAX_SCORE)


def sample_panel_mean(rng: np.random.Generator, difficulty: float) -> float:
    """Draw ``mu`` for a dive of this difficulty (copula correlation :data:`DD_COPULA_CORRELATION`)."""
    dd_score = ndtri(dd_cdf_midpoint(difficulty))
    rho = DD_COPULA_CORRELATION
    latent = rho * dd_score + np.sqrt(1.0 - rho**2) * rng.standard_normal()
    return float(panel_mean_quantile(ndtr(latent)))


def judge_noise_sd(panel_mean: float) -> float:
    """Standard deviation of one judge's score around ``mu`` before rounding."""
    return min(NOISE_SD_MAX, NOISE_SD_PERFECT + NOISE_SD_PER_POINT * (MAX_SCORE - panel_mean))


def sample_judge_scores(rng: np.random.Generator, panel_mean: float) -> tuple[float, ...]:
    """Seven judges' scores: ``mu`` plus noise, rounded to the half-point grid and clipped to [0, 10]."""
    raw = panel_mean + judge_noise_sd(panel_mean) * rng.standard_normal(JUDGES_PER_DIVE)
    scores = np.clip(np.round(raw / SCORE_STEP) * SCORE_STEP, 0.0, MAX_SCORE)
    return tuple(float(s) for s in scores)


def final_score(difficulty: float, judge_scores: tuple[float, ...]) -> float:
    """DD x sum of the middle three scores; exact on the 0.05 grid such products fall on."""
    if len(judge_scores) != JUDGES_PER_DIVE:
        raise ValueError(f"expected {JUDGES_PER_DIVE} judge scores, got {len(judge_scores)}")
    middle_three = sum(sorted(judge_scores)[2:5])
    return round(difficulty * middle_three, 2)


def judge_dive(rng: np.random.Generator, difficulty: float) -> PanelScores:
    """Draw ``mu`` and the seven scores for one dive, and apply the judging rule."""
    mu = sample_panel_mean(rng, difficulty)
    scores = sample_judge_scores(rng, mu)
    return PanelScores(panel_mean=mu, judge_scores=scores, final_score=final_score(difficulty, scores))
