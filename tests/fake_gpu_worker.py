"""``aqa worker`` on a machine that pretends to have a CUDA GPU, recording every touch of CUDA.

``python -m tests.fake_gpu_worker LOG [aqa worker options]``: torch (the CPU build) is made to report one
GPU, and each step that would initialise the CUDA driver (``cudaGetDeviceCount``, what
``torch.cuda.is_available()`` calls) or create a CUDA context (``torch.cuda._lazy_init``, which every
tensor or module moved to CUDA goes through) is appended to LOG as a JSON line with the process id
instead; a context cannot really be made, so that step then fails. Before every fork the process writes
whether CUDA is initialised. Run by tests/test_worker_fork_safety.py.
"""

from __future__ import annotations

import json
import os
import sys

import torch


def install(log_path: str) -> None:
    def record(event: str) -> None:
        with open(log_path, "a") as log:
            log.write(json.dumps({"event": event, "pid": os.getpid(), "ppid": os.getppid(),
                                  "cuda_initialized": torch.cuda.is_initialized()}) + "\n")

    def device_count() -> int:
        record("cuda_driver_init")
        return 1

    def lazy_init() -> None:
        record("cuda_context")
        raise RuntimeError("fake GPU: this test machine cannot create a CUDA context")

    torch._C._cuda_getDeviceCount = device_count
    torch.cuda._is_compiled = lambda: True
    torch.cuda._device_count_nvml = lambda: -1  # NVML not there: torch falls back to cudaGetDeviceCount
    torch.cuda._lazy_init = lazy_init
    os.register_at_fork(before=lambda: record("fork"))


if __name__ == "__main__":
    install(sys.argv[1])
    from aqa.cli import main

    sys.exit(main(["worker", *sys.argv[2:]]))
