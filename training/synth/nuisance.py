"""What varies between synthetic videos without changing the score.

Colours of the scene and the diver, a small camera shift and zoom, the playback tempo (as if filmed at
a slightly different slow-motion factor) and how long the video runs before and after the action.
Every value is drawn from its own random stream, independent of the dive and its execution, so a
model that scores the nuisances learns nothing.

Colours are drawn so the diver and the board (the reference for the apex height) stay visible: skin,
suit and board differ from the background by at least :data:`MIN_LUMA_CONTRAST` in luma, and the
background is never as light as the white splash.
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass

import numpy as np

Rgb = tuple[int, int, int]

MIN_SECONDS, MAX_SECONDS = 3.0, 5.0
"""Range of a sampled video's length."""
MIN_LEAD_SECONDS = 0.3
"""Lead-in plus lead-out never shorter than this."""
TEMPO_RANGE = (0.85, 1.15)
"""Video seconds per physical second (above 1 = slow motion)."""
ZOOM_RANGE = (0.96, 1.04)
MAX_SHIFT = 0.015
"""Largest camera shift, as a fraction of the frame's short side."""
MIN_LUMA_CONTRAST = 50.0


@dataclass(frozen=True)
class Nuisance:
    """Score-free appearance and timing of one video."""

    wall_rgb: Rgb
    stripe_rgb: Rgb
    stripe_height_m: float
    water_rgb: Rgb
    board_rgb: Rgb
    skin_rgb: Rgb
    suit_rgb: Rgb
    zoom: float
    shift_x: float
    """Camera shift as a fraction of the short side (positive: the scene moves right)."""
    shift_y: float
    tempo: float
    lead_in_s: float
    lead_out_s: float

    def duration_s(self, action_seconds: float) -> float:
        """Video length for an action lasting ``action_seconds`` physical seconds."""
        return self.lead_in_s + self.tempo * action_seconds + self.lead_out_s

    def with_duration(self, seconds: float, action_seconds: float) -> Nuisance:
        """The same look, with lead-in and lead-out resized so the video lasts ``seconds``."""
        leads = seconds - self.tempo * action_seconds
        if leads < 0:
            raise ValueError(
                f"a {seconds:.2f} s video cannot hold this dive: the action alone lasts "
                f"{self.tempo * action_seconds:.2f} s at tempo {self.tempo:.2f}"
            )
        share = self.lead_in_s / max(self.lead_in_s + self.lead_out_s, 1e-9)
        return _replace(self, lead_in_s=leads * share, lead_out_s=leads * (1 - share))

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in asdict(self).items():
            out[key] = "#{:02x}{:02x}{:02x}".format(*tuple(value)) if key.endswith("_rgb") else value
        return out


def _replace(nuisance: Nuisance, **changes: float) -> Nuisance:
    return Nuisance(**{**asdict(nuisance), **changes})


def luma(rgb: Rgb) -> float:
    """Rec. 601 luma, 0..255."""
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b


def hls_colour(
    rng: np.random.Generator, hue: tuple[float, float], light: tuple[float, float], sat: tuple[float, float]
) -> Rgb:
    r, g, b = colorsys.hls_to_rgb(rng.uniform(*hue) % 1.0, rng.uniform(*light), rng.uniform(*sat))
    return round(r * 255), round(g * 255), round(b * 255)


def contrasting_colour(rng: np.random.Generator, background: Rgb, draw) -> Rgb:
    """Draw colours with ``draw`` until one differs from ``background`` by the minimum luma contrast."""
    for _ in range(1000):
        colour = draw(rng)
        if abs(luma(colour) - luma(background)) >= MIN_LUMA_CONTRAST:
            return colour
    raise RuntimeError(f"no colour contrasts with background {background}: the colour ranges are wrong")


def sample_nuisance(rng: np.random.Generator, action_seconds: float) -> Nuisance:
    """Draw every nuisance for a dive whose action lasts ``action_seconds`` physical seconds."""
    light_wall = rng.random() < 0.5
    wall_light = (0.55, 0.72) if light_wall else (0.1, 0.3)
    wall = hls_colour(rng, (0.0, 1.0), wall_light, (0.0, 0.35))
    stripe = hls_colour(rng, (0.0, 1.0), wall_light, (0.2, 0.7))
    water = hls_colour(rng, (0.45, 0.62), (0.25, 0.5), (0.4, 0.8))
    board = contrasting_colour(rng, wall, lambda r: hls_colour(r, (0.0, 1.0), (0.3, 0.9), (0.0, 0.4)))
    skin = contrasting_colour(rng, wall, lambda r: hls_colour(r, (0.02, 0.1), (0.25, 0.75), (0.3, 0.6)))
    suit = contrasting_colour(rng, wall, lambda r: hls_colour(r, (0.0, 1.0), (0.25, 0.6), (0.6, 1.0)))

    tempo = float(rng.uniform(*TEMPO_RANGE))
    action = tempo * action_seconds
    seconds = float(
        rng.uniform(max(MIN_SECONDS, action + MIN_LEAD_SECONDS), max(MAX_SECONDS, action + MIN_LEAD_SECONDS))
    )
    lead_in_share = float(rng.uniform(0.2, 0.8))
    leads = seconds - action
    return Nuisance(
        wall_rgb=wall,
        stripe_rgb=stripe,
        stripe_height_m=float(rng.uniform(3.6, 6.0)),
        water_rgb=water,
        board_rgb=board,
        skin_rgb=skin,
        suit_rgb=suit,
        zoom=float(rng.uniform(*ZOOM_RANGE)),
        shift_x=float(rng.uniform(-MAX_SHIFT, MAX_SHIFT)),
        shift_y=float(rng.uniform(-MAX_SHIFT, MAX_SHIFT)),
        tempo=tempo,
        lead_in_s=leads * lead_in_share,
        lead_out_s=leads * (1.0 - lead_in_share),
    )
