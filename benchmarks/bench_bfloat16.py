"""The demo's fine-tuning step in float32 against bfloat16 autocast, side by side.

``BackboneTrainConfig.autocast_bfloat16`` runs the backbone's forward pass of each fine-tuning step under
``torch.autocast(dtype=torch.bfloat16)``; parameters, the loss and AdamW stay float32. This script times
one step (forward, backward, AdamW) on a batch of 16 demo clips (I3D width 0.25, 32 frames at 64 x 64,
channels-last) both ways, alternating runs, and reports how far the bfloat16 gradient is from the float32
one on the same random weights and batch (cosine similarity, relative norm of the difference), for the
stem convolution and for the rest of the network apart. CPUs without native bfloat16 (AVX-512 BF16 or
AMX) emulate it and may be slower. Run from the repository root:

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


def seeded_setup() -> tuple[I3D, torch.nn.Linear, torch.Tensor, torch.Tensor]:
    """Seed-0 backbone, probe, batch of clips and targets: both precisions start from the same ones."""
    torch.manual_seed(0)
    model = I3D(width=WIDTH).train()
    probe = torch.nn.Linear(model.feature_dim, 1)
    return model, probe, torch.rand(TRAIN_BATCH, 3, FRAMES, CROP, CROP) * 2 - 1, torch.randn(TRAIN_BATCH, 1)


def training_step(bfloat16: bool) -> Callable[[], None]:
    model, probe, videos, targets = seeded_setup()
    optimizer = torch.optim.AdamW([*model.parameters(), *probe.parameters()], lr=1e-4)

    def step() -> None:
        loss = probe_loss(model, probe, videos, targets, bfloat16)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def gradients(bfloat16: bool) -> dict[str, torch.Tensor]:
    """The flattened gradient of one step from :func:`seeded_setup`: the stem convolution's
    (``Conv3d_1a_7x7``) and the rest's (the classifier, unused, gets none)."""
    model, probe, videos, targets = seeded_setup()
    probe_loss(model, probe, videos, targets, bfloat16).backward()
    named = [*model.named_parameters(), *probe.named_parameters(prefix="probe")]
    parts: dict[str, list[torch.Tensor]] = {"stem": [], "rest": []}
    for name, parameter in named:
        if parameter.grad is not None:
            parts["stem" if name.startswith("Conv3d_1a_7x7.") else "rest"].append(parameter.grad.flatten())
    return {part: torch.cat(grads) for part, grads in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    exact, fast = gradients(bfloat16=False), gradients(bfloat16=True)
    for part in exact:
        cosine = torch.nn.functional.cosine_similarity(exact[part], fast[part], dim=0)
        relative = (exact[part] - fast[part]).norm() / exact[part].norm()
        print(f"gradient of one step ({part}), bfloat16 against float32: cosine {float(cosine):.3f}, "
              f"relative difference {float(relative):.3f}, float32 norm {float(exact[part].norm()):.3g}")

    times = alternate({"float32": training_step(False), "bfloat16": training_step(True)}, args.repeats)
    slow, quick = statistics.median(times["float32"]), statistics.median(times["bfloat16"])
    print(f"| case ({FRAMES} x {CROP} x {CROP}, width {WIDTH}) | float32 s | bfloat16 autocast s | ratio |")
    print("|---|---|---|---|")
    print(f"| fine-tuning step, batch {TRAIN_BATCH} | {slow:.3f} | {quick:.3f} | {slow / quick:.2f} |")


if __name__ == "__main__":
    main()
