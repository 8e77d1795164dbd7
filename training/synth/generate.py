"""Write the synthetic dive benchmark: H.264 videos, a labels CSV and a diagnostic factors CSV.

Layout of ``out_dir``::

    videos/dive_00000.mp4 ...
    labels.csv    video,final_score,difficulty,action_class,judge_1,...,judge_7
    factors.csv   per video: the panel mean, each fault, the nuisances, the style (diagnostics only:
                  never train on it, it holds the noise-free target)

``video`` is the path relative to ``out_dir``. The CSVs are written after every video exists, so a
``labels.csv`` always describes a complete dataset.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from tqdm import tqdm

from training.synth.calibration import JUDGES_PER_DIVE
from training.synth.render import DEFAULT_X264_PRESET, action_seconds, check_video_size, check_x264_preset
from training.synth.scene import SynthDive, sample_synth_dive
from training.synth.style import get_style

LABEL_COLUMNS = (
    "video",
    "final_score",
    "difficulty",
    "action_class",
    *(f"judge_{j}" for j in range(1, JUDGES_PER_DIVE + 1)),
)


def video_name(index: int) -> str:
    return f"videos/dive_{index:05d}.mp4"


def label_row(name: str, dive: SynthDive) -> dict[str, object]:
    row: dict[str, object] = {
        "video": name,
        "final_score": dive.panel.final_score,
        "difficulty": dive.dive.difficulty,
        "action_class": dive.dive.code,
    }
    row.update({f"judge_{j}": s for j, s in enumerate(dive.panel.judge_scores, start=1)})
    return row


def factor_row(name: str, dive: SynthDive, frames: int) -> dict[str, object]:
    row: dict[str, object] = {
        "video": name,
        "action_class": dive.dive.code,
        "somersaults": dive.dive.somersaults,
        "position": dive.dive.position,
        "panel_mean": round(dive.panel.panel_mean, 4),
        "frames": frames,
        "style": dive.style.name,
    }
    row.update({k: round(v, 4) for k, v in dive.faults.to_dict().items()})
    row.update({f"deduction_{k}": round(v, 4) for k, v in dive.faults.deductions().items()})
    row.update({k: round(v, 4) if isinstance(v, float) else v for k, v in dive.nuisance.to_dict().items()})
    return row


def _render_one(task: tuple[int, int, Path, int, int, int, str, str]) -> tuple[dict[str, object], dict[str, object]]:
    """Render video ``index``; returns its labels row and factors row."""
    seed, index, out_dir, width, height, fps, preset, style = task
    dive = sample_synth_dive(seed, index, get_style(style))
    frames = dive.render(out_dir / video_name(index), width, height, fps, preset)
    return label_row(video_name(index), dive), factor_row(video_name(index), dive, frames)


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def check_render_request(n: int, seed: int, workers: int, width: int, height: int, fps: int, preset: str) -> None:
    """Raise ValueError (RenderError for the size) naming what is wrong with a request to render ``n`` videos."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    check_video_size(width, height, fps)
    check_x264_preset(preset)


def render_in_pool(render: Callable[[Any], Any], tasks: list, workers: int, description: str, progress: bool) -> list:
    """``[render(task) for task in tasks]``, in a process pool of ``workers`` when more than one, in order."""
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else nullcontext()
    results = []
    with pool, tqdm(total=len(tasks), desc=description, unit="video", disable=not progress) as bar:
        for result in pool.map(render, tasks, chunksize=4) if workers > 1 else map(render, tasks):
            results.append(result)
            bar.update()
    return results


def generate_dataset(
    out_dir: Path,
    n: int,
    seed: int,
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    workers: int = 1,
    progress: bool = True,
    preset: str = DEFAULT_X264_PRESET,
    style: str = "demo",
) -> Path:
    """Render ``n`` dives with ``seed`` into ``out_dir``; returns the path of ``labels.csv``.

    Deterministic: the same (seed, n, size, fps, x264 ``preset``, ``style``) gives the same labels and pixels
    whatever ``workers`` is, because video ``i`` depends only on (seed, i, style). ``workers > 1`` renders in a
    process pool. ``style`` names a :data:`.style.STYLES` entry: the same seed gives the same dives and labels
    in every style.
    """
    check_render_request(n, seed, workers, width, height, fps, preset)
    get_style(style)
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)

    tasks = [(seed, i, out_dir, width, height, fps, preset, style) for i in range(n)]
    rows = render_in_pool(_render_one, tasks, workers, "rendering dives", progress)
    label_rows = [labels_row for labels_row, _ in rows]
    factor_rows = [factors_row for _, factors_row in rows]

    _write_csv(out_dir / "factors.csv", factor_rows)
    labels = out_dir / "labels.csv"
    _write_csv(labels, label_rows)
    return labels


def render_dive_video(
    path: Path, *, seconds: float = 4.0, width: int = 854, height: int = 480, fps: int = 25, seed: int = 0
) -> Path:
    """Render a single dive of exactly ``seconds`` (e.g. the speed benchmark's 4 s 854x480 clip)."""
    dive = sample_synth_dive(seed, 0)
    nuisance = dive.nuisance.with_duration(seconds, action_seconds(dive.motion()))
    dive.with_nuisance(nuisance).render(Path(path), width, height, fps)
    return Path(path)
