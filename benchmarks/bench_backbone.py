"""CPU cost of the I3D backbone per video, to choose the width and crop of the CPU demo profile.

Times ``I3D.extract_clip_features`` on one 103-frame video with the CoRe protocol (10 clips of 16
frames) for every width x crop (median and min of ``--runs`` after one warm-up; a combination whose
estimate from one clip exceeds ``--limit`` seconds is skipped), then one training step (forward,
backward and an Adam step through backbone + linear score head) on a batch of 2 videos. Run from the repo root
(with the project installed, or with PYTHONPATH=.):

    .venv/bin/python benchmarks/bench_backbone.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from models.clips import ClipProtocol
from models.i3d import I3D

NUM_FRAMES = 103


def wall_times(step: Callable[[], object], runs: int) -> list[float]:
    """Wall seconds of ``runs`` calls of ``step`` after one untimed warm-up call."""
    step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> str:
    """Median and, in brackets, minimum: on a shared machine the minimum is the least disturbed run."""
    return f"{statistics.median(times):.2f} ({min(times):.2f})"


def random_videos(batch: int, crop: int) -> torch.Tensor:
    return torch.rand(batch, 3, NUM_FRAMES, crop, crop) * 2 - 1


def time_extraction(width: float, crop: int, runs: int, limit: float) -> list[float] | None:
    """Seconds per video in eval mode without gradients, or None if the estimate exceeds ``limit``."""
    model, protocol = I3D(width=width).eval(), ClipProtocol.core_mtl()
    video = random_videos(1, crop)
    with torch.no_grad():
        model.forward_features(video[:, :, : protocol.length])  # first-call allocation, untimed
        start = time.perf_counter()
        model.forward_features(video[:, :, : protocol.length])
        if (time.perf_counter() - start) * protocol.num_clips > limit:
            return None
        return wall_times(lambda: model.extract_clip_features(video, protocol), runs)


def time_training_step(width: float, crop: int, batch: int, runs: int) -> list[float]:
    """Seconds per step: clip features -> mean over clips -> linear score -> MSE, backward, Adam."""
    model, protocol = I3D(width=width).train(), ClipProtocol.core_mtl()
    head = torch.nn.Linear(model.feature_dim, 1)
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-4)
    videos, targets = random_videos(batch, crop), torch.rand(batch, 1)

    def step() -> None:
        optimizer.zero_grad()
        scores = head(model.extract_clip_features(videos, protocol).mean(dim=1))
        torch.nn.functional.mse_loss(scores, targets).backward()
        optimizer.step()

    return wall_times(step, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--limit", type=float, default=60.0, help="skip combinations estimated slower")
    parser.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--crops", type=int, nargs="+", default=[224, 160, 112])
    parser.add_argument("--train-widths", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--train-crop", type=int, default=112)
    parser.add_argument("--train-batch", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median (min) of {args.runs} runs")

    print(f"\nfeature extraction, 1 video = {NUM_FRAMES} frames as 10 clips x 16 (CoRe), s/video, by crop")
    print(f"{'width':>6} {'params':>11} {'dim':>5} " + " ".join(f"{c:>13}" for c in args.crops))
    for width in args.widths:
        probe = I3D(width=width)
        params = sum(p.numel() for p in probe.parameters())
        cells = []
        for crop in args.crops:
            times = time_extraction(width, crop, args.runs, args.limit)
            cells.append(f"{summary(times) if times is not None else 'skipped':>13}")
        print(f"{width:>6} {params:>11,} {probe.feature_dim:>5} " + " ".join(cells), flush=True)

    print(f"\ntraining step (forward + backward + Adam), {args.train_batch} videos at {args.train_crop}")
    for width in args.train_widths:
        times = time_training_step(width, args.train_crop, args.train_batch, args.runs)
        print(f"width {width}: {summary(times)} s/step", flush=True)


if __name__ == "__main__":
    main()
