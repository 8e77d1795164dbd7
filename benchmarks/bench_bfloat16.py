"""The demo's fine-tuning step in float32 against bfloat16 autocast, side by side.

``BackboneTrainConfig.autocast_bfloat16`` runs the backbone's forward pass of each fine-tuning step under
``torch.autocast(dtype=torch.bfloat16)``; parameters, the loss and AdamW stay float32. This script times
one step (forward, backward, AdamW) on a batch of 16 demo clips (I3D width 0.25, 32 frames at 64 x 64,
channels-last) both ways, alternating runs, and reports how far the bfloat16 gradient is from the float32
one on the same weights and batch (cosine similarity, relative norm of the difference). CPUs without
native bfloat16 (AVX-512 BF16 or AMX) emulate it and may be slower. Run from the repository root:

    .venv/bin/python benchmarks/bench_bfloat16.py [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from bench_channels_last import CROP, FRAMES, TRAIN_BATCH, WIDTH, alternate

from models.i3d import I3D


def probe_loss(model: I3D, probe: torch.nn.Linear, videos: torch.Tensor, targets: torch.Tensor,
               bfloat16: bool) -> torch.Tensor:
    """The fine-tuning objective (training/backbone.py): pooled features -> linear probe -> MSE."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
        pooled = model.forward_features(videos)
    return torch.nn.functional.mse_loss(probe(pooled.float()), targets)


def training_step(bfloat16: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    model, probe = I3D(width=WIDTH).train(), torch.nn.Linear(I3D(width=WIDTH).feature_dim, 1)
    optimizer = torch.optim.AdamW([*model.parameters(), *probe.parameters()], lr=1e-4)
    videos, targets = torch.rand(TRAIN_BATCH, 3, FRAMES, CROP, CROP) * 2 - 1, torch.randn(TRAIN_BATCH, 1)

    def step() -> None:
        loss = probe_loss(model, probe, videos, targets, bfloat16)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def gradient(bfloat16: bool) -> torch.Tensor:
    """The flattened gradient of one step from seed-0 weights and batch."""
    torch.manual_seed(0)
    model, probe = I3D(width=WIDTH).train(), torch.nn.Linear(I3D(width=WIDTH).feature_dim, 1)
    videos, targets = torch.rand(TRAIN_BATCH, 3, FRAMES, CROP, CROP) * 2 - 1, torch.randn(TRAIN_BATCH, 1)
    probe_loss(model, probe, videos, targets, bfloat16).backward()
    return torch.cat([p.grad.flatten() for p in [*model.parameters(), *probe.parameters()]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    exact, fast = gradient(bfloat16=False), gradient(bfloat16=True)
    cosine = torch.nn.functional.cosine_similarity(exact, fast, dim=0)
    relative = (exact - fast).norm() / exact.norm()
    print(f"gradient of one step, bfloat16 against float32: cosine {float(cosine):.4f}, "
          f"relative difference {float(relative):.3f}")

    times = alternate({"float32": training_step(False), "bfloat16": training_step(True)}, args.repeats)
    slow, quick = statistics.median(times["float32"]), statistics.median(times["bfloat16"])
    print(f"| case ({FRAMES} x {CROP} x {CROP}, width {WIDTH}) | float32 s | bfloat16 autocast s | ratio |")
    print("|---|---|---|---|")
    print(f"| fine-tuning step, batch {TRAIN_BATCH} | {slow:.3f} | {quick:.3f} | {slow / quick:.2f} |")


if __name__ == "__main__":
    main()
