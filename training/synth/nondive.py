"""Clips that are not dives: what a scoring model must say it does not know (``aqa synth --non-dives``).

Clip ``index`` of a seed is one of :data:`NON_DIVE_KINDS`, in turn, lasting 3-5 s like a rendered dive:

- ``walker``: a person walking along the pool deck, drawn like the divers (same figure, palette and
  tracking camera): the nearest thing to a dive that is not one;
- ``testsrc2``, ``mandelbrot``, ``life``, ``cellauto``, ``gradients``, ``zoneplate``: FFmpeg's generated
  test sources (libavfilter, through PyAV's filter graph), with seeded parameters where they take any.

Layout of ``out_dir``: ``videos/clip_00000.mp4`` ... and ``clips.csv`` (``video,kind``), written last.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

import av.filter
import numpy as np
from PIL import Image, ImageDraw

from training.synth.camera import Camera
from training.synth.generate import check_render_request, render_in_pool
from training.synth.kinematics import DEFAULT_BODY, Pose, body_frame_joints
from training.synth.nuisance import MAX_SECONDS, MIN_SECONDS, sample_nuisance
from training.synth.render import DEFAULT_X264_PRESET, draw_capsule, encode_h264

NON_DIVE_KINDS = ("walker", "testsrc2", "mandelbrot", "life", "cellauto", "gradients", "zoneplate")
CLIPS_CSV = "clips.csv"
WALK_SPEED_MPS = 1.3
STRIDE_SECONDS = 1.1
"""One gait cycle (two steps)."""
HIP_SWING_DEG, KNEE_BEND_DEG, ARM_SWING_DEG = 25.0, 40.0, 25.0


def clip_name(index: int) -> str:
    return f"videos/clip_{index:05d}.mp4"


def clip_kind(index: int) -> str:
    return NON_DIVE_KINDS[index % len(NON_DIVE_KINDS)]


def _lavfi_arguments(kind: str, rng: np.random.Generator, width: int, height: int, fps: int) -> str:
    size = f"size={width}x{height}:rate={fps}"
    seed = int(rng.integers(0, 2**31 - 1))
    extra = {
        "testsrc2": "",
        "mandelbrot": f":start_scale={rng.uniform(1.5, 3.0):.3f}:end_scale={rng.uniform(0.1, 0.8):.3f}",
        "life": f":seed={seed}:ratio={rng.uniform(0.1, 0.5):.2f}:mold={int(rng.integers(0, 40))}",
        "cellauto": f":seed={seed}:rule={int(rng.choice([18, 30, 90, 110]))}:random_fill_ratio={rng.uniform(0.2, 0.8):.2f}",
        "gradients": f":seed={seed}:speed={rng.uniform(0.01, 0.05):.3f}",
        "zoneplate": f":kt2={int(rng.integers(1, 6))}:kx2={int(rng.integers(50, 200))}:ky2={int(rng.integers(50, 200))}",
    }[kind]
    return size + extra


def lavfi_frames(kind: str, arguments: str, count: int) -> Iterator[np.ndarray]:
    """``count`` RGB frames of FFmpeg's source filter ``kind`` with ``arguments``."""
    graph = av.filter.Graph()
    source = graph.add(kind, arguments)
    rgb = graph.add("format", "rgb24")
    sink = graph.add("buffersink")
    source.link_to(rgb)
    rgb.link_to(sink)
    graph.configure()
    for _ in range(count):
        yield sink.pull().to_ndarray()


def walker_frames(rng: np.random.Generator, width: int, height: int, fps: int, count: int) -> Iterator[np.ndarray]:
    """A figure walking along the deck in a diver's colours, the camera panning with it at the divers' scale."""
    look = sample_nuisance(rng, action_seconds=2.0)
    body = DEFAULT_BODY
    standing_hip = body.thigh_m + body.shin_m
    phase0 = rng.uniform(0.0, 2 * math.pi)
    direction = 1.0 if rng.random() < 0.5 else -1.0
    for k in range(count):
        t = k / fps
        phase = phase0 + 2 * math.pi * t / STRIDE_SECONDS
        hip_x = direction * WALK_SPEED_MPS * t
        cam = Camera(width, height, (hip_x, 1.2), look.zoom, look.shift_x, look.shift_y)
        image = Image.new("RGB", (width, height), look.wall_rgb)
        draw = ImageDraw.Draw(image)
        draw.rectangle([0, cam.row_of(look.stripe_height_m + 0.15), width, cam.row_of(look.stripe_height_m - 0.15)],
                       fill=look.stripe_rgb)
        draw.rectangle([0, cam.row_of(0.0), width, height], fill=look.board_rgb)  # the deck
        hip = np.array([hip_x, standing_hip - 0.03 * (1 - math.cos(2 * phase))])
        for side, colour in ((math.pi, tuple(int(c * 0.75) for c in look.skin_rgb)), (0.0, look.skin_rgb)):
            swing = math.sin(phase + side)
            pose = Pose(math.radians(HIP_SWING_DEG) * swing, math.radians(KNEE_BEND_DEG) * max(0.0, -swing),
                        math.radians(ARM_SWING_DEG) * -swing)
            joints = body_frame_joints(pose, body) * np.array([direction, 1.0]) + hip
            draw_capsule(draw, cam, joints[[0, 4, 5]], body.leg_width_m, colour)
            if side == 0.0:
                draw_capsule(draw, cam, joints[[0, 1]], body.torso_width_m, look.suit_rgb)
                head = cam.to_pixels(joints[2])[0]
                r = body.head_radius_m * cam.pixels_per_m
                draw.ellipse([head[0] - r, head[1] - r, head[0] + r, head[1] + r], fill=look.skin_rgb)
            draw_capsule(draw, cam, joints[[1, 3]], body.arm_width_m, colour)
        yield np.asarray(image)


def render_non_dive(path: Path, seed: int, index: int, width: int = 320, height: int = 240, fps: int = 25,
                    preset: str = DEFAULT_X264_PRESET) -> dict[str, object]:
    """Render clip ``index`` of ``seed`` to ``path``; returns its ``clips.csv`` row (without the video)."""
    rng = np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(index,)))
    kind = clip_kind(index)
    count = max(1, round(rng.uniform(MIN_SECONDS, MAX_SECONDS) * fps))
    if kind == "walker":
        frames = walker_frames(rng, width, height, fps, count)
    else:
        frames = lavfi_frames(kind, _lavfi_arguments(kind, rng, width, height, fps), count)
    encode_h264(frames, path, fps, preset=preset)
    return {"kind": kind, "frames": count}


def _render_task(task: tuple[Path, int, int, int, int, int, str]) -> dict[str, object]:
    out_dir, seed, index, width, height, fps, preset = task
    row = render_non_dive(out_dir / clip_name(index), seed, index, width, height, fps, preset)
    return {"video": clip_name(index), **row}


def generate_non_dives(out_dir: Path, n: int, seed: int, width: int = 320, height: int = 240, fps: int = 25,
                       workers: int = 1, progress: bool = True, preset: str = DEFAULT_X264_PRESET) -> Path:
    """Render ``n`` non-dive clips into ``out_dir``; returns the path of ``clips.csv``. Deterministic in
    (seed, index, size, fps, preset), whatever ``workers`` is."""
    check_render_request(n, seed, workers, width, height, fps, preset)
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    tasks = [(out_dir, seed, i, width, height, fps, preset) for i in range(n)]
    rows = render_in_pool(_render_task, tasks, workers, "rendering non-dives", progress)
    clips = out_dir / CLIPS_CSV
    with clips.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["video", "kind", "frames"])
        writer.writeheader()
        writer.writerows(rows)
    return clips
