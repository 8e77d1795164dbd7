"""I3D on the CPU with contiguous (NCDHW) against channels-last (NDHWC) activations, side by side.

``I3D(channels_last=True)``, the default, turns its input channels-last so every layer runs in that
layout. This script times both layouts on the demo profile's shapes (width 0.25, one clip of 32 frames
at 64 x 64), alternating runs: one fine-tuning step (forward, backward, AdamW) on a batch of 16 videos,
and inference on 1 and 16 videos; it also checks that both layouts give the same features. Run from
the repository root:

    .venv/bin/python benchmarks/bench_channels_last.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from models.i3d import I3D

WIDTH, FRAMES, CROP, TRAIN_BATCH = 0.25, 32, 64, 16


def training_step(model: I3D) -> Callable[[], None]:
    """One step of the demo's fine-tuning: pooled features -> linear probe -> MSE, backward, AdamW."""
    probe = torch.nn.Linear(model.feature_dim, 1)
    optimizer = torch.optim.AdamW([*model.parameters(), *probe.parameters()], lr=1e-4)
    videos, targets = torch.rand(TRAIN_BATCH, 3, FRAMES, CROP, CROP) * 2 - 1, torch.randn(TRAIN_BATCH, 1)
    model.train()

    def step() -> None:
        loss = torch.nn.functional.mse_loss(probe(model.forward_features(videos)), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def inference(model: I3D, batch: int) -> Callable[[], None]:
    videos = torch.rand(batch, 3, FRAMES, CROP, CROP) * 2 - 1

    def run() -> None:
        with torch.inference_mode():
            model.eval().forward_features(videos)

    return run


def alternate(runs: dict[str, Callable[[], None]], repeats: int, pause: float = 0.0) -> dict[str, list[float]]:
    """Seconds of each callable, interleaved ``repeats`` times after one untimed warm-up each; ``pause``
    seconds of sleep before each timed run let the previous run's spinning threads go idle."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            time.sleep(pause)
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    reference = I3D(width=WIDTH, channels_last=False).eval()
    fast = I3D(width=WIDTH, channels_last=True).eval()
    fast.load_state_dict(reference.state_dict())
    videos = torch.rand(4, 3, FRAMES, CROP, CROP) * 2 - 1
    with torch.inference_mode():
        difference = (reference.forward_features(videos) - fast.forward_features(videos)).abs().max()
    print(f"max |feature difference| between layouts: {float(difference):.1e}")

    cases = {
        f"training step, batch {TRAIN_BATCH}": lambda model: training_step(model),
        "inference, 1 video": lambda model: inference(model, 1),
        f"inference, {TRAIN_BATCH} videos": lambda model: inference(model, TRAIN_BATCH),
    }
    print(f"| case ({FRAMES} x {CROP} x {CROP}, width {WIDTH}) | contiguous s | channels-last s | ratio |")
    print("|---|---|---|---|")
    for case, make in cases.items():
        runs = {layout: make(I3D(width=WIDTH, channels_last=layout == "channels_last"))
                for layout in ("contiguous", "channels_last")}
        times = alternate(runs, args.repeats)
        slow, quick = statistics.median(times["contiguous"]), statistics.median(times["channels_last"])
        print(f"| {case} | {slow:.3f} | {quick:.3f} | {slow / quick:.2f} |", flush=True)


if __name__ == "__main__":
    main()
