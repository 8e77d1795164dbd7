"""The difficulty degree a caller may give with a dive: one rule for the API, the CLI and the batch runner.

A degree of difficulty multiplies the execution score into the final score, so zero, a negative or an
absurd value would make an absurd score (a division by zero when the model's label is execution). The
bound of 5 is above every degree in the training data here (synthetic dives: 1.6 to 4.1).
"""

from __future__ import annotations

import math

MIN_DIFFICULTY = 0.0  # exclusive
MAX_DIFFICULTY = 5.0  # inclusive


def check_difficulty(value: float) -> float:
    """``value`` if ``0 < value <= 5``, else ValueError saying so in one line."""
    if not (math.isfinite(value) and MIN_DIFFICULTY < value <= MAX_DIFFICULTY):
        raise ValueError(f"difficulty must be above {MIN_DIFFICULTY:g} and at most {MAX_DIFFICULTY:g} "
                         f"(e.g. 3.2), got {value:g}")
    return value
