"""Which dtype the backbone's fine-tuning steps compute in: float32, or bfloat16 autocast where it is faster.

bfloat16 autocast runs the convolutions of each forward pass in bfloat16 (parameters, loss and optimizer
stay float32). It pays only where oneDNN has native bfloat16 kernels (AVX-512 BF16, AMX): on this
project's Zen 4 a step is about 1.3 x cheaper, on an AVX2-only CPU (most servers and laptops) oneDNN
emulates it and a step is 30-80 x slower (``benchmarks/bench_bfloat16.py``). ``"auto"`` decides per
machine, in two stages:

1. capability: without oneDNN bfloat16 support (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``) float32,
   no timing needed;
2. a timed probe: otherwise one real step (forward + backward of a copy of the model on the first batch)
   runs in both dtypes, alternating, and bfloat16 is taken only when its fastest step beats float32's by
   ``MIN_SPEEDUP``; float32 (exact) wins ties.

The choice, its reason and the probe's times go into the training report and the model card.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch

ComputeDtype = Literal["auto", "float32", "bfloat16"]
COMPUTE_DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16")
MIN_SPEEDUP = 1.1  # bfloat16 must be at least this much faster to be worth its rounding
PROBE_REPEATS = 3  # timed steps per dtype, after one untimed warm-up each (fastest counts)


@dataclass(frozen=True)
class DtypeChoice:
    """What the fine-tuning computes in, and why."""

    dtype: Literal["float32", "bfloat16"]
    requested: ComputeDtype
    native_bfloat16: bool  # oneDNN reports bfloat16 support on this CPU
    reason: str
    probe_seconds: dict[str, float] | None = None  # fastest probe step per dtype, when timed

    @property
    def bfloat16(self) -> bool:
        return self.dtype == "bfloat16"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def native_bfloat16() -> bool:
    """oneDNN's own check: an ISA with bfloat16 kernels (AVX-512 core or later, AMX) is available."""
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def time_steps(step: Callable[[bool], None], repeats: int = PROBE_REPEATS) -> dict[str, float]:
    """Fastest of ``repeats`` timed calls of ``step(bfloat16)`` per dtype, alternating after a warm-up each."""
    for bfloat16 in (False, True):
        step(bfloat16)
    best = {"float32": float("inf"), "bfloat16": float("inf")}
    for _ in range(repeats):
        for name in ("float32", "bfloat16"):
            start = time.perf_counter()
            step(name == "bfloat16")
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def decide(seconds: dict[str, float]) -> Literal["float32", "bfloat16"]:
    """bfloat16 when its step is at least ``MIN_SPEEDUP`` x faster than float32's, else float32."""
    return "bfloat16" if seconds["bfloat16"] * MIN_SPEEDUP <= seconds["float32"] else "float32"


def choose_compute_dtype(requested: ComputeDtype, step: Callable[[bool], None]) -> DtypeChoice:
    """Resolve ``requested`` on this machine; ``step(bfloat16)`` runs one probe step (only for ``"auto"``)."""
    if requested not in COMPUTE_DTYPES:
        raise ValueError(f"unknown compute dtype {requested!r}; choose from {', '.join(COMPUTE_DTYPES)}")
    native = native_bfloat16()
    if requested == "float32":
        return DtypeChoice("float32", requested, native, "asked for float32")
    if requested == "bfloat16":
        reason = "asked for bfloat16" + ("" if native else
                                         " (this CPU has no native bfloat16: steps may be many times slower)")
        return DtypeChoice("bfloat16", requested, native, reason)
    if not native:
        return DtypeChoice("float32", requested, native,
                           "this CPU has no native bfloat16 (oneDNN), which would be emulated and slow")
    seconds = time_steps(step)
    dtype = decide(seconds)
    speedup = seconds["float32"] / seconds["bfloat16"]
    reason = (f"timed probe: a step took {seconds['float32']:.3f} s in float32 and {seconds['bfloat16']:.3f} s in "
              f"bfloat16 ({speedup:.2f} x; bfloat16 needs {MIN_SPEEDUP:g} x)")
    return DtypeChoice(dtype, requested, native, reason, {k: round(v, 4) for k, v in seconds.items()})
