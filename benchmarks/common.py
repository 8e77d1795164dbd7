"""What every benchmark of the issue table shares: side-by-side timing with pauses, and the machine's description.

``side_by_side`` runs the contenders in turns (the order rotating each round) with a pause before every timed
call, so all of them see the same machine load and none pays for another's spinning thread pool (oneDNN's
OpenMP threads and ONNX Runtime's pool keep spinning for a while after a call returns). It reports min and
median of the repeats: the min is the least disturbed run, the median what a shared machine gives.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PAUSE_SECONDS = 0.3
MEDIA_DIR = REPO / "runs" / "bench-media"


def side_by_side(contenders: dict[str, Callable[[], Any]], repeats: int, pause: float = PAUSE_SECONDS,
                 warmup: int = 1) -> dict[str, dict[str, float]]:
    """{name: {"min_s", "median_s", "repeats"}} of each contender, timed in rotating turns."""
    for function in contenders.values():
        for _ in range(warmup):
            function()
    names = list(contenders)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            time.sleep(pause)
            start = time.perf_counter()
            contenders[name]()
            seconds[name].append(time.perf_counter() - start)
    return {name: {"min_s": min(values), "median_s": statistics.median(values), "repeats": repeats}
            for name, values in seconds.items()}


def ratio(numerator: dict[str, float], denominator: dict[str, float]) -> dict[str, float]:
    """Min over min and median over median."""
    return {"min": numerator["min_s"] / denominator["min_s"], "median": numerator["median_s"] / denominator["median_s"]}


def machine() -> dict[str, Any]:
    """CPU (lscpu's model name and the instruction sets that matter), cores, load, library versions."""
    from models.machine import cpu_description

    cpu = cpu_description()
    versions = {"python": platform.python_version()}
    for module in ("torch", "onnxruntime", "av", "numpy"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = None
    try:
        ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True).stdout.split()[2]
    except (OSError, subprocess.CalledProcessError):
        ffmpeg = None
    versions["ffmpeg_cli"] = ffmpeg
    import torch

    return {
        "cpu": cpu.model, "cpu_flags": list(cpu.flags_summary), "logical_cpus": cpu.logical_cpus,
        "torch_threads": torch.get_num_threads(), "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "load_average": [round(x, 2) for x in os.getloadavg()], "versions": versions,
    }


def other_load() -> str:
    """Other processes' CPU use (ps: %CPU over each one's lifetime), to note beside the numbers of a shared machine."""
    try:
        lines = subprocess.run(["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True,
                               check=True).stdout.splitlines()[1:]
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    others = [line.split(None, 2) for line in lines if line.strip() and int(line.split()[0]) != os.getpid()]
    busy = [f"{name.strip()} {cpu}%" for _, cpu, name in others if float(cpu) >= 5.0]
    return ", ".join(busy[:10]) or "no other process above 5% CPU"
