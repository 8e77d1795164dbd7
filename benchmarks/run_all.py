"""Run every benchmark in turn (``make bench``); each prints its own results.

The numbers in benchmarks/README.md come from these scripts; run them on an otherwise idle machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = ("bench_decode.py", "bench_backbone.py", "bench_channels_last.py", "bench_bfloat16.py", "bench_core_head.py", "bench_render.py", "bench_localise.py", "bench_score.py", "bench_runtime.py", "bench_familiarity.py", "bench_wait.py")


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        if subprocess.run([sys.executable, str(here / name)], cwd=here.parent, check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
