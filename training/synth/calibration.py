"""The statistics of real MTL-AQA judging that the synthetic benchmark is calibrated to.

The constants below were computed from ``final_annotations_dict_with_dive_number.pkl`` (1412 dives)
by :func:`calibrate_from_mtl_aqa`; a test recomputes them from the real file, so they cannot drift
from the data. Other synth modules read them from here: :mod:`.dive_table` samples difficulty degrees
with the real frequencies, :mod:`.judging` draws panel means from the real quantiles and judge noise
with the real per-dive disagreement.

The annotation pickle holds dicts, tuples, floats, strings and numpy arrays. It is opened with
:class:`RestrictedUnpickler`, which admits nothing else, so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

JUDGES_PER_DIVE = 7
"""MTL-AQA panels have seven judges."""

DD_COUNTS: dict[float, int] = {
    1.5: 1,
    1.6: 20,
    1.8: 7,
    1.9: 25,
    2.0: 26,
    2.1: 8,
    2.3: 2,
    2.4: 10,
    2.6: 8,
    2.7: 33,
    2.8: 75,
    2.9: 57,
    3.0: 229,
    3.1: 44,
    3.2: 321,
    3.3: 212,
    3.4: 94,
    3.5: 52,
    3.6: 108,
    3.7: 44,
    3.8: 24,
    3.9: 6,
    4.1: 6,
}
"""How many real dives have each difficulty degree (23 values, 1412 dives)."""

DIVE_MEAN_QUANTILE_LEVELS: tuple[float, ...] = (
    0.0,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.35,
    0.4,
    0.45,
    0.5,
    0.55,
    0.6,
    0.65,
    0.7,
    0.75,
    0.8,
    0.85,
    0.9,
    0.95,
    0.975,
    0.99,
    0.995,
    1.0,
)
DIVE_MEAN_QUANTILES: tuple[float, ...] = (
    0.0,
    2.5714,
    3.0793,
    3.7143,
    4.2143,
    5.2143,
    5.6429,
    6.1429,
    6.5,
    6.7143,
    6.9286,
    7.0714,
    7.2143,
    7.3571,
    7.5,
    7.6429,
    7.7857,
    7.9286,
    8.0714,
    8.2143,
    8.4286,
    8.6429,
    8.9286,
    9.0714,
    9.4286,
    9.5,
    9.5714,
)
"""Quantiles (numpy's linear interpolation) of a dive's mean judge score at the levels above."""

JUDGE_MEAN = 7.116
"""Mean of all 9884 real judge scores."""
DIVE_MEAN_SD = 1.394
"""Standard deviation (ddof=0) across dives of a dive's mean judge score."""
WITHIN_DIVE_SD = 0.347
"""Mean over dives of the standard deviation (ddof=1) of the seven judges' scores."""
WITHIN_DIVE_SD_BINS: tuple[tuple[float, float, float], ...] = (
    (0.0, 6.0, 0.470),
    (6.0, 7.0, 0.375),
    (7.0, 8.0, 0.323),
    (8.0, 9.0, 0.284),
    (9.0, 10.01, 0.261),
)
"""(low, high, mean within-dive sd) for dives whose mean judge score is in [low, high): real judges
disagree more about weak dives than about good ones."""
PEARSON_DD_DIVE_MEAN = 0.104
"""Pearson correlation between difficulty degree and a dive's mean judge score."""
SPEARMAN_DD_DIVE_MEAN = 0.203
"""Spearman correlation between difficulty degree and a dive's mean judge score."""
SPEARMAN_DD_FINAL = 0.619
"""Spearman correlation between difficulty degree and final score."""
FINAL_MEAN = 67.00
FINAL_SD = 16.92
"""Mean and standard deviation (ddof=0) of the final scores."""


class AnnotationFileError(ValueError):
    """The annotation file is missing, unreadable or holds something other than plain data."""


_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}
_NUMPY_MAJOR = int(np.__version__.split(".")[0])


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers, numbers, strings and numpy arrays; refuses every other global.

    Pickles written under numpy 1 name ``numpy.core``; numpy 2 moved it to ``numpy._core``, so the
    module name is mapped to whichever the installed numpy provides.
    """

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in an annotation file")
        if _NUMPY_MAJOR >= 2 and module.startswith("numpy.core."):
            module = module.replace("numpy.core.", "numpy._core.", 1)
        elif _NUMPY_MAJOR < 2 and module.startswith("numpy._core."):
            module = module.replace("numpy._core.", "numpy.core.", 1)
        return super().find_class(module, name)


def load_annotation_pickle(path: Path) -> object:
    """Load an MTL-AQA/FineDiving annotation pickle with :class:`RestrictedUnpickler`."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationFileError(f"annotation file not found: {path}")
    try:
        with path.open("rb") as handle:
            return RestrictedUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError) as exc:
        raise AnnotationFileError(f"cannot read {path} as a plain-data annotation pickle: {exc}") from exc


@dataclass(frozen=True)
class MtlAqaStatistics:
    """What :func:`calibrate_from_mtl_aqa` measures; the module constants are one instance of it."""

    n_dives: int
    dd_counts: dict[float, int]
    judge_mean: float
    dive_mean_sd: float
    within_dive_sd: float
    within_dive_sd_bins: tuple[tuple[float, float, float], ...]
    dive_mean_quantiles: tuple[float, ...]
    pearson_dd_dive_mean: float
    spearman_dd_dive_mean: float
    spearman_dd_final: float
    final_mean: float
    final_sd: float
    n_rule_consistent: int
    """Dives whose final score equals difficulty x sum of the middle three judge scores."""


def calibrate_from_mtl_aqa(path: Path) -> MtlAqaStatistics:
    """Recompute the calibration statistics from the real annotation dict.

    ``path`` is ``final_annotations_dict_with_dive_number.pkl``: a dict keyed (video, clip) of dicts
    with ``difficulty``, ``judge_scores`` (7) and ``final_score``.
    """
    annotations = load_annotation_pickle(path)
    if not isinstance(annotations, dict) or not annotations:
        raise AnnotationFileError(f"{path} does not hold a non-empty dict of dives")
    try:
        difficulty = np.array([float(a["difficulty"]) for a in annotations.values()])
        final = np.array([float(a["final_score"]) for a in annotations.values()])
        judges = np.array([np.asarray(a["judge_scores"], dtype=float) for a in annotations.values()])
    except (KeyError, TypeError, ValueError) as exc:
        raise AnnotationFileError(
            f"{path}: a dive lacks difficulty/final_score/7 judge_scores: {exc}"
        ) from exc
    if judges.ndim != 2 or judges.shape[1] != JUDGES_PER_DIVE:
        raise AnnotationFileError(f"{path}: expected {JUDGES_PER_DIVE} judge scores per dive")

    dive_mean = judges.mean(axis=1)
    within_sd = judges.std(axis=1, ddof=1)
    bins = tuple(
        (low, high, float(within_sd[(dive_mean >= low) & (dive_mean < high)].mean()))
        for low, high, _ in WITHIN_DIVE_SD_BINS
    )
    middle_three = np.sort(judges, axis=1)[:, 2:5].sum(axis=1)
    counts = Counter(round(float(d), 1) for d in difficulty)
    return MtlAqaStatistics(
        n_dives=len(final),
        dd_counts=dict(sorted(counts.items())),
        judge_mean=float(judges.mean()),
        dive_mean_sd=float(dive_mean.std()),
        within_dive_sd=float(within_sd.mean()),
        within_dive_sd_bins=bins,
        dive_mean_quantiles=tuple(float(q) for q in np.quantile(dive_mean, DIVE_MEAN_QUANTILE_LEVELS)),
        pearson_dd_dive_mean=float(stats.pearsonr(difficulty, dive_mean)[0]),
        spearman_dd_dive_mean=float(stats.spearmanr(difficulty, dive_mean)[0]),
        spearman_dd_final=float(stats.spearmanr(difficulty, final)[0]),
        final_mean=float(final.mean()),
        final_sd=float(final.std()),
        n_rule_consistent=int(np.sum(np.abs(difficulty * middle_three - final) < 1e-6)),
    )
