"""Where the diver, the board and the splash are at each instant, in metres (no drawing here).

World frame: x points away from the board (the board tip is at x = 0), y up, the water surface at
y = 0, the board top at 3 m. Time ``t`` is physical seconds from take-off: the board press occupies
``[-PRESS_SECONDS, 0]``, the flight ``[0, flight_seconds]``, and the body breaks the water at
``flight_seconds``.

The body is a planar stick figure (torso, head, one arm, one leg of thigh and shin: the two sides of a
side-on diver overlap). Its pose is three joint angles; the flight holds the dive's position
(tuck/pike/straight, loosened by the looseness fault) from shortly after take-off until it opens for
the entry. The somersault angle grows at a rate proportional to 1 / (moment of inertia), as angular
momentum is conserved in flight, so tucked dives spin fast and open dives slowly; it is scaled so the
body has turned the declared somersaults minus the under-rotation fault when it has opened, and
stays there for the rest of the fall. (Real divers stop most of the residual spin on opening; holding
the final line constant also shows the rotation fault as a steady tilt over several frames.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from training.synth.dive_table import DiveCode
from training.synth.execution import ExecutionFaults

GRAVITY = 9.81
BOARD_HEIGHT = 3.0
BOARD_FULCRUM_X = -2.0
"""The board bends between its fulcrum and the tip."""
FOOT_X = -0.12
"""Where the diver's ankle stands on the board before take-off."""
ENTRY_TRAVEL_M = 1.3
"""Horizontal distance the centre of mass travels from take-off to the water."""
IDEAL_APEX_RISE_M = 1.0
"""Rise of the centre of mass above its take-off height in a dive without height fault."""
PRESS_SECONDS = 0.7
"""Arm swing and board press before take-off."""
PRESS_HIP_DEG, PRESS_KNEE_DEG = 35.0, 55.0
"""Deepest crouch of the press."""
BOARD_THICKNESS_M = 0.12
"""The board's top surface is at BOARD_HEIGHT (plus its bend)."""
BOARD_PRESS_DEPTH_M = 0.3
BOARD_RECOIL_M = 0.1

TORSO_M, NECK_M, HEAD_RADIUS_M, ARM_M, THIGH_M, SHIN_M = 0.55, 0.2, 0.13, 0.65, 0.45, 0.48
"""Segment lengths (the neck runs from the shoulder to the head's centre): standing height 1.81 m."""
TORSO_WIDTH_M, LEG_WIDTH_M, ARM_WIDTH_M = 0.32, 0.2, 0.14
"""Thickness of the drawn body parts (the torso is the widest)."""
_MASS = {"torso": 0.43, "head": 0.08, "arm": 0.1, "thigh": 0.22, "shin": 0.17}


@dataclass(frozen=True)
class Body:
    """The stick figure's segment lengths and drawn thicknesses, in metres (mass shares stay :data:`_MASS`)."""

    torso_m: float = TORSO_M
    neck_m: float = NECK_M
    head_radius_m: float = HEAD_RADIUS_M
    arm_m: float = ARM_M
    thigh_m: float = THIGH_M
    shin_m: float = SHIN_M
    torso_width_m: float = TORSO_WIDTH_M
    leg_width_m: float = LEG_WIDTH_M
    arm_width_m: float = ARM_WIDTH_M


DEFAULT_BODY = Body()
"""The body every dive of the training style has."""

TUCK_HIP_DEG, TUCK_KNEE_DEG, PIKE_HIP_DEG = 135.0, 145.0, 150.0
"""Ideal positions: hip flexion brings the thigh forward of the torso line, knee flexion folds the
shin back from the thigh line."""
POSITION_IN = 0.15
"""Fraction of the flight spent moving from the take-off line into the position."""
OPENING_START, OPENING_END = 0.72, 0.86
"""Fractions of the flight between which the diver opens from the position to the entry line."""

SPLASH_RISE_M = 0.4
"""Highest droplet rise of a clean (scale 1) entry; grows linearly with the splash scale."""
SPLASH_HALF_WIDTH_M = 0.18
"""Half width of the foam patch and of the droplets' launch zone for a clean entry; grows with scale."""
SPLASH_SPREAD_MPS = 0.2
"""Standard deviation of a clean entry's droplet sideways speed (clipped at 2 sd); grows with
sqrt(scale). (0.35 before the tracking camera: the worst splash then spread 4.5 m, wider than the
camera's view; at 0.2 it is at most 3.2 m wide.)"""
SPLASH_DROPLETS = 14
"""Droplets of a clean entry; grows linearly with the splash scale."""
FOAM_SECONDS = 1.6
"""How long the foam patch takes to fade."""
FOAM_GROWTH_SECONDS = 0.4
"""How long the foam patch takes to reach its widest."""
ROTATION_TABLE_SAMPLES = 256
"""Flight fractions at which the somersault angle is tabulated (interpolated in between)."""


@dataclass(frozen=True)
class Pose:
    """Joint angles in radians: hip flexion, knee flexion, shoulder (0 = arm hanging, pi = overhead)."""

    hip: float
    knee: float
    shoulder: float

    def blend(self, other: Pose, weight: float) -> Pose:
        return Pose(
            hip=self.hip + (other.hip - self.hip) * weight,
            knee=self.knee + (other.knee - self.knee) * weight,
            shoulder=self.shoulder + (other.shoulder - self.shoulder) * weight,
        )


JOINTS = ("hip", "shoulder", "head", "hand", "knee", "ankle")


def body_frame_joints(pose: Pose, body: Body = DEFAULT_BODY) -> np.ndarray:
    """Joint positions (6, 2) in the body frame: hip at the origin, torso along +y, facing +x."""
    hip = np.zeros(2)
    shoulder = np.array([0.0, body.torso_m])
    head = shoulder + np.array([0.0, body.neck_m])
    hand = shoulder + body.arm_m * np.array([math.sin(pose.shoulder), -math.cos(pose.shoulder)])
    knee = hip + body.thigh_m * np.array([math.sin(pose.hip), -math.cos(pose.hip)])
    shin_angle = pose.hip - pose.knee
    ankle = knee + body.shin_m * np.array([math.sin(shin_angle), -math.cos(shin_angle)])
    return np.stack([hip, shoulder, head, hand, knee, ankle])


def _mass_points(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hip, shoulder, head, hand, knee, ankle = joints
    points = np.stack(
        [(hip + shoulder) / 2, head, (shoulder + hand) / 2, (hip + knee) / 2, (knee + ankle) / 2]
    )
    masses = np.array([_MASS["torso"], _MASS["head"], _MASS["arm"], _MASS["thigh"], _MASS["shin"]])
    return points, masses


def centre_of_mass(joints: np.ndarray) -> np.ndarray:
    points, masses = _mass_points(joints)
    return masses @ points / masses.sum()


def moment_of_inertia(pose: Pose, body: Body = DEFAULT_BODY) -> float:
    """Point-mass moment of inertia about the centre of mass (arbitrary units)."""
    points, masses = _mass_points(body_frame_joints(pose, body))
    offsets = points - masses @ points / masses.sum()
    return float(masses @ (offsets**2).sum(axis=1) + 0.01)


def _arm_reaching(hip: float, knee: float, body: Body) -> float:
    """Shoulder angle that points the arm at the middle of the shin (hands holding the legs)."""
    joints = body_frame_joints(Pose(hip, knee, 0.0), body)
    target = (joints[4] + joints[5]) / 2 - joints[1]
    return math.atan2(target[0], -target[1])


def position_pose(position: str, looseness_deg: float, body: Body = DEFAULT_BODY) -> Pose:
    """The held flight position, opened by ``looseness_deg`` at the hip (and knee).

    Tuck opens both hip and knee; pike opens the hip and bends the knees (the classic loose pike);
    straight bends at the hip and, by 0.6 of it, at the knee.
    """
    loose = math.radians(looseness_deg)
    if position == "C":
        hip = math.radians(TUCK_HIP_DEG) - loose
        knee = max(0.0, math.radians(TUCK_KNEE_DEG) - loose)
        return Pose(hip, knee, _arm_reaching(hip, knee, body))
    if position == "B":
        hip = math.radians(PIKE_HIP_DEG) - loose
        return Pose(hip, 0.8 * loose, _arm_reaching(hip, 0.8 * loose, body))
    if position == "A":
        return Pose(loose, 0.6 * loose, 0.0)
    raise ValueError(f"unknown position {position!r}")


TAKEOFF_POSE = Pose(0.0, 0.0, math.pi)
STANDING_POSE = Pose(0.0, 0.0, 0.0)


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class SplashDroplet:
    launch_s: float
    """Seconds after the body breaks the water."""
    x_m: float
    vx: float
    vy: float
    radius_m: float


class DiveMotion:
    """The kinematics of one dive: body joints, board bend and splash as functions of time.

    ``body`` and ``board_height`` default to the training style's; the shifted styles of
    :mod:`.style` change them.
    """

    def __init__(self, dive: DiveCode, faults: ExecutionFaults, splash_rng: np.random.Generator,
                 body: Body = DEFAULT_BODY, board_height: float = BOARD_HEIGHT):
        self.dive = dive
        self.faults = faults
        self.body = body
        self.board_height = board_height
        self.facing = 1.0 if dive.faces_water else -1.0
        # Forward rotation turns the body-frame figure (facing +x) clockwise, backward anticlockwise.
        self.rotation_sign = -1.0 if dive.rotates_forward else 1.0
        self.held_pose = position_pose(dive.position, faults.looseness_deg, body)
        over = math.radians(faults.entry_line_deg)
        # The legs "go over": they lead the rotation, i.e. towards the back for forward rotation.
        entry_hip = -over if dive.rotates_forward else over
        self.entry_pose = Pose(entry_hip, 0.0, math.pi if dive.head_first else 0.0)
        self.total_rotation = 2.0 * math.pi * dive.somersaults - math.radians(faults.under_rotation_deg)

        standing = body_frame_joints(TAKEOFF_POSE, body)
        com_above_ankle = (centre_of_mass(standing) - standing[5]) * np.array([self.facing, 1.0])
        takeoff_com = com_above_ankle + np.array([FOOT_X, board_height])
        self.takeoff_com = takeoff_com
        rise = max(0.05, IDEAL_APEX_RISE_M - faults.apex_drop_m)
        self.vy0 = math.sqrt(2.0 * GRAVITY * rise)
        # The flight ends when the lowest point of the entry line touches the water.
        entry_joints = self._oriented(self.entry_pose, self.total_rotation)
        lowest = int(np.argmin(entry_joints[:, 1]))
        drop = takeoff_com[1] + float(entry_joints[lowest, 1])
        self.flight_seconds = (self.vy0 + math.sqrt(self.vy0**2 + 2.0 * GRAVITY * drop)) / GRAVITY
        self.vx = ENTRY_TRAVEL_M / self.flight_seconds
        self.contact_x = float(entry_joints[lowest, 0] + self.com(self.flight_seconds)[0])
        self.droplets = self._sample_droplets(splash_rng)

    # --- flight -------------------------------------------------------------------------------
    def flight_pose(self, progress: float) -> Pose:
        """Pose at ``progress`` = fraction of the flight (0 take-off, 1 water)."""
        if progress < POSITION_IN:
            return TAKEOFF_POSE.blend(self.held_pose, _smoothstep(progress / POSITION_IN))
        if progress < OPENING_START:
            return self.held_pose
        opening = (progress - OPENING_START) / (OPENING_END - OPENING_START)
        return self.held_pose.blend(self.entry_pose, _smoothstep(opening))

    @cached_property
    def _rotation_table(self) -> np.ndarray:
        """Cumulative somersault angle at ``ROTATION_TABLE_SAMPLES`` evenly spaced flight fractions.

        Computed on first use: the flight time, the entry and the splash do not need it, so a motion built
        only to know the video's length (:func:`.scene.sample_synth_dive`) skips its cost.
        """
        progress = np.linspace(0.0, 1.0, ROTATION_TABLE_SAMPLES)
        rate = np.array([1.0 / moment_of_inertia(self.flight_pose(p), self.body) for p in progress])
        rate[progress > OPENING_END] = 0.0
        cumulative = np.concatenate([[0.0], np.cumsum((rate[1:] + rate[:-1]) / 2)])
        return cumulative / cumulative[-1] * self.total_rotation

    def rotation(self, progress: float) -> float:
        progress = min(1.0, max(0.0, progress))
        table = self._rotation_table
        return float(np.interp(progress, np.linspace(0.0, 1.0, len(table)), table))

    def com(self, t: float) -> np.ndarray:
        """Centre of mass on its ballistic path (also after the entry, where the water hides it)."""
        return self.takeoff_com + np.array([self.vx * t, self.vy0 * t - GRAVITY * t * t / 2])

    def _oriented(self, pose: Pose, angle: float) -> np.ndarray:
        """Joints of ``pose`` turned by ``angle`` about the centre of mass, in world axes (COM at 0)."""
        joints = body_frame_joints(pose, self.body)
        joints = joints - centre_of_mass(joints)
        signed = self.rotation_sign * angle
        c, s = math.cos(signed), math.sin(signed)
        rotated = joints @ np.array([[c, s], [-s, c]])
        rotated[:, 0] *= self.facing
        return rotated

    # --- whole timeline -----------------------------------------------------------------------
    def joints(self, t: float) -> np.ndarray:
        """World positions (6, 2) of :data:`JOINTS` at time ``t``."""
        if t >= 0.0:
            progress = t / self.flight_seconds
            angle = self.rotation(progress)
            return self._oriented(self.flight_pose(min(progress, 1.0)), angle) + self.com(t)
        press = (t + PRESS_SECONDS) / PRESS_SECONDS
        if press <= 0.0:
            pose = STANDING_POSE
        else:
            crouch = math.sin(math.pi * press)
            arms_up = _smoothstep(press / 0.8)  # the arms are overhead a little before take-off
            pose = Pose(
                math.radians(PRESS_HIP_DEG) * crouch, math.radians(PRESS_KNEE_DEG) * crouch, math.pi * arms_up
            )
        joints = body_frame_joints(pose, self.body)
        joints[:, 0] *= self.facing
        foot = np.array([FOOT_X, self.board_height + self.board_deflection(FOOT_X, t)])
        return joints - joints[5] + foot

    def board_deflection(self, x: float, t: float) -> float:
        """Vertical bend of the board at ``x`` (negative = down)."""
        if x <= BOARD_FULCRUM_X:
            return 0.0
        shape = ((x - BOARD_FULCRUM_X) / -BOARD_FULCRUM_X) ** 2
        if -PRESS_SECONDS < t < 0.0:
            return -BOARD_PRESS_DEPTH_M * math.sin(math.pi * (t + PRESS_SECONDS) / PRESS_SECONDS) * shape
        if t >= 0.0:
            return BOARD_RECOIL_M * math.sin(2 * math.pi * 2.5 * t) * math.exp(-3.0 * t) * shape
        return 0.0

    # --- splash -------------------------------------------------------------------------------
    def _sample_droplets(self, rng: np.random.Generator) -> tuple[SplashDroplet, ...]:
        scale = self.faults.splash_scale
        count = round(SPLASH_DROPLETS * scale)
        rises = SPLASH_RISE_M * scale * rng.uniform(0.3, 1.0, count)
        return tuple(
            SplashDroplet(
                launch_s=float(rng.uniform(0.0, 0.18)),
                x_m=float(self.contact_x + rng.uniform(-0.5, 0.5) * SPLASH_HALF_WIDTH_M * scale),
                vx=float(np.clip(rng.normal(), -2.0, 2.0) * SPLASH_SPREAD_MPS * math.sqrt(scale)),
                vy=float(math.sqrt(2.0 * GRAVITY * rise)),
                radius_m=float(rng.uniform(0.04, 0.08) * math.sqrt(scale)),
            )
            for rise in rises
        )

    def droplets_at(self, t: float) -> list[tuple[float, float, float]]:
        """(x, y, radius) of the droplets in the air at time ``t``."""
        out = []
        for d in self.droplets:
            age = t - self.flight_seconds - d.launch_s
            if age < 0.0:
                continue
            y = d.vy * age - GRAVITY * age * age / 2
            if y < 0.0:
                continue
            out.append((d.x_m + d.vx * age, y, d.radius_m))
        return out

    def splash_bounds(self) -> tuple[float, float, float]:
        """(left x, right x, top y) of everything the splash ever covers above the water.

        Every droplet's whole arc (its radius included) and the foam at its widest; the tracking
        camera keeps this box in view from the entry on.
        """
        foam_half_width = self._foam_half_width(FOAM_GROWTH_SECONDS)
        left, right, top = self.contact_x - foam_half_width, self.contact_x + foam_half_width, 0.0
        for d in self.droplets:
            landing_x = d.x_m + d.vx * 2.0 * d.vy / GRAVITY
            left = min(left, d.x_m - d.radius_m, landing_x - d.radius_m)
            right = max(right, d.x_m + d.radius_m, landing_x + d.radius_m)
            top = max(top, d.vy**2 / (2.0 * GRAVITY) + d.radius_m)
        return left, right, top

    def foam_at(self, t: float) -> tuple[float, float, float] | None:
        """(centre x, half width, whiteness 0..1) of the foam patch on the surface, or None."""
        age = t - self.flight_seconds
        if age < 0.0 or age > FOAM_SECONDS:
            return None
        return self.contact_x, self._foam_half_width(age), 1.0 - age / FOAM_SECONDS

    def _foam_half_width(self, age: float) -> float:
        """The foam grows from 0.6 to 1.4 x the splash half width in its first FOAM_GROWTH_SECONDS."""
        growth = 0.6 + 0.8 * min(1.0, age / FOAM_GROWTH_SECONDS)
        return SPLASH_HALF_WIDTH_M * self.faults.splash_scale * growth
