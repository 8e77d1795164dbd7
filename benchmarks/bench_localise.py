"""How well the motion localiser finds a synthetic dive, and what it costs to decode with it.

The demo preprocessing narrows each video to the span that moves (``video.localise``) before it samples
32 frames. This script renders fresh dives of two seeds that did not choose the window's settings (the
defaults were tuned on seed 11: use other seeds here), at 320 x 240 and 25 fps with x264 ``ultrafast``
as the demo's training set, and compares the localised span with the renderer's own dive window (0.3 s
before take-off to 0.6 s after the entry, from the renderer's physical clock):

- IoU of the two spans, median start and end error in frames;
- how often the span holds the whole flight (take-off to entry);
- how many of the 32 sampled frames fall in the flight, with and without localisation;
- decode time per dive with the demo preprocessing, with and without localisation (alternating runs).

Run from the repository root:

    .venv/bin/python benchmarks/bench_localise.py [--seeds 12 13] [--dives 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from bench_channels_last import alternate

from training.demo import DEMO_PROFILE
from training.profiles import PROFILES
from training.synth.scene import sample_synth_dive
from video.decode import decode_video

ORACLE_BEFORE_S, ORACLE_AFTER_S = 0.3, 0.6
LOCALISED = PROFILES[DEMO_PROFILE].preprocessing
WHOLE_VIDEO = replace(LOCALISED, motion_window=None)


def iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    overlap = max(0, min(a[1], b[1]) - max(a[0], b[0]) + 1)
    return overlap / (max(a[1], b[1]) - min(a[0], b[0]) + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[12, 13])
    parser.add_argument("--dives", type=int, default=200, help="dives per seed")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if LOCALISED.motion_window is None:
        raise SystemExit(f"the {DEMO_PROFILE} profile has no motion window")

    ious, start_errors, end_errors, holds_flight, in_flight = [], [], [], [], {"localised": [], "whole": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for seed in args.seeds:
            for index in range(args.dives):
                dive = sample_synth_dive(seed, index)
                path = Path(tmp) / f"dive_{seed}_{index}.mp4"
                dive.render(path, 320, 240, 25, preset="ultrafast")
                paths.append(path)
                times, flight = dive.renderer(320, 240, 25).times, dive.motion().flight_seconds
                oracle = np.flatnonzero((times >= -ORACLE_BEFORE_S) & (times <= flight + ORACLE_AFTER_S))
                flying = np.flatnonzero((times >= 0.0) & (times <= flight))
                localised = decode_video(path, LOCALISED).frame_indices
                whole = decode_video(path, WHOLE_VIDEO).frame_indices
                span = (int(localised[0]), int(localised[-1]))
                ious.append(iou(span, (int(oracle[0]), int(oracle[-1]))))
                start_errors.append(span[0] - int(oracle[0]))
                end_errors.append(span[1] - int(oracle[-1]))
                holds_flight.append(span[0] <= flying[0] and span[1] >= flying[-1])
                in_flight["localised"].append(np.isin(localised, flying).sum())
                in_flight["whole"].append(np.isin(whole, flying).sum())

        def decoder(preprocessing):
            return lambda: [decode_video(path, preprocessing) for path in paths[:40]]

        timed = alternate({"localised": decoder(LOCALISED), "whole": decoder(WHOLE_VIDEO)}, args.repeats)

    count = len(ious)
    print(f"{count} fresh dives (seeds {', '.join(map(str, args.seeds))}), window {LOCALISED.motion_window}:")
    print(f"IoU with the renderer's dive window: mean {np.mean(ious):.3f}, 10th percentile "
          f"{np.percentile(ious, 10):.3f}, min {np.min(ious):.3f}; median start error {np.median(start_errors):+.0f} "
          f"frames, median end error {np.median(end_errors):+.0f} frames")
    print(f"span holds the whole flight (take-off to entry): {np.mean(holds_flight):.1%} of dives")
    print(f"sampled frames in the flight (of {LOCALISED.num_frames}): localised {np.mean(in_flight['localised']):.1f}, "
          f"whole video {np.mean(in_flight['whole']):.1f}")
    per_dive = {name: statistics.median(seconds) / 40 * 1000 for name, seconds in timed.items()}
    print(f"decode ms/dive (demo preprocessing, 40 dives, median of {args.repeats} alternating runs): localised "
          f"{per_dive['localised']:.0f}, whole video {per_dive['whole']:.0f}; ratio "
          f"{per_dive['localised'] / per_dive['whole']:.2f}")


if __name__ == "__main__":
    main()
