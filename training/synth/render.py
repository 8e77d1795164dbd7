"""Draw a dive's frames with Pillow and encode them as H.264 with PyAV.

Each frame is drawn through its own :class:`.camera.Camera`: the broadcast-style tracking camera of
:mod:`.camera` follows the diver, keeps the board in view until the apex and the water line and
splash from the entry on, all inside the centre crop a model keeps, whatever the nuisance zoom and
shift. Since the camera moves, the whole scene (wall, stripe, board pillar, water) is drawn anew
for every frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from training.synth.camera import Camera, fixed_camera, track_camera
from training.synth.kinematics import (
    BOARD_FULCRUM_X,
    BOARD_THICKNESS_M,
    PRESS_SECONDS,
    DiveMotion,
)
from training.synth.nuisance import Nuisance
from training.synth.style import STYLES, TILE_M, Style

AFTER_ENTRY_SECONDS = 1.0
"""Physical seconds of splash shown after the body breaks the water, before the lead-out."""
BOARD_START_X = -4.8
SPLASH_RGB = (245, 248, 250)
MIN_SIDE = 64


class RenderError(ValueError):
    """The requested video cannot be rendered (bad size, frame rate or duration)."""


def action_seconds(motion: DiveMotion) -> float:
    """Physical seconds from the start of the board press to the end of the splash."""
    return PRESS_SECONDS + motion.flight_seconds + AFTER_ENTRY_SECONDS


def check_video_size(width: int, height: int, fps: int) -> None:
    """Raise :class:`RenderError` unless H.264/yuv420p can encode this size and rate."""
    if width < MIN_SIDE or height < MIN_SIDE:
        raise RenderError(f"frame size {width}x{height} is too small: both sides must be >= {MIN_SIDE}")
    if width % 2 or height % 2:
        raise RenderError(f"frame size {width}x{height} must be even in both sides for yuv420p H.264")
    if not 1 <= fps <= 120:
        raise RenderError(f"fps must be between 1 and 120, got {fps}")


def draw_capsule(draw: ImageDraw.ImageDraw, cam: Camera, points: np.ndarray, width_m: float, colour) -> None:
    """A body part: a polyline through ``points`` (world metres) ``width_m`` thick with round ends."""
    width = max(1, round(width_m * cam.pixels_per_m))
    pixels = [tuple(p) for p in cam.to_pixels(points)]
    draw.line(pixels, fill=colour, width=width, joint="curve")
    r = width / 2
    for x, y in (pixels[0], pixels[-1]):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)


class DiveRenderer:
    """Renders one dive (motion + nuisance) into RGB frames of a given size and rate, in a :class:`.style.Style`
    (the motion carries the style's body and board height; ``light_rng`` draws a lit style's sensor noise)."""

    def __init__(self, motion: DiveMotion, nuisance: Nuisance, width: int, height: int, fps: int,
                 style: Style = STYLES["demo"], light_rng: np.random.Generator | None = None):
        check_video_size(width, height, fps)
        self.motion = motion
        self.nuisance = nuisance
        self.style = style
        self.light_rng = light_rng if light_rng is not None else np.random.default_rng(0)
        self.width, self.height, self.fps = width, height, fps
        self.duration_s = nuisance.duration_s(action_seconds(motion))
        self.frame_count = max(1, round(self.duration_s * fps))
        self.times = np.array([self.physical_time(k) for k in range(self.frame_count)])
        """Physical seconds from take-off of every frame."""
        self.joints = np.stack([motion.joints(t) for t in self.times])
        """(frames, 6, 2) body joints in world metres."""
        if style.camera == "fixed":
            self.track = fixed_camera(motion, self.frame_count)
        else:
            self.track = track_camera(motion, self.times, self.joints, fps * nuisance.tempo, style.view_short_side_m)
        """(frames, 2) world point at each frame's centre, before the nuisance shift."""

    def physical_time(self, frame_index: int) -> float:
        """Physical seconds from take-off shown by frame ``frame_index``."""
        video_s = frame_index / self.fps
        return (video_s - self.nuisance.lead_in_s) / self.nuisance.tempo - PRESS_SECONDS

    def camera(self, frame_index: int) -> Camera:
        """The tracked camera of frame ``frame_index``, with the video's nuisance zoom and shift."""
        look = self.nuisance
        centre = (float(self.track[frame_index, 0]), float(self.track[frame_index, 1]))
        return Camera(self.width, self.height, centre, look.zoom, look.shift_x, look.shift_y,
                      self.style.view_short_side_m)

    def _draw_background(self, draw: ImageDraw.ImageDraw, cam: Camera) -> None:
        look = self.nuisance
        if self.style.pool == "tiled":
            self._draw_tiles(draw, cam)
        draw.rectangle(
            [0, cam.row_of(look.stripe_height_m + 0.15), cam.width, cam.row_of(look.stripe_height_m - 0.15)],
            fill=look.stripe_rgb,
        )
        board_height = self.motion.board_height
        pillar = cam.to_pixels(
            np.array([[BOARD_FULCRUM_X - 0.2, board_height - 0.1], [BOARD_FULCRUM_X + 0.2, 0.0]])
        )
        draw.rectangle([*pillar[0], *pillar[1]], fill=tuple(int(c * 0.7) for c in look.board_rgb))

    def _draw_tiles(self, draw: ImageDraw.ImageDraw, cam: Camera) -> None:
        """Grout lines of a tiled wall above the water, every :data:`.style.TILE_M` metres."""
        grout = tuple(int(c * 0.8) for c in self.nuisance.wall_rgb)
        origin_column, water_row = cam.to_pixels(np.array([[0.0, 0.0]]))[0]
        bottom = min(water_row, cam.height)
        step = TILE_M * cam.pixels_per_m
        for column in np.arange(origin_column % step, cam.width, step):
            draw.line([(column, 0), (column, bottom)], fill=grout)
        for row in np.arange(water_row % step, bottom, step):
            draw.line([(0, row), (cam.width, row)], fill=grout)

    def _draw_lane_rope(self, draw: ImageDraw.ImageDraw, cam: Camera) -> None:
        """Red and white floats along the water line, every 0.3 m."""
        origin_column, water_row = cam.to_pixels(np.array([[0.0, 0.0]]))[0]
        step = 0.3 * cam.pixels_per_m
        r = max(1.0, 0.06 * cam.pixels_per_m)
        first = np.floor(-origin_column / step)
        for k in range(int(first), int(first + cam.width / step) + 2):
            column = origin_column + k * step
            colour = (220, 40, 40) if k % 2 else (240, 240, 240)
            draw.ellipse([column - r, water_row - r, column + r, water_row + r], fill=colour)

    def _draw_board(self, draw: ImageDraw.ImageDraw, cam: Camera, t: float) -> None:
        xs = np.linspace(BOARD_START_X, 0.0, 16)
        top = np.array(
            [[x, self.motion.board_height + self.motion.board_deflection(x, t) - BOARD_THICKNESS_M / 2] for x in xs]
        )
        points = [tuple(p) for p in cam.to_pixels(top)]
        width = max(2, round(BOARD_THICKNESS_M * cam.pixels_per_m))
        draw.line(points, fill=self.nuisance.board_rgb, width=width)

    def _draw_diver(self, draw: ImageDraw.ImageDraw, cam: Camera, joints: np.ndarray) -> None:
        hip, shoulder, head, hand, knee, ankle = joints
        look, body = self.nuisance, self.motion.body
        draw_capsule(draw, cam, np.stack([hip, knee, ankle]), body.leg_width_m, look.skin_rgb)
        draw_capsule(draw, cam, np.stack([hip, shoulder]), body.torso_width_m, look.suit_rgb)
        head_px = cam.to_pixels(head)[0]
        r = body.head_radius_m * cam.pixels_per_m
        draw.ellipse([head_px[0] - r, head_px[1] - r, head_px[0] + r, head_px[1] + r], fill=look.skin_rgb)
        draw_capsule(draw, cam, np.stack([shoulder, hand]), body.arm_width_m, look.skin_rgb)

    def _draw_water_and_splash(self, draw: ImageDraw.ImageDraw, cam: Camera, t: float) -> None:
        # The water is drawn over the diver: it hides the submerged part of the body.
        look = self.nuisance
        water_row = cam.row_of(0.0)
        if water_row < cam.height:  # else the camera looks above the water
            draw.rectangle([0, water_row, cam.width, cam.height], fill=look.water_rgb)
            surface = tuple(min(255, int(c * 1.25) + 20) for c in look.water_rgb)
            line_width = max(1, round(0.05 * cam.pixels_per_m))
            draw.line([(0, water_row), (cam.width, water_row)], fill=surface, width=line_width)
            if self.style.pool == "tiled":
                self._draw_lane_rope(draw, cam)
        foam = self.motion.foam_at(t)
        if foam is not None:
            x, half_width, whiteness = foam
            colour = tuple(int(w + (s - w) * whiteness) for s, w in zip(SPLASH_RGB, look.water_rgb))
            left, right = cam.to_pixels(np.array([[x - half_width, 0.0], [x + half_width, 0.0]]))
            depth = 0.08 * cam.pixels_per_m
            draw.ellipse([left[0], water_row - depth, right[0], water_row + depth], fill=colour)
        for x, y, radius in self.motion.droplets_at(t):
            cx, cy = cam.to_pixels(np.array([[x, y]]))[0]
            r = max(1.0, radius * cam.pixels_per_m)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=SPLASH_RGB)

    def frame(self, frame_index: int) -> np.ndarray:
        """RGB uint8 frame (height, width, 3)."""
        t = float(self.times[frame_index])
        cam = self.camera(frame_index)
        image = Image.new("RGB", (self.width, self.height), self.nuisance.wall_rgb)
        draw = ImageDraw.Draw(image)
        self._draw_background(draw, cam)
        self._draw_board(draw, cam, t)
        self._draw_diver(draw, cam, self.joints[frame_index])
        self._draw_water_and_splash(draw, cam, t)
        return self.style.light(np.asarray(image), self.light_rng)

    def frames(self) -> Iterator[np.ndarray]:
        for index in range(self.frame_count):
            yield self.frame(index)


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
DEFAULT_X264_PRESET = "veryfast"
"""The preset that rendered the demo model's training set."""


def check_x264_preset(preset: str) -> None:
    """Raise ValueError naming the choices when ``preset`` is not one of x264's."""
    if preset not in X264_PRESETS:
        raise ValueError(f"unknown x264 preset {preset!r}; choose from {', '.join(X264_PRESETS)}")


def encode_h264(frames: Iterator[np.ndarray], path: Path, fps: int, crf: int = 23,
                preset: str = DEFAULT_X264_PRESET) -> int:
    """Write RGB frames to an H.264 (libx264, yuv420p) mp4; returns the number of frames written.

    One encoder thread keeps the output identical from run to run, whatever the core count. x264's
    ``ultrafast`` preset encodes in about half the time of ``veryfast`` (the default) and decodes faster, for larger files and the same picture within a grey level on average
    (``benchmarks/bench_render.py``).
    """
    check_x264_preset(preset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps, 1))
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(crf), "preset": preset}
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
