"""Draw a dive's frames with Pillow and encode them as H.264 with PyAV.

The camera is fixed (up to the nuisance shift and zoom) and frames the whole action, from the apex
to the splash, inside the central square a model crops: a model that resizes the short side to 128
and centre-crops 112 keeps the central 87.5 % of the short side, and :data:`VIEW_SCALE` is chosen so
every dive stays inside it (a test checks every dive of the table with each fault at its worst and
the camera nuisance at its extremes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from training.synth.kinematics import BOARD_FULCRUM_X, BOARD_HEIGHT, HEAD_RADIUS_M, PRESS_SECONDS, DiveMotion
from training.synth.nuisance import Nuisance

AFTER_ENTRY_SECONDS = 1.0
"""Physical seconds of splash shown after the body breaks the water, before the lead-out."""
VIEW_CENTRE_M = (1.1, 3.0)
"""World point (x, y) at the centre of the frame before the camera shift."""
VIEW_SCALE = 0.128
"""Pixels per metre per pixel of the frame's short side, before the zoom (31 px/m at 240 px)."""
BOARD_START_X = -4.8
BOARD_THICKNESS_M = 0.12
TORSO_WIDTH_M, LEG_WIDTH_M, ARM_WIDTH_M = 0.32, 0.2, 0.14
"""Drawn thickness of the body parts (thick, so they survive downscaling to 112 x 112)."""
SPLASH_RGB = (245, 248, 250)
MIN_SIDE = 64


class RenderError(ValueError):
    """The requested video cannot be rendered (bad size, frame rate or duration)."""


def action_seconds(motion: DiveMotion) -> float:
    """Physical seconds from the start of the board press to the end of the splash."""
    return PRESS_SECONDS + motion.flight_seconds + AFTER_ENTRY_SECONDS


@dataclass(frozen=True)
class Camera:
    """Maps world metres to pixel coordinates."""

    width: int
    height: int
    zoom: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0

    @property
    def pixels_per_m(self) -> float:
        return min(self.width, self.height) * VIEW_SCALE * self.zoom

    def to_pixels(self, points_m: np.ndarray) -> np.ndarray:
        """(N, 2) world metres -> (N, 2) pixel (column, row) floats."""
        side = min(self.width, self.height)
        points = np.asarray(points_m, dtype=float).reshape(-1, 2)
        cx = self.width / 2 + self.shift_x * side
        cy = self.height / 2 + self.shift_y * side
        px = cx + (points[:, 0] - VIEW_CENTRE_M[0]) * self.pixels_per_m
        py = cy - (points[:, 1] - VIEW_CENTRE_M[1]) * self.pixels_per_m
        return np.stack([px, py], axis=1)

    def row_of(self, y_m: float) -> float:
        return float(self.to_pixels(np.array([[0.0, y_m]]))[0, 1])


def check_video_size(width: int, height: int, fps: int) -> None:
    """Raise :class:`RenderError` unless H.264/yuv420p can encode this size and rate."""
    if width < MIN_SIDE or height < MIN_SIDE:
        raise RenderError(f"frame size {width}x{height} is too small: both sides must be >= {MIN_SIDE}")
    if width % 2 or height % 2:
        raise RenderError(f"frame size {width}x{height} must be even in both sides for yuv420p H.264")
    if not 1 <= fps <= 120:
        raise RenderError(f"fps must be between 1 and 120, got {fps}")


class DiveRenderer:
    """Renders one dive (motion + nuisance) into RGB frames of a given size and rate."""

    def __init__(self, motion: DiveMotion, nuisance: Nuisance, width: int, height: int, fps: int):
        check_video_size(width, height, fps)
        self.motion = motion
        self.nuisance = nuisance
        self.fps = fps
        self.camera = Camera(width, height, nuisance.zoom, nuisance.shift_x, nuisance.shift_y)
        self.duration_s = nuisance.duration_s(action_seconds(motion))
        self.frame_count = max(1, round(self.duration_s * fps))
        self.background = self._background()
        self.water_row = round(self.camera.row_of(0.0))
        self.water_patch = self.background.crop((0, self.water_row, width, height))

    def physical_time(self, frame_index: int) -> float:
        """Physical seconds from take-off shown by frame ``frame_index``."""
        video_s = frame_index / self.fps
        return (video_s - self.nuisance.lead_in_s) / self.nuisance.tempo - PRESS_SECONDS

    def _px(self, metres: float) -> float:
        return metres * self.camera.pixels_per_m

    def _background(self) -> Image.Image:
        cam, look = self.camera, self.nuisance
        image = Image.new("RGB", (cam.width, cam.height), look.wall_rgb)
        draw = ImageDraw.Draw(image)
        stripe_top = cam.row_of(look.stripe_height_m + 0.15)
        draw.rectangle(
            [0, stripe_top, cam.width, cam.row_of(look.stripe_height_m - 0.15)], fill=look.stripe_rgb
        )
        pillar = cam.to_pixels(
            np.array([[BOARD_FULCRUM_X - 0.2, BOARD_HEIGHT - 0.1], [BOARD_FULCRUM_X + 0.2, 0.0]])
        )
        draw.rectangle([*pillar[0], *pillar[1]], fill=tuple(int(c * 0.7) for c in look.board_rgb))
        water_top = cam.row_of(0.0)
        draw.rectangle([0, water_top, cam.width, cam.height], fill=look.water_rgb)
        surface = tuple(min(255, int(c * 1.25) + 20) for c in look.water_rgb)
        draw.line([(0, water_top), (cam.width, water_top)], fill=surface, width=max(1, int(self._px(0.05))))
        return image

    def _draw_board(self, draw: ImageDraw.ImageDraw, t: float) -> None:
        xs = np.linspace(BOARD_START_X, 0.0, 16)
        top = np.array(
            [[x, BOARD_HEIGHT + self.motion.board_deflection(x, t) - BOARD_THICKNESS_M / 2] for x in xs]
        )
        points = [tuple(p) for p in self.camera.to_pixels(top)]
        draw.line(points, fill=self.nuisance.board_rgb, width=max(2, round(self._px(BOARD_THICKNESS_M))))

    def _capsule(self, draw: ImageDraw.ImageDraw, points: np.ndarray, width_m: float, colour) -> None:
        width = max(1, round(self._px(width_m)))
        pixels = [tuple(p) for p in self.camera.to_pixels(points)]
        draw.line(pixels, fill=colour, width=width, joint="curve")
        r = width / 2
        for x, y in (pixels[0], pixels[-1]):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)

    def _draw_diver(self, draw: ImageDraw.ImageDraw, t: float) -> None:
        hip, shoulder, head, hand, knee, ankle = self.motion.joints(t)
        look = self.nuisance
        self._capsule(draw, np.stack([hip, knee, ankle]), LEG_WIDTH_M, look.skin_rgb)
        self._capsule(draw, np.stack([hip, shoulder]), TORSO_WIDTH_M, look.suit_rgb)
        head_px = self.camera.to_pixels(head)[0]
        r = self._px(HEAD_RADIUS_M)
        draw.ellipse([head_px[0] - r, head_px[1] - r, head_px[0] + r, head_px[1] + r], fill=look.skin_rgb)
        self._capsule(draw, np.stack([shoulder, hand]), ARM_WIDTH_M, look.skin_rgb)

    def _draw_water_and_splash(self, frame: Image.Image, draw: ImageDraw.ImageDraw, t: float) -> None:
        # Redrawing the water hides the submerged part of the body.
        frame.paste(self.water_patch, (0, self.water_row))
        foam = self.motion.foam_at(t)
        if foam is not None:
            x, half_width, whiteness = foam
            colour = tuple(int(w + (s - w) * whiteness) for s, w in zip(SPLASH_RGB, self.nuisance.water_rgb))
            left, right = self.camera.to_pixels(np.array([[x - half_width, 0.0], [x + half_width, 0.0]]))
            depth = self._px(0.08)
            draw.ellipse([left[0], self.water_row - depth, right[0], self.water_row + depth], fill=colour)
        for x, y, radius in self.motion.droplets_at(t):
            cx, cy = self.camera.to_pixels(np.array([[x, y]]))[0]
            r = max(1.0, self._px(radius))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=SPLASH_RGB)

    def frame(self, frame_index: int) -> np.ndarray:
        """RGB uint8 frame (height, width, 3)."""
        t = self.physical_time(frame_index)
        image = self.background.copy()
        draw = ImageDraw.Draw(image)
        self._draw_board(draw, t)
        self._draw_diver(draw, t)
        self._draw_water_and_splash(image, draw, t)
        return np.asarray(image)

    def frames(self) -> Iterator[np.ndarray]:
        for index in range(self.frame_count):
            yield self.frame(index)


def encode_h264(frames: Iterator[np.ndarray], path: Path, fps: int, crf: int = 23) -> int:
    """Write RGB frames to an H.264 (libx264, yuv420p) mp4; returns the number of frames written.

    One encoder thread keeps the output identical from run to run, whatever the core count.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps, 1))
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for rgb in frames:
            if count == 0:
                stream.height, stream.width = rgb.shape[:2]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            container.mux(stream.encode(frame))
            count += 1
        if count == 0:
            raise RenderError("no frames to encode")
        container.mux(stream.encode(None))
    return count
