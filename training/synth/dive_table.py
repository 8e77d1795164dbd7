"""Dive codes in the FINA style and sampling of dives with the real difficulty-degree frequencies.

A code such as ``"107B"`` reads: group 1 (forward), 0 (no flying phase), 7 half somersaults (3.5),
position B (pike). Groups: 1 forward, 2 back, 3 reverse, 4 inward; positions: A straight, B pike,
C tuck. Twisting (5xxx) and armstand (6xxx) dives are left out: a side-view stick figure cannot show
twists, and armstands do not start from a springboard. A whole number of somersaults ends feet first,
a half number head first.

The difficulty degrees follow the shape of the FINA 3 m table (more somersaults and more open
positions are harder) but are not the official values: they were chosen so that every one of the 23
difficulty degrees seen in MTL-AQA has at least one dive. :func:`sample_dive` draws the difficulty
degree with the real frequencies (:data:`.calibration.DD_COUNTS`) and then one of its dives uniformly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from training.synth.calibration import DD_COUNTS

Position = Literal["A", "B", "C"]

GROUP_NAMES = {1: "forward", 2: "back", 3: "reverse", 4: "inward"}


@dataclass(frozen=True)
class DiveCode:
    """One dive of the table: its code and difficulty degree, and what the code implies."""

    code: str
    difficulty: float

    def __post_init__(self) -> None:
        code = self.code
        if (
            len(code) != 4
            or code[0] not in "1234"
            or code[1] != "0"
            or not code[2].isdigit()
            or code[3] not in "ABC"
            or code[2] == "0"
        ):
            raise ValueError(f"{code!r} is not a non-flying, non-twisting dive code like '107B'")

    @property
    def group(self) -> int:
        return int(self.code[0])

    @property
    def somersaults(self) -> float:
        """Number of somersaults: the third digit counts half somersaults."""
        return int(self.code[2]) / 2

    @property
    def position(self) -> Position:
        return self.code[3]  # type: ignore[return-value]

    @property
    def head_first(self) -> bool:
        """A half-integer number of somersaults enters the water head first."""
        return int(self.code[2]) % 2 == 1

    @property
    def faces_water(self) -> bool:
        """Forward and reverse dives start facing the water, back and inward dives facing the board."""
        return self.group in (1, 3)

    @property
    def rotates_forward(self) -> bool:
        """Forward and inward dives rotate forwards (head towards the chest), back and reverse backwards."""
        return self.group in (1, 4)


DIVE_TABLE: tuple[DiveCode, ...] = tuple(
    DiveCode(code, dd)
    for code, dd in (
        ("101B", 1.5),
        ("101A", 1.6),
        ("102B", 1.6),
        ("103B", 1.8),
        ("103A", 2.0),
        ("104C", 2.1),
        ("105C", 2.3),
        ("105B", 2.4),
        ("106C", 2.6),
        ("106B", 2.8),
        ("107C", 3.0),
        ("107B", 3.1),
        ("109C", 3.8),
        ("109B", 3.9),
        ("201A", 1.9),
        ("203C", 2.0),
        ("203B", 2.3),
        ("204C", 2.1),
        ("205C", 2.8),
        ("205B", 3.0),
        ("206B", 3.2),
        ("207C", 3.3),
        ("207B", 3.6),
        ("301A", 1.9),
        ("302C", 1.8),
        ("303C", 2.1),
        ("303B", 2.4),
        ("304C", 2.7),
        ("305C", 2.8),
        ("305B", 3.0),
        ("306C", 2.9),
        ("306B", 3.2),
        ("307C", 3.4),
        ("307B", 3.7),
        ("401B", 1.5),
        ("402C", 1.9),
        ("403C", 2.0),
        ("404C", 2.4),
        ("405C", 2.7),
        ("405B", 3.0),
        ("407C", 3.2),
        ("407B", 3.5),
        ("409C", 4.1),
    )
)
"""The dives the benchmark renders."""

DIVES_BY_CODE: dict[str, DiveCode] = {dive.code: dive for dive in DIVE_TABLE}

_DD_VALUES = np.array(sorted(DD_COUNTS))
_DD_PROBABILITIES = np.array([DD_COUNTS[dd] for dd in _DD_VALUES], dtype=float)
_DD_PROBABILITIES /= _DD_PROBABILITIES.sum()
_DIVES_BY_DD: dict[float, tuple[DiveCode, ...]] = {
    float(dd): tuple(d for d in DIVE_TABLE if d.difficulty == dd) for dd in _DD_VALUES
}


def dd_cdf_midpoint(difficulty: float) -> float:
    """P(DD < d) + P(DD = d) / 2 under the real frequencies: the DD's rank as a probability in (0, 1).

    :mod:`.judging` turns it into a normal score to correlate the panel mean with difficulty.
    """
    below = _DD_PROBABILITIES[_DD_VALUES < difficulty - 1e-9].sum()
    at = _DD_PROBABILITIES[np.abs(_DD_VALUES - difficulty) < 1e-9].sum()
    if at == 0:
        raise ValueError(f"difficulty {difficulty} does not occur in the calibrated table")
    return float(below + at / 2)


def sample_dive(rng: np.random.Generator) -> DiveCode:
    """A dive whose difficulty degree follows the real MTL-AQA frequencies."""
    dd = float(_DD_VALUES[rng.choice(len(_DD_VALUES), p=_DD_PROBABILITIES)])
    candidates = _DIVES_BY_DD[dd]
    return candidates[int(rng.integers(len(candidates)))]
