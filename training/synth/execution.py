"""Turn a dive's noise-free panel mean into execution faults that the renderer makes visible.

The deduction ``10 - mu`` is split over five faults with Dirichlet proportions, and each fault's share
(in points) becomes a physical render parameter through a fixed linear rate:

=================  =====================================================  ==================
fault              what the pixels show                                   rate per point
=================  =====================================================  ==================
under-rotation     the body is short of the declared rotation at entry    12 degrees
looseness          hips (and knees) open wider than the ideal position    7 degrees
entry line         legs off the torso's line at entry ("going over")      10 degrees
splash             splash height, width and droplet count grow            +35 % size
height             the apex is lower than the ideal 1.0 m rise            0.12 m
=================  =====================================================  ==================

So ``mu = 10 - sum(fault / rate)`` is a deterministic function of what is drawn
(:meth:`ExecutionFaults.panel_mean`): a perfect model could read ``mu`` from the pixels, and the
only noise it cannot remove is the judges' (:mod:`.judging`). The rates make the worst dives
(deduction ~7-10 points) clearly broken at 112 x 112: up to ~110 degrees short, ~65 degrees open,
a splash several times the size of a rip entry, an apex up to 0.95 m lower.

The height rate was 0.08 m until the tracking camera (:mod:`.camera`): at its scale (32 px/m in the
112 x 112 view) 0.08 m is 2.6 px per point against the board edge, too little for the nine dives in
ten with under 1.4 height points; 0.12 m makes it 3.8 px. The largest height deduction in 50,000
drawn dives (7.9 points) still leaves a 0.05 m rise, the floor :mod:`.kinematics` keeps.

The Dirichlet concentration 0.7 (below 1) makes most dives have one or two dominant faults, as real
dives do, so a one-point difference is a visible change in one fault rather than a sliver of five.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MAX_SCORE = 10.0

UNDER_ROTATION_DEG_PER_POINT = 12.0
LOOSENESS_DEG_PER_POINT = 7.0
ENTRY_LINE_DEG_PER_POINT = 10.0
SPLASH_GROWTH_PER_POINT = 0.35
APEX_DROP_M_PER_POINT = 0.12
FAULT_CONCENTRATION = 0.7
"""Dirichlet concentration of the split of the deduction over the five faults."""


@dataclass(frozen=True)
class ExecutionFaults:
    """The visible faults of one dive, in render units."""

    under_rotation_deg: float
    """How far the body is short of the declared rotation when it enters the water."""
    looseness_deg: float
    """How much wider the hip (and knee) angles are than the ideal tuck, pike or straight shape."""
    entry_line_deg: float
    """Angle of the legs off the torso's line at entry, towards the rotation ("going over")."""
    splash_scale: float
    """Splash size relative to a clean rip entry (1.0)."""
    apex_drop_m: float
    """How much lower the apex of the flight is than the ideal rise."""

    def deductions(self) -> dict[str, float]:
        """Points each fault costs; they add up to ``10 - mu``."""
        return {
            "under_rotation": self.under_rotation_deg / UNDER_ROTATION_DEG_PER_POINT,
            "looseness": self.looseness_deg / LOOSENESS_DEG_PER_POINT,
            "entry_line": self.entry_line_deg / ENTRY_LINE_DEG_PER_POINT,
            "splash": (self.splash_scale - 1.0) / SPLASH_GROWTH_PER_POINT,
            "height": self.apex_drop_m / APEX_DROP_M_PER_POINT,
        }

    def panel_mean(self) -> float:
        """The noise-free panel mean the faults imply: 10 minus the deductions."""
        return MAX_SCORE - sum(self.deductions().values())

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def faults_from_points(points: np.ndarray) -> ExecutionFaults:
    """Faults for a deduction split ``points`` (5 non-negative values, in the order of the table)."""
    points = np.asarray(points, dtype=float)
    if points.shape != (5,) or np.any(points < 0):
        raise ValueError(f"expected 5 non-negative deduction points, got {points}")
    rotation, looseness, entry_line, splash, height = points
    return ExecutionFaults(
        under_rotation_deg=float(rotation * UNDER_ROTATION_DEG_PER_POINT),
        looseness_deg=float(looseness * LOOSENESS_DEG_PER_POINT),
        entry_line_deg=float(entry_line * ENTRY_LINE_DEG_PER_POINT),
        splash_scale=float(1.0 + splash * SPLASH_GROWTH_PER_POINT),
        apex_drop_m=float(height * APEX_DROP_M_PER_POINT),
    )


def sample_faults(rng: np.random.Generator, panel_mean: float) -> ExecutionFaults:
    """Split the deduction ``10 - mu`` over the five faults with Dirichlet proportions."""
    if not 0.0 <= panel_mean <= MAX_SCORE:
        raise ValueError(f"panel mean must be in [0, {MAX_SCORE}], got {panel_mean}")
    shares = rng.dirichlet(np.full(5, FAULT_CONCENTRATION))
    return faults_from_points((MAX_SCORE - panel_mean) * shares)
