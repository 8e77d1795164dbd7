"""Does a query look like the dives the model knows? Its familiarity to the exemplar bank.

Two checks, reported together as a :class:`models.results.Familiarity`:

1. **Feature distance.** The squared Mahalanobis distance of the query's clip-averaged feature f from
   the bank's reference exemplars (mean mu, covariance Sigma; the Gaussian novelty score of Lee et al.,
   "A simple unified framework for detecting out-of-distribution samples", NeurIPS 2018, with one class)::

       d(f) = (f - mu)^T Sigma^-1 (f - mu)

   ranked against the same distance of the calibration dives, held-out validation dives whose rows
   do not enter mu and Sigma: ``percentile = 100 * #{calibration d < d(f)} / n``. Above
   ``threshold_percentile`` the query is unlike the dives the model was trained on. (Measured against
   k-NN cosine and Euclidean distances on shifted renders, non-dives and fresh dives: docs/familiarity.md.)
2. **Input ranges.** Duration, frame rate, width, height and aspect outside the ranges of the training
   videos (with a relative tolerance :data:`RANGE_TOLERANCE` for rounding in containers).

The calibration is written at training time to ``familiarity.json`` in the model directory
(:func:`calibrate`); mu and Sigma are recomputed from the bank when the model loads. A model without the
file scores as before, without a familiarity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, Field, ValidationError

from exemplar_bank.bank import BankError, ExemplarBank
from models.results import Familiarity

FAMILIARITY_FILE = "familiarity.json"
DEFAULT_THRESHOLD_PERCENTILE = 95.0
RANGE_TOLERANCE = 0.02
"""Relative slack of the input-range checks (a 29.97 fps video is a 30 fps one)."""
MIN_CALIBRATION_DIVES = 20
"""Fewer calibration dives cannot place a 95th percentile."""
RIDGE = 1e-6
"""Added to Sigma's diagonal, times its mean variance, so a feature dimension that never varies cannot make
Sigma singular."""
UNFAMILIAR_MESSAGE = ("this video is unlike the dives this model was trained on: treat the score as unreliable "
                      "(its interval is widened to the range of the bank's own scores)")


class FamiliarityError(BankError):
    """``familiarity.json`` does not belong to this bank; the message says how to remake it."""


class VideoFormat(Protocol):
    """What the input-range checks read of a video (``models.results.VideoSummary`` has it)."""

    fps: float
    width: int
    height: int
    duration_seconds: float


class Range(BaseModel):
    low: float
    high: float

    def contains(self, value: float, tolerance: float = RANGE_TOLERANCE) -> bool:
        return self.low * (1 - tolerance) <= value <= self.high * (1 + tolerance)

    def describe(self, digits: int) -> str:
        low, high = f"{self.low:.{digits}f}", f"{self.high:.{digits}f}"
        return low if low == high else f"{low}-{high}"


class InputRanges(BaseModel):
    """The ranges of the training videos' formats."""

    duration_seconds: Range
    fps: Range
    width: Range
    height: Range
    aspect: Range = Field(description="width / height")
    num_videos: int

    @classmethod
    def of(cls, videos: Sequence[VideoFormat]) -> InputRanges:
        if not videos:
            raise ValueError("input ranges need at least one video")

        def span(values: Iterable[float]) -> Range:
            values = list(values)
            return Range(low=min(values), high=max(values))

        return cls(duration_seconds=span(v.duration_seconds for v in videos), fps=span(v.fps for v in videos),
                   width=span(v.width for v in videos), height=span(v.height for v in videos),
                   aspect=span(v.width / v.height for v in videos), num_videos=len(videos))

    def reasons(self, video: VideoFormat) -> list[str]:
        """One sentence per format property of ``video`` outside its training range."""
        checks = (
            ("duration", video.duration_seconds, self.duration_seconds, 1, " s"),
            ("frame rate", video.fps, self.fps, 0, " fps"),
            ("width", video.width, self.width, 0, " px"),
            ("height", video.height, self.height, 0, " px"),
            ("aspect (width / height)", video.width / video.height, self.aspect, 2, ""),
        )
        return [f"{name} {value:.{digits}f}{unit} outside the trained {allowed.describe(digits)}{unit}"
                for name, value, allowed, digits, unit in checks
                if np.isfinite(value) and value > 0 and not allowed.contains(value)]


class FamiliarityCalibration(BaseModel):
    """``familiarity.json``: the calibration dives and their distances, and the training videos' input ranges."""

    format_version: Literal[1] = 1
    measure: Literal["mahalanobis"] = "mahalanobis"
    threshold_percentile: float = Field(
        DEFAULT_THRESHOLD_PERCENTILE, description="A query above this percentile of the calibration distances is "
        "flagged; (100 - it)% of dives like the calibration dives are flagged by chance.")
    calibration_ids: list[str] = Field(description="Bank exemplars that calibrate (left out of mu and Sigma).")
    calibration_distances: list[float] = Field(description="Their distances d, sorted.")
    calibration_source: str = Field(description="Which dives calibrated it, and how.")
    bank_ids_sha256: str = Field(description="sha256 of the bank's exemplar ids in row order: the bank it "
                                 "belongs to.")
    inputs: InputRanges | None = None
    measured: dict[str, Any] = Field(default_factory=dict, description="Flag rates and interval coverage measured "
                                     "on benchmark sets (benchmarks/bench_familiarity.py), for the record.")

    def save(self, model_dir: Path) -> None:
        (Path(model_dir) / FAMILIARITY_FILE).write_text(self.model_dump_json(indent=1) + "\n")

    @classmethod
    def load(cls, model_dir: Path) -> FamiliarityCalibration | None:
        path = Path(model_dir) / FAMILIARITY_FILE
        if not path.is_file():
            return None
        try:
            return cls.model_validate_json(path.read_text())
        except ValidationError as exc:
            raise FamiliarityError(f"{path} is not a familiarity calibration this code reads ({exc.error_count()} "
                                   "problems); remake it with the model's bank or delete it") from exc


def bank_ids_sha256(bank: ExemplarBank) -> str:
    return hashlib.sha256("\n".join(e.id for e in bank.exemplars).encode()).hexdigest()


class GaussianReference:
    """mu and Sigma^-1 of the bank's pooled features without the calibration rows; ``distance`` is d(f)."""

    def __init__(self, bank: ExemplarBank, calibration_ids: Iterable[str]) -> None:
        left_out = set(calibration_ids)
        rows = [i for i, e in enumerate(bank.exemplars) if e.id not in left_out]
        features = bank.pooled_features[rows].double()
        if len(rows) <= 1:
            raise FamiliarityError("the familiarity check needs bank exemplars beyond its calibration dives")
        self.mean = features.mean(0)
        covariance = torch.cov(features.T)
        covariance += torch.eye(len(covariance), dtype=covariance.dtype) * RIDGE * covariance.diagonal().mean()
        self.precision = torch.linalg.inv(covariance)

    def distance(self, features: torch.Tensor) -> np.ndarray:
        """d(f) of each row of (N, D) ``features``."""
        centred = features.double().reshape(-1, len(self.mean)) - self.mean
        return ((centred @ self.precision) * centred).sum(1).numpy()


def why_not_calibrated(bank: ExemplarBank, calibration_ids: Sequence[str]) -> str | None:
    """Why a familiarity calibration on these dives would mean nothing, or None when it can be made: it needs
    :data:`MIN_CALIBRATION_DIVES` and more reference exemplars than twice the feature dimension (else Sigma is
    rank-deficient and every new dive looks far)."""
    dim = bank.clip_features.shape[2]
    reference = len(bank) - len(set(calibration_ids))
    if len(calibration_ids) < MIN_CALIBRATION_DIVES:
        return f"{len(calibration_ids)} calibration dives (needs {MIN_CALIBRATION_DIVES})"
    if reference <= 2 * dim:
        return f"{reference} reference exemplars for {dim}-dimensional features (needs more than {2 * dim})"
    return None


def calibrate(bank: ExemplarBank, calibration_ids: Sequence[str], inputs: InputRanges | None, source: str,
              threshold_percentile: float = DEFAULT_THRESHOLD_PERCENTILE) -> FamiliarityCalibration:
    """Calibrate on the bank exemplars ``calibration_ids`` (held-out validation dives)."""
    row_of = {e.id: i for i, e in enumerate(bank.exemplars)}
    missing = [i for i in calibration_ids if i not in row_of]
    if missing:
        raise ValueError(f"calibration dives missing from the bank, e.g. {missing[:3]}")
    reason = why_not_calibrated(bank, calibration_ids)
    if reason is not None:
        raise ValueError(f"cannot calibrate familiarity: {reason}")
    reference = GaussianReference(bank, calibration_ids)
    distances = reference.distance(bank.pooled_features[[row_of[i] for i in calibration_ids]])
    return FamiliarityCalibration(threshold_percentile=threshold_percentile, calibration_ids=list(calibration_ids),
                                  calibration_distances=sorted(float(d) for d in distances),
                                  calibration_source=source, bank_ids_sha256=bank_ids_sha256(bank), inputs=inputs)


class FamiliarityCheck:
    """A loaded calibration with its bank: ``assess(feature, video) -> Familiarity``."""

    def __init__(self, calibration: FamiliarityCalibration, bank: ExemplarBank) -> None:
        if calibration.bank_ids_sha256 != bank_ids_sha256(bank):
            raise FamiliarityError(
                f"{FAMILIARITY_FILE} was calibrated on another exemplar bank; remake it with the bank "
                "(`aqa bank build` does, `python -m training.demo_familiarity` for the demo) or delete it")
        self.calibration = calibration
        self.reference = GaussianReference(bank, calibration.calibration_ids)
        self._sorted = np.asarray(calibration.calibration_distances)

    def percentile(self, pooled: torch.Tensor) -> float:
        """Share of calibration distances below the query's, x100."""
        distance = self.reference.distance(pooled)[0]
        return 100.0 * np.searchsorted(self._sorted, distance, side="left") / len(self._sorted)

    def assess(self, pooled: torch.Tensor, video: VideoFormat | None = None) -> Familiarity:
        """The feature check, and the input-range checks when ``video`` is given."""
        percentile = self.percentile(pooled)
        reasons = []
        if percentile > self.calibration.threshold_percentile:
            beyond = "all" if percentile == 100.0 else f"{percentile:.1f}%"
            reasons.append(f"feature far from the bank: farther than {beyond} of the calibration dives "
                           f"(flagged above {self.calibration.threshold_percentile:g}%)")
        if video is not None and self.calibration.inputs is not None:
            reasons += self.calibration.inputs.reasons(video)
        return Familiarity(percentile=round(percentile, 2), in_distribution=not reasons,
                           message=UNFAMILIAR_MESSAGE if reasons else None, reasons=reasons)


def prior_band(labels: np.ndarray, level: float = 0.9) -> tuple[float, float]:
    """The central ``level`` range of the bank's labels: what is known of a score without reading the video."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(labels, [tail, 100 - tail])
    return float(low), float(high)
