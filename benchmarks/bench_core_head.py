"""One CoRe-head training step with the reference's grouped Conv1d tree against the batched matmuls, side by side.

The tree's grouped layers (``models/core.py``) were ``nn.Conv1d(kernel_size=1, groups=g)`` over a length-1
sequence, as in the reference code; they are now :class:`models.core.GroupedLinear` (same parameters, one
batched matrix product). This script times one training step of the demo's head (D=256, hidden 256, depth 4,
batch 64: forward, GART loss, backward, Adam) with the Conv1d tree and Adam's per-tensor loop, the
reference's way, against GroupedLinear with Adam's multi-tensor (``foreach``) update, the trainer's way
(``training/train_core.py``), and each change alone. Same seed, same weights, alternating runs. Run from the
repository root:

    .venv/bin/python benchmarks/bench_core_head.py [--repeats 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from bench_channels_last import alternate
from torch import nn

from models.core import CoReHead, GroupedLinear
from models.gart import GroupBoundaries, gart_loss

FEATURES, HIDDEN, DEPTH, BATCH = 256, 256, 4, 64


class PointwiseConv1d(nn.Conv1d):
    """The reference's layer: Conv1d(kernel_size=1, groups) on (B, in) as a length-1 sequence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.unsqueeze(-1)).squeeze(-1)


def as_conv1d(head: CoReHead) -> CoReHead:
    """Replace every GroupedLinear of ``head`` by the equivalent grouped Conv1d with the same parameters."""
    for parent in list(head.modules()):
        for name, child in parent.named_children():
            if isinstance(child, GroupedLinear):
                out_features, in_per_group, _ = child.weight.shape
                conv = PointwiseConv1d(in_per_group * child.groups, out_features, 1, groups=child.groups)
                conv.load_state_dict(child.state_dict())
                setattr(parent, name, conv)
    return head


def training_step(conv1d: bool, foreach: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    head = CoReHead(feature_dim=FEATURES, hidden=HIDDEN, depth=DEPTH, label_scale=10.0)
    if conv1d:
        head = as_conv1d(head)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=1e-4, foreach=foreach)
    boundaries = GroupBoundaries.from_deltas(torch.rand(1000).numpy() * 3, num_groups=2**DEPTH, symmetric=True,
                                             score_range=10.0)
    pairs = torch.cat([torch.randn(BATCH, 2 * FEATURES), torch.rand(BATCH, 1)], dim=1)
    group_idx, reg_target = boundaries.assign(torch.randn(BATCH))

    def step() -> None:
        log_probs, leaf_values = head(pairs)
        loss = gart_loss(log_probs, leaf_values, group_idx, reg_target)
        optimizer.zero_grad(set_to_none=True)
        loss["total"].backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cases = {
        "grouped Conv1d, Adam per tensor (reference)": training_step(conv1d=True, foreach=False),
        "GroupedLinear, Adam per tensor": training_step(conv1d=False, foreach=False),
        "grouped Conv1d, Adam foreach": training_step(conv1d=True, foreach=True),
        "GroupedLinear, Adam foreach (the trainer)": training_step(conv1d=False, foreach=True),
    }
    times = alternate(cases, args.repeats)
    reference = statistics.median(next(iter(times.values())))
    print(f"| CoRe head training step (D={FEATURES}, hidden {HIDDEN}, depth {DEPTH}, batch {BATCH}) | median ms | "
          "speed-up |")
    print("|---|---|---|")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"| {name} | {median * 1000:.1f} | {reference / median:.2f} |")


if __name__ == "__main__":
    main()
