"""What scoring returns: the score, its uncertainty and the evidence behind it.

Pydantic models so the CLI, the Celery task, the embedded worker and the HTTP API share one schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

OUT_OF_DISTRIBUTION = "out_of_distribution"
"""Error code of a job refused because its video is unlike the model's training dives (AQA_REFUSE_UNFAMILIAR)."""


class ExemplarVote(BaseModel):
    """One exemplar's vote: its known score plus the relative score the head predicted against it."""

    id: str = Field(description="Exemplar id in the bank.")
    final_score: float = Field(description="The exemplar's final score (judges' result).")
    label: float = Field(description="The exemplar's label in the head's units (execution or final score).")
    relative: float = Field(description="Predicted query label minus exemplar label.")
    vote: float = Field(description="label + relative: this exemplar's estimate of the query label.")
    difficulty: float | None = None
    action_class: str | None = None
    selected_because: str = Field(description="Why this exemplar was chosen (selection tier).")
    evidence: dict[str, Any] = Field(default_factory=dict, description="Head-specific evidence.")


class Interval(BaseModel):
    """The 90% band of the final score, never outside the scores a panel can give (0 to 30 x difficulty)."""

    low: float
    high: float
    level: float = 0.9
    method: Literal["conformal", "votes", "unfamiliar"] = Field(
        description="'conformal': from held-out absolute residuals of this model (coverage measured on "
        "its test split); 'votes': 5th-95th percentile of the exemplar votes (no calibration available); "
        "'unfamiliar': the video is unlike the training dives, so the band is widened to hold the central 90% "
        "of the bank's own scores (at the given difficulty) as well as the conformal band."
    )


class VideoSummary(BaseModel):
    codec: str
    width: int
    height: int
    fps: float
    duration_seconds: float
    frame_count: int
    frames_read: tuple[int, int] = Field(
        description="First and last source frame the model read (0-based): the whole video, the given range, or "
        "the span the motion localiser found.")
    seconds_read: tuple[float, float] | None = Field(
        default=None, description="The same span in seconds after the first frame (None without timing).")


class Familiarity(BaseModel):
    """How familiar a scored video is to the model (the ``familiarity`` of a score result)."""

    percentile: float = Field(
        description="How unusual the video's features are, as a percentile (0-100) of the model's calibration "
        "dives: 50 is a typical training-style dive, 100 farther from the bank than every calibration dive.")
    in_distribution: bool = Field(
        description="False when the features are beyond the model's threshold percentile or the video's duration, "
        "frame rate, resolution or aspect lie outside what it was trained on.")
    message: str | None = Field(default=None, description="What to make of it, in plain words, when not in "
                                "distribution.")
    reasons: list[str] = Field(default_factory=list, description="Each check the video failed, e.g. 'frame rate "
                               "12 fps outside the trained 25 fps'.")


class ModelRef(BaseModel):
    id: str
    version: str
    head: str
    fingerprint: str


class ScoreResult(BaseModel):
    """The result of scoring one dive video."""

    score: float = Field(description="Predicted final score (execution x difficulty when difficulty is used).")
    interval: Interval
    execution_score: float | None = Field(
        default=None, description="Predicted final score / difficulty (sum of the three counted judges)."
    )
    difficulty: float | None = Field(default=None, description="Difficulty degree used.")
    difficulty_source: Literal["given", "estimated", "not_used"] = "not_used"
    action_class: str | None = None
    vote_spread: float = Field(description="Standard deviation of the exemplar votes, in score units.")
    exemplar_free: bool = Field(False, description="True for heads that score without exemplars (PCLN).")
    votes: list[ExemplarVote] = Field(description="The exemplars that voted (empty for exemplar-free heads).")
    evidence: dict[str, Any] = Field(default_factory=dict, description="Head-specific evidence for the query.")
    model: ModelRef
    video: VideoSummary | None = None
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per stage.")
    batch_jobs: int = Field(
        1, ge=1, description="Videos whose clips went through the backbone in the same forward pass as this one "
        "(dynamic batching); the `features` timing is an equal share of that pass.")
    familiarity: Familiarity | None = Field(
        default=None, description="How much the video looks like the dives the model was trained on (None for a "
        "model without a familiarity calibration).")
