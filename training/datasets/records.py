"""One labelled dive, whatever layout it was read from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class DatasetError(ValueError):
    """A dataset on disk does not have the layout or values its loader expects; the message says why."""


@dataclass(frozen=True)
class DiveRecord:
    """A labelled dive.

    ``video`` is a file PyAV can open; ``start_frame``/``end_frame`` (inclusive, 0-based) cut a dive out
    of a longer source video (MTL-AQA's layout); ``None`` means the whole file. ``frames_dir`` is used
    instead of ``video`` for datasets stored as extracted JPEG frames.
    """

    key: str
    final_score: float
    difficulty: float | None = None
    action_class: str | None = None
    judge_scores: tuple[float, ...] | None = None
    video: Path | None = None
    frames_dir: Path | None = None
    start_frame: int | None = None
    end_frame: int | None = None
    extra: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    @property
    def execution_score(self) -> float | None:
        """Final score / difficulty: what CoRe regresses on MTL-AQA (None when difficulty is unknown)."""
        if not self.difficulty:
            return None
        return self.final_score / self.difficulty


@dataclass(frozen=True)
class Split:
    """A dataset's train and test records."""

    train: list[DiveRecord]
    test: list[DiveRecord]
