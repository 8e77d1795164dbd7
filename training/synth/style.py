"""Rendering styles: the training style, and shifted ones a model trained on it has never seen.

A style changes how a dive looks, never what is scored: video (seed, index) has the same dive, judges,
faults and nuisance timing in every style, so a shifted set is the same dives as the training-style set
of that seed, filmed differently. The shifted styles measure whether a model knows when a video is
unlike its training data (``exemplar_bank/familiarity.py``, ``benchmarks/bench_familiarity.py``):

- ``body``: other body proportions (a long-legged, short-bodied diver with a big head and thin limbs);
- ``camera``: a still wide shot instead of the tracking camera (the diver is small and moves in the frame);
- ``look``: an outdoor palette (sky, green water, dark skin, black or white suits) under uneven light
  (brighter on one side, a vignette) with sensor noise;
- ``pool``: a 10 m platform over a tiled wall and a pool with lane ropes;
- ``shifted``: all four at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from training.synth.camera import VIEW_SHORT_SIDE_M
from training.synth.kinematics import BOARD_HEIGHT, DEFAULT_BODY, Body
from training.synth.nuisance import Nuisance, contrasting_colour, hls_colour

LIGHT_GAIN = (1.3, 0.55)
"""Brightness multiplier at the lit and at the dark corner of a ``look`` frame."""
NOISE_SD = 6.0
"""Grey levels of a ``look`` frame's per-pixel sensor noise (standard deviation)."""
TILE_M = 0.5
"""Side of a wall tile in the ``pool`` style."""


@dataclass(frozen=True)
class Style:
    """How dives are drawn; the defaults are the training style (``demo``)."""

    name: str
    body: Body = DEFAULT_BODY
    board_height_m: float = BOARD_HEIGHT
    camera: Literal["tracking", "fixed"] = "tracking"
    view_short_side_m: float = VIEW_SHORT_SIDE_M
    palette: Literal["indoor", "outdoor"] = "indoor"
    lighting: Literal["even", "uneven"] = "even"
    pool: Literal["plain", "tiled"] = "plain"

    @property
    def is_training_style(self) -> bool:
        return self == STYLES["demo"]

    def recolour(self, nuisance: Nuisance, rng: np.random.Generator) -> Nuisance:
        """The nuisance with this style's palette (timing, zoom and shift kept)."""
        if self.palette == "indoor":
            return nuisance
        wall = hls_colour(rng, (0.52, 0.6), (0.75, 0.9), (0.4, 0.7))  # sky
        colours = {
            "wall_rgb": wall,
            "stripe_rgb": hls_colour(rng, (0.25, 0.35), (0.3, 0.45), (0.4, 0.7)),  # trees on the horizon
            "water_rgb": hls_colour(rng, (0.36, 0.45), (0.5, 0.65), (0.3, 0.6)),  # green, lighter than any indoor pool
            "board_rgb": contrasting_colour(rng, wall, lambda r: hls_colour(r, (0.0, 0.06), (0.35, 0.5), (0.6, 0.9))),
            "skin_rgb": contrasting_colour(rng, wall, lambda r: hls_colour(r, (0.04, 0.09), (0.12, 0.25), (0.2, 0.5))),
            "suit_rgb": contrasting_colour(rng, wall, lambda r: hls_colour(r, (0.0, 1.0), (0.03, 0.12), (0.0, 0.1))),
        }
        return replace(nuisance, **colours)

    def light(self, frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """An RGB frame under this style's light: a gain falling from the top-left corner to the bottom
        right (:data:`LIGHT_GAIN`) and Gaussian sensor noise (:data:`NOISE_SD`); unchanged when even."""
        if self.lighting == "even":
            return frame
        height, width = frame.shape[:2]
        rows = np.linspace(0.0, 1.0, height)[:, None]
        cols = np.linspace(0.0, 1.0, width)[None, :]
        gain = LIGHT_GAIN[0] + (LIGHT_GAIN[1] - LIGHT_GAIN[0]) * (rows + cols) / 2
        lit = frame * gain[:, :, None] + rng.normal(0.0, NOISE_SD, frame.shape)
        return np.clip(lit, 0, 255).astype(np.uint8)


OTHER_BODY = Body(torso_m=0.42, neck_m=0.22, head_radius_m=0.16, arm_m=0.55, thigh_m=0.52, shin_m=0.54,
                  torso_width_m=0.22, leg_width_m=0.11, arm_width_m=0.08)
"""About the training body's height (1.86 m standing, against 1.81 m), made of other parts."""
PLATFORM_HEIGHT_M = 10.0
WIDE_VIEW_M = 8.0
"""Short side of the still wide shot over a 3 m board."""
PLATFORM_WIDE_VIEW_M = 15.0
"""Short side of the still wide shot over the 10 m platform."""

STYLES: dict[str, Style] = {
    "demo": Style("demo"),
    "body": Style("body", body=OTHER_BODY),
    "camera": Style("camera", camera="fixed", view_short_side_m=WIDE_VIEW_M),
    "look": Style("look", palette="outdoor", lighting="uneven"),
    "pool": Style("pool", board_height_m=PLATFORM_HEIGHT_M, pool="tiled"),
    "shifted": Style("shifted", body=OTHER_BODY, board_height_m=PLATFORM_HEIGHT_M, camera="fixed",
                     view_short_side_m=PLATFORM_WIDE_VIEW_M, palette="outdoor", lighting="uneven", pool="tiled"),
}
SHIFTED_STYLES = tuple(name for name in STYLES if name != "demo")


def get_style(name: str) -> Style:
    """The style called ``name``; ValueError naming the choices otherwise."""
    if name not in STYLES:
        raise ValueError(f"unknown style {name!r}; choose from {', '.join(STYLES)}")
    return STYLES[name]
