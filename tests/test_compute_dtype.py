"""The fine-tuning's compute dtype is chosen by what this CPU runs fast (issue #19: bfloat16 autocast was
60-80 x slower on an AVX2-only Zen 3). ``ONEDNN_MAX_CPU_ISA=AVX2`` makes oneDNN behave as on such a CPU;
it is read when torch loads, so those cases run in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from models.i3d import I3D
from tests.service_processes import REPO
from training.backbone import choose_fine_tuning_dtype
from training.compute_dtype import MIN_SPEEDUP, choose_compute_dtype, decide, native_bfloat16
from training.profiles import PROFILES


def never_called(bfloat16: bool) -> None:
    raise AssertionError("no probe step was needed")


def test_the_faster_dtype_wins_and_float32_keeps_ties() -> None:
    assert decide({"float32": 1.0, "bfloat16": 0.5}) == "bfloat16"
    assert decide({"float32": 1.0, "bfloat16": 1.0 / MIN_SPEEDUP}) == "bfloat16"
    assert decide({"float32": 1.0, "bfloat16": 0.95}) == "float32"  # within noise: keep the exact dtype
    assert decide({"float32": 1.0, "bfloat16": 40.0}) == "float32"


def test_an_explicit_dtype_is_taken_as_asked_without_probing() -> None:
    assert choose_compute_dtype("float32", never_called).dtype == "float32"
    choice = choose_compute_dtype("bfloat16", never_called)
    assert choice.dtype == "bfloat16" and choice.requested == "bfloat16" and choice.probe_seconds is None
    with pytest.raises(ValueError, match="choose from auto, float32, bfloat16"):
        choose_compute_dtype("float16", never_called)  # type: ignore[arg-type]


AVX2_PROBE = textwrap.dedent("""
    import json, time
    import numpy as np, torch
    from models.i3d import I3D
    from training.backbone import choose_fine_tuning_dtype
    from training.profiles import PROFILES

    profile = PROFILES["cpu-finetune"]
    shape = (profile.backbone.batch_size, profile.preprocessing.num_frames, profile.preprocessing.crop,
             profile.preprocessing.crop, 3)
    frames = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    started = time.perf_counter()
    choice = choose_fine_tuning_dtype(I3D(width=profile.backbone_width), frames, profile)
    seconds_to_choose = time.perf_counter() - started
    print(json.dumps({"supported": torch.ops.mkldnn._is_mkldnn_bf16_supported(), "choice": choice.to_dict(),
                      "seconds_to_choose": seconds_to_choose}))
""")


def test_on_an_avx2_only_cpu_fine_tuning_stays_float32_without_timing_anything() -> None:
    """The reproduction: oneDNN limited to AVX2 has no bfloat16 kernels (emulated, a demo step is 13-22 x slower:
    benchmarks/bench_bfloat16.py), so ``auto`` keeps float32 without timing anything."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    done = subprocess.run([sys.executable, "-c", AVX2_PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=540, check=True)
    measured = json.loads(done.stdout.splitlines()[-1])
    assert measured["supported"] is False
    choice = measured["choice"]
    assert choice["dtype"] == "float32" and choice["requested"] == "auto" and choice["native_bfloat16"] is False
    assert "no native bfloat16" in choice["reason"] and choice["probe_seconds"] is None


@pytest.mark.skipif(not native_bfloat16(), reason="this CPU has no native bfloat16 (oneDNN)")
def test_with_native_bfloat16_the_probe_times_both_and_leaves_the_model_as_it_was() -> None:
    """On a CPU with native bfloat16 the choice is the probe's: a real step of the demo profile timed in both
    dtypes, decided by ``decide``. Which dtype wins is a speed question for benchmarks/bench_bfloat16.py (a
    busy machine may reverse it); here, that the probe ran, decided by its own times and touched nothing."""
    profile = PROFILES["cpu-finetune"]
    shape = (profile.backbone.batch_size, profile.preprocessing.num_frames, profile.preprocessing.crop,
             profile.preprocessing.crop, 3)
    frames = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    torch.manual_seed(0)
    backbone = I3D(width=profile.backbone_width)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    random_state = torch.get_rng_state()
    choice = choose_fine_tuning_dtype(backbone, frames, profile)
    assert choice.native_bfloat16 and choice.requested == "auto" and "timed probe" in choice.reason
    assert set(choice.probe_seconds) == {"float32", "bfloat16"} and min(choice.probe_seconds.values()) > 0
    assert choice.dtype == decide(choice.probe_seconds)
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())  # BatchNorm statistics too
    assert torch.equal(torch.get_rng_state(), random_state)
