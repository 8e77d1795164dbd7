"""Subnormal floats flushed to zero: in a scoring head's weights at load, and in training every few steps.

A float32 below 2**-126 in magnitude (subnormal) makes x86 cores take a microcode assist on every operation
it enters, tens of times the cost of a normal one. Adam with L2 weight decay shrinks a weight that gets no
gradient from the data geometrically (to 5e-25 after 1,000 steps at lr 1e-3, weight decay 1e-4) until it is
subnormal, and there it stays: half the parameters of the demo's CoRe head (1,031,930 of 2,117,166) were,
its tree layers ran 60-80 x slower than with those weights at zero, and a training step of it 2.5 x slower
(docs/fast-path.md). A subnormal's contribution to any sum is below 2**-126 times its factor, so setting it
to zero changes no score or feature. A backbone's loaded weights are left as they are: they define the
feature fingerprint its bank was built under.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

SMALLEST_NORMAL = {dtype: torch.finfo(dtype).tiny for dtype in (torch.float16, torch.bfloat16, torch.float32,
                                                                torch.float64)}
TRAINING_FLUSH_EVERY = 16
"""Optimiser steps between flushes in training: a flush of the demo head's parameters and Adam moments costs
about half a training step (7.2 against 12.6 ms at batch 64), and new subnormals take hundreds of steps to
appear."""


def subnormal_mask(tensor: torch.Tensor) -> torch.Tensor:
    """True where a floating-point tensor holds a nonzero value smaller in magnitude than its smallest normal."""
    return (tensor != 0) & (tensor.abs() < SMALLEST_NORMAL[tensor.dtype])


def flush_subnormals(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with every subnormal entry of its floating-point tensors set to zero (copies only the
    tensors that have one)."""
    flushed = {}
    for name, tensor in state.items():
        if tensor.dtype in SMALLEST_NORMAL:
            mask = subnormal_mask(tensor)
            if bool(mask.any()):
                tensor = tensor.masked_fill(mask, 0)
        flushed[name] = tensor
    return flushed


@torch.no_grad()
def flush_subnormals_(tensors: Iterable[torch.Tensor]) -> None:
    """Set the subnormal entries of floating-point tensors to zero, in place."""
    for tensor in tensors:
        if tensor.dtype in SMALLEST_NORMAL:
            tensor.masked_fill_(subnormal_mask(tensor), 0)


def flush_subnormals_while_training(optimizer: torch.optim.Optimizer, every: int = TRAINING_FLUSH_EVERY) -> Any:
    """Flush the parameters and the optimiser's state tensors every ``every`` steps (a step post-hook);
    returns the hook's handle."""
    steps = 0

    def flush(optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        nonlocal steps
        steps += 1
        if steps % every == 0:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            moments = [v for state in optimizer.state.values() for v in state.values()
                       if isinstance(v, torch.Tensor) and v.dim() > 0]
            flush_subnormals_([*params, *moments])

    return optimizer.register_step_post_hook(flush)
