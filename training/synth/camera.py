"""The broadcast-style tracking camera: where each frame looks, and how metres become pixels.

The former fixed wide shot of the board, the 3 m drop and the water drew 16 px per metre in a
model's 112 x 112 view: too small for execution faults of a few degrees. Like a broadcast camera,
this one zooms in (the frame's short side spans :data:`VIEW_SHORT_SIDE_M`: 32 px per metre in the
model view, a standing diver 59-61 px tall, measured from the pixels) and follows the diver. The
renderer knows the whole motion in advance, so the track is computed over every frame at once. The
framing rule, per frame:

1. **Must-see box**, in world metres: the body above the water (joints padded by half the torso
   width); from the start until the centre of mass falls back to its take-off height (past the
   apex) also the board tip (its top surface, the upper half of its thickness and its last
   :data:`BOARD_TIP_SHOWN_M`), so the rise to the apex shows against the board edge; from the
   moment the body touches the water also the water line with :data:`WATER_SHOWN_BELOW_M` of water
   under it and the whole splash (every droplet's arc, the widest foam:
   :meth:`.kinematics.DiveMotion.splash_bounds`).
2. **Preferred centre**: the centre of mass until the body touches the water; afterwards the entry
   framing: the water line :data:`ENTRY_WATER_LINE_FRACTION` of the crop above its bottom edge and
   the splash centred horizontally.
3. **Track**: clamp the preferred centre so the must-see box lies inside the *safe window*, smooth it
   with a Gaussian over time (:data:`TRACK_SIGMA_Y_S` vertically; horizontally :data:`TRACK_SIGMA_X_S`,
   so the camera pans less than it tilts), then clamp again: the framing constraints are hard, the
   smoothness is not. A box larger than the safe window would be centred in it; the tests show no
   dive of the table, with any fault at its worst, needs that.

The safe window is the model's centre crop (:data:`MODEL_RESIZE`, :data:`MODEL_CROP`) shrunk by the
most extreme nuisance zoom and shift, so whatever camera nuisance a video draws, the must-see box
stays inside what the model sees. The track ignores the nuisance; the
nuisance zoom and shift are applied around the tracked framing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from training.synth.kinematics import (
    BOARD_THICKNESS_M,
    GRAVITY,
    IDEAL_APEX_RISE_M,
    TORSO_WIDTH_M,
    DiveMotion,
    centre_of_mass,
)
from training.synth.nuisance import MAX_SHIFT, ZOOM_RANGE

MODEL_RESIZE, MODEL_CROP = 128, 112
"""The model input the framing is made for (the demo model's): short side resized to 128, centre
112 x 112 cropped."""
CROP_FRACTION = MODEL_CROP / MODEL_RESIZE
"""Share of the frame's short side the centre crop keeps (both directions)."""

VIEW_SHORT_SIDE_M = 4.0
"""Metres the frame's short side spans at nuisance zoom 1 (the height of a landscape frame).

The smallest in 0.1 m steps that passes the framing rule: a straight dive's upright body at the
apex reaches 3.2 m above the board's edge, and the safe window spans 0.81 x this."""
BODY_PAD_M = TORSO_WIDTH_M / 2
"""The farthest any drawn body part reaches beyond its joints."""
BOARD_TIP_SHOWN_M = 0.5
"""Length of board behind the tip that must be in view while the board must be."""
WATER_SHOWN_BELOW_M = 0.25
"""Water that must be in view under the water line from the entry on."""
ENTRY_WATER_LINE_FRACTION = 0.25
"""Preferred height of the water line after the entry, as a fraction of the crop above its bottom."""
TRACK_SIGMA_Y_S, TRACK_SIGMA_X_S = 0.1, 0.25
"""Gaussian smoothing of the track (physical seconds)."""


def safe_half_window_m(view_short_side_m: float = VIEW_SHORT_SIDE_M) -> float:
    """Half side (metres) of the part of the centre crop that stays in view at any nuisance zoom/shift."""
    return (CROP_FRACTION / 2 - MAX_SHIFT) * view_short_side_m / ZOOM_RANGE[1]


@dataclass(frozen=True)
class Camera:
    """Maps world metres to pixel (column, row) for one frame."""

    width: int
    height: int
    centre_m: tuple[float, float]
    """World point (x, y) at the frame centre before the nuisance shift."""
    zoom: float = 1.0
    shift_x: float = 0.0
    """Nuisance shift as a fraction of the short side (positive: the scene moves right)."""
    shift_y: float = 0.0
    view_short_side_m: float = VIEW_SHORT_SIDE_M
    """Metres the short side spans at zoom 1 (a shifted style frames wider or tighter)."""

    @property
    def pixels_per_m(self) -> float:
        return min(self.width, self.height) / self.view_short_side_m * self.zoom

    def to_pixels(self, points_m: np.ndarray) -> np.ndarray:
        """(N, 2) world metres -> (N, 2) pixel (column, row) floats."""
        side = min(self.width, self.height)
        points = np.asarray(points_m, dtype=float).reshape(-1, 2)
        cx = self.width / 2 + self.shift_x * side
        cy = self.height / 2 + self.shift_y * side
        px = cx + (points[:, 0] - self.centre_m[0]) * self.pixels_per_m
        py = cy - (points[:, 1] - self.centre_m[1]) * self.pixels_per_m
        return np.stack([px, py], axis=1)

    def row_of(self, y_m: float) -> float:
        return float(self.to_pixels(np.array([[0.0, y_m]]))[0, 1])


@dataclass(frozen=True)
class MustSee:
    """Per frame (arrays of N), the world box the framing rule keeps in view."""

    left: np.ndarray
    right: np.ndarray
    bottom: np.ndarray
    top: np.ndarray


def must_see_boxes(motion: DiveMotion, times: np.ndarray, joints: np.ndarray) -> MustSee:
    """Step 1 of the framing rule for frames at physical ``times`` with body ``joints`` (N, 6, 2)."""
    pad = motion.body.torso_width_m / 2  # BODY_PAD_M for the training style's body
    left = joints[:, :, 0].min(axis=1) - pad
    right = joints[:, :, 0].max(axis=1) + pad
    bottom = np.maximum(joints[:, :, 1].min(axis=1) - pad, 0.0)
    top = joints[:, :, 1].max(axis=1) + pad
    # A body wholly under the water is not drawn (and drifts on underwater): it need not be seen.
    submerged = top <= 0.0
    left[submerged], right[submerged] = np.inf, -np.inf
    bottom[submerged], top[submerged] = np.inf, -np.inf

    back_at_takeoff_height_s = 2.0 * motion.vy0 / GRAVITY
    for k in np.flatnonzero(times <= back_at_takeoff_height_s):
        board_top = motion.board_height + motion.board_deflection(0.0, float(times[k]))
        left[k] = min(left[k], -BOARD_TIP_SHOWN_M)
        right[k] = max(right[k], 0.0)
        bottom[k] = min(bottom[k], board_top - BOARD_THICKNESS_M / 2)
        top[k] = max(top[k], board_top)

    entered = times >= motion.flight_seconds
    splash_left, splash_right, splash_top = motion.splash_bounds()
    left[entered] = np.minimum(left[entered], splash_left)
    right[entered] = np.maximum(right[entered], splash_right)
    bottom[entered] = np.minimum(bottom[entered], -WATER_SHOWN_BELOW_M)
    top[entered] = np.maximum(top[entered], splash_top)
    return MustSee(left, right, bottom, top)


def _clamp(preferred: np.ndarray, low_edge: np.ndarray, high_edge: np.ndarray, half: float) -> np.ndarray:
    """Centres as close to ``preferred`` as keeps [low_edge, high_edge] within +-half of them."""
    low, high = high_edge - half, low_edge + half
    return np.where(low <= high, np.clip(preferred, low, high), (low_edge + high_edge) / 2)


def track_camera(
    motion: DiveMotion, times: np.ndarray, joints: np.ndarray, samples_per_second: float,
    view_short_side_m: float = VIEW_SHORT_SIDE_M,
) -> np.ndarray:
    """(N, 2) world centre of each frame (the framing rule of the module docstring).

    ``times`` are the frames' physical seconds (evenly spaced, ``samples_per_second`` frames per
    physical second: fps x tempo), ``joints`` the body's (N, 6, 2) joints at those times.
    """
    box = must_see_boxes(motion, times, joints)
    half = safe_half_window_m(view_short_side_m)
    entered = times >= motion.flight_seconds
    com = np.stack([centre_of_mass(frame_joints) for frame_joints in joints])
    splash_left, splash_right, _ = motion.splash_bounds()
    entry_y = CROP_FRACTION * view_short_side_m * (0.5 - ENTRY_WATER_LINE_FRACTION)
    preferred_x = np.where(entered, (splash_left + splash_right) / 2, com[:, 0])
    preferred_y = np.where(entered, entry_y, com[:, 1])

    centre = []
    for preferred, low_edge, high_edge, sigma_s in (
        (preferred_x, box.left, box.right, TRACK_SIGMA_X_S),
        (preferred_y, box.bottom, box.top, TRACK_SIGMA_Y_S),
    ):
        clamped = _clamp(preferred, low_edge, high_edge, half)
        smooth = gaussian_filter1d(clamped, sigma_s * samples_per_second, mode="nearest")
        centre.append(_clamp(smooth, low_edge, high_edge, half))
    return np.stack(centre, axis=1)


def fixed_camera(motion: DiveMotion, count: int) -> np.ndarray:
    """(count, 2) one world centre for every frame: a still wide shot from the board tip to the entry.

    It looks at the middle of the box spanning the board tip, the diver's highest reach and the water
    under the splash; frame it with a view (``Camera.view_short_side_m``) of that box's height or more.
    """
    _, splash_right, _ = motion.splash_bounds()
    top = motion.takeoff_com[1] + IDEAL_APEX_RISE_M + motion.body.torso_m + motion.body.arm_m
    centre = ((-BOARD_TIP_SHOWN_M + max(splash_right, motion.contact_x)) / 2, (top - WATER_SHOWN_BELOW_M) / 2)
    return np.tile(np.array(centre), (count, 1))
