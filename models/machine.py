"""What this machine is, as far as a speed measurement depends on it: the CPU model and its instruction sets.

Read from ``/proc/cpuinfo`` (Linux); elsewhere the platform's processor string and no flags. The flags
summary names the instruction sets that decide which kernels oneDNN, inductor and ONNX Runtime pick;
``flags_sha256`` covers the whole flag list.
"""

from __future__ import annotations

import hashlib
import os
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SUMMARY_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


@dataclass(frozen=True)
class CpuDescription:
    model: str
    flags_summary: tuple[str, ...]
    flags_sha256: str
    logical_cpus: int


@cache
def cpu_description() -> CpuDescription:
    model, flags = platform.processor() or platform.machine(), []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = value.split()
    summary = tuple(flag for flag in SUMMARY_FLAGS if flag in flags)
    digest = hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16]
    return CpuDescription(model=model, flags_summary=summary, flags_sha256=digest, logical_cpus=os.cpu_count() or 1)
