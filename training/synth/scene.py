"""Everything that defines one synthetic video, drawn reproducibly from (seed, index).

Each video has independent random streams spawned from ``SeedSequence(seed, spawn_key=(index,))``:
the labels (dive code, panel mean, judges), the split of the deduction into faults, the nuisances,
the splash droplet pattern, and two for a shifted style's palette and sensor noise (:mod:`.style`).
A video therefore depends only on (seed, index, style), never on how many videos are generated or by
how many workers; the nuisances cannot leak into the labels, and the same (seed, index) is the same
dive in every style.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from training.synth.dive_table import DiveCode, sample_dive
from training.synth.execution import ExecutionFaults, sample_faults
from training.synth.judging import PanelScores, judge_dive
from training.synth.kinematics import DiveMotion
from training.synth.nuisance import Nuisance, sample_nuisance
from training.synth.render import DEFAULT_X264_PRESET, DiveRenderer, action_seconds, encode_h264
from training.synth.style import STYLES, Style


@dataclass(frozen=True)
class SynthDive:
    """One synthetic dive: what is scored, how it is executed, and how it looks."""

    dive: DiveCode
    panel: PanelScores
    faults: ExecutionFaults
    nuisance: Nuisance
    splash_seed: np.random.SeedSequence
    style: Style = STYLES["demo"]
    light_seed: np.random.SeedSequence | None = None
    """Seeds a lit style's sensor noise (unused by the training style)."""

    def motion(self) -> DiveMotion:
        return DiveMotion(self.dive, self.faults, np.random.default_rng(self.splash_seed), self.style.body,
                          self.style.board_height_m)

    def renderer(self, width: int, height: int, fps: int) -> DiveRenderer:
        return DiveRenderer(self.motion(), self.nuisance, width, height, fps, self.style,
                            np.random.default_rng(self.light_seed))

    def with_nuisance(self, nuisance: Nuisance) -> SynthDive:
        return replace(self, nuisance=nuisance)

    def with_faults(self, faults: ExecutionFaults) -> SynthDive:
        """The same dive and look with other faults (labels are left as they were: for diagnostics)."""
        return replace(self, faults=faults)

    def render(self, path: Path, width: int, height: int, fps: int, preset: str = DEFAULT_X264_PRESET) -> int:
        """Render and encode to an H.264 mp4 at ``path`` with x264's ``preset``; returns the frame count."""
        return encode_h264(self.renderer(width, height, fps).frames(), path, fps, preset=preset)


def _streams(seed: int, index: int) -> list[np.random.SeedSequence]:
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return np.random.SeedSequence(entropy=seed, spawn_key=(index,)).spawn(6)


def sample_labels(seed: int, index: int) -> tuple[DiveCode, PanelScores]:
    """The dive and the panel's scores of video ``index``; no rendering, for calibration checks."""
    label_stream = np.random.default_rng(_streams(seed, index)[0])
    dive = sample_dive(label_stream)
    return dive, judge_dive(label_stream, dive.difficulty)


def sample_synth_dive(seed: int, index: int, style: Style = STYLES["demo"]) -> SynthDive:
    """Draw video ``index`` of the benchmark with this seed, drawn in ``style``."""
    _, fault_seed, nuisance_seed, splash_seed, palette_seed, light_seed = _streams(seed, index)
    dive, panel = sample_labels(seed, index)
    faults = sample_faults(np.random.default_rng(fault_seed), panel.panel_mean)
    motion = DiveMotion(dive, faults, np.random.default_rng(splash_seed), style.body, style.board_height_m)
    nuisance = sample_nuisance(np.random.default_rng(nuisance_seed), action_seconds(motion))
    nuisance = style.recolour(nuisance, np.random.default_rng(palette_seed))
    return SynthDive(dive, panel, faults, nuisance, splash_seed, style, light_seed)
