"""The synthetic renderer's H.264 encoding with x264's ``veryfast`` against its ``ultrafast`` preset.

``aqa synth`` draws each frame with Pillow and encodes it with libx264 in one thread (``encode_h264``);
encoding was about half of rendering with ``veryfast``. This script draws the frames of a few dives of
the benchmark once (320 x 240, 25 fps, as ``aqa synth`` writes them), then, alternating presets, times
their encoding and their decoding with the demo model's preprocessing (32 frames, short side 128, centre
crop 64), and reports file sizes and how far the decoded pixels of the two presets are apart. Run from the
repository root:

    .venv/bin/python benchmarks/bench_render.py [--dives 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_channels_last import alternate

from training.demo import DEMO_PROFILE
from training.profiles import PROFILES
from training.synth.render import encode_h264
from training.synth.scene import sample_synth_dive
from video.decode import decode_video

PRESETS = ("veryfast", "ultrafast")
DEMO_PREPROCESSING = PROFILES[DEMO_PROFILE].preprocessing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dives", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    videos = [list(sample_synth_dive(11, i).renderer(320, 240, 25).frames()) for i in range(args.dives)]
    drawing = time.perf_counter() - start
    frames = sum(map(len, videos))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        def paths(preset: str) -> list[Path]:
            return [folder / f"{preset}_{i}.mp4" for i in range(len(videos))]

        def encoder(preset: str):
            return lambda: [encode_h264(iter(v), path, 25, preset=preset) for v, path in zip(videos, paths(preset))]

        def decoder(preset: str):
            return lambda: [decode_video(path, DEMO_PREPROCESSING) for path in paths(preset)]

        encode = alternate({preset: encoder(preset) for preset in PRESETS}, args.repeats)
        decode = alternate({preset: decoder(preset) for preset in PRESETS}, args.repeats)
        decoded = {preset: [decode_video(path, DEMO_PREPROCESSING).frames.astype(np.int16) for path in paths(preset)]
                   for preset in PRESETS}
        sizes = {preset: sum(path.stat().st_size for path in paths(preset)) / len(videos) for preset in PRESETS}

    print(f"{args.dives} dives, {frames} frames of 320x240; drawing them took {drawing:.2f} s "
          f"({drawing / args.dives * 1000:.0f} ms per dive); medians of {args.repeats} alternating runs:")
    print("| preset | encode ms/dive | decode ms/dive (demo preprocessing) | KiB/dive |")
    print("|---|---|---|---|")
    for preset in PRESETS:
        print(f"| {preset} | {statistics.median(encode[preset]) / args.dives * 1000:.0f} | "
              f"{statistics.median(decode[preset]) / args.dives * 1000:.0f} | {sizes[preset] / 1024:.0f} |")
    slow, fast = PRESETS
    difference = np.mean([np.abs(a - b).mean() for a, b in zip(decoded[slow], decoded[fast])])
    print(f"encode ratio {slow}/{fast}: {statistics.median(encode[slow]) / statistics.median(encode[fast]):.2f}; "
          f"decode ratio: {statistics.median(decode[slow]) / statistics.median(decode[fast]):.2f}; "
          f"mean absolute difference of the decoded demo crops: {difference:.2f} grey levels")


if __name__ == "__main__":
    main()
