"""Where training runs and in which precision: the device, and the autocast dtype it does fast.

- Device: ``"auto"`` is the first CUDA GPU when there is one, else the CPU; any ``torch.device`` string
  (``"cuda:1"``, ``"cpu"``) is taken as given and checked.
- Precision (``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"``): the dtype of autocast for the
  backbone's forward pass; weights, losses and optimiser state stay float32. ``"auto"`` picks bfloat16 on a
  GPU that supports it, float16 (with loss scaling) on an older GPU, and on the CPU bfloat16 only when
  oneDNN has native bfloat16 kernels on this CPU (``training.compute_dtype.native_bfloat16``: AVX-512 BF16
  or AMX), float32 otherwise (an AVX2-only CPU emulates bfloat16, 13-22 x slower per step in
  ``benchmarks/bench_bfloat16.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from training.compute_dtype import native_bfloat16

Precision = Literal["auto", "float32", "bfloat16", "float16"]
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: ``cuda`` when a GPU is visible, else ``cpu``; otherwise the named device, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU on this machine")
    return device


@dataclass(frozen=True)
class MixedPrecision:
    """The chosen autocast dtype (None: float32 throughout) and whether the loss needs scaling (float16)."""

    device: torch.device
    dtype: torch.dtype | None

    @property
    def name(self) -> str:
        return "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")

    @property
    def scales_loss(self) -> bool:
        return self.dtype == torch.float16 and self.device.type == "cuda"

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)


def choose_precision(device: torch.device, precision: Precision = "auto") -> MixedPrecision:
    """The autocast dtype for ``precision`` on ``device`` (module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "float32":
        return MixedPrecision(device, None)
    if precision == "bfloat16":
        return MixedPrecision(device, torch.bfloat16)
    if precision == "float16":
        if device.type != "cuda":
            raise ValueError("float16 autocast is for GPUs; use bfloat16 or float32 on the CPU")
        return MixedPrecision(device, torch.float16)
    if device.type == "cuda":
        return MixedPrecision(device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    if device.type == "cpu":
        return MixedPrecision(device, torch.bfloat16 if native_bfloat16() else None)
    return MixedPrecision(device, None)
