"""The demo's fine-tuning step in float32 against bfloat16 autocast, side by side, on this CPU as it is and
as an AVX2-only CPU would run it.

Fine-tuning can run the backbone's forward pass of each step under ``torch.autocast(dtype=torch.bfloat16)``
(parameters, the loss and AdamW stay float32); ``compute_dtype="auto"`` (training/compute_dtype.py)
decides per machine. This script times one step (forward, backward, AdamW) on a batch of 16 demo clips
(I3D width 0.25, 32 frames at 64 x 64, channels-last) both ways, alternating runs with a pause between
them, once per oneDNN ISA setting, each in a fresh interpreter (oneDNN reads ``ONEDNN_MAX_CPU_ISA`` when it
loads): ``native`` (what this CPU has) and ``avx2`` (``ONEDNN_MAX_CPU_ISA=AVX2`` and
``ATEN_CPU_CAPABILITY=avx2``: a CPU without AVX-512 and native bfloat16, such as AMD Zen 3). It prints
whether oneDNN reports bfloat16 support, the step times, and what ``auto`` chooses there. With
``--gradients`` it also reports how far one bfloat16 gradient is from the float32 one on the same random
weights and batch (cosine similarity, relative norm of the difference). Run from the repository root:

    .venv/bin/python benchmarks/bench_bfloat16.py [--repeats 5] [--avx2-repeats 2] [--threads 2] [--gradients]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable

import numpy as np
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


ISA_SETTINGS = {
    "native": {},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
}


def measure(repeats: int, threads: int, gradient_check: bool) -> dict[str, object]:
    """Step times in this interpreter and what ``compute_dtype="auto"`` picks here."""
    from training.backbone import choose_fine_tuning_dtype
    from training.profiles import PROFILES

    torch.set_num_threads(threads)
    if gradient_check:
        exact, fast = gradients(bfloat16=False), gradients(bfloat16=True)
        for part in exact:
            cosine = torch.nn.functional.cosine_similarity(exact[part], fast[part], dim=0)
            relative = (exact[part] - fast[part]).norm() / exact[part].norm()
            print(f"gradient of one step ({part}), bfloat16 against float32: cosine {float(cosine):.3f}, "
                  f"relative difference {float(relative):.3f}, float32 norm {float(exact[part].norm()):.3g}",
                  file=sys.stderr)
    times = alternate({"float32": training_step(False), "bfloat16": training_step(True)}, repeats, pause=0.5)
    profile = PROFILES["cpu-finetune"]
    frames = np.random.default_rng(0).integers(0, 256, (TRAIN_BATCH, FRAMES, CROP, CROP, 3), dtype=np.uint8)
    choice = choose_fine_tuning_dtype(I3D(width=WIDTH), frames, profile)
    return {"bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "float32": statistics.median(times["float32"]), "bfloat16": statistics.median(times["bfloat16"]),
            "auto": choice.dtype, "auto_reason": choice.reason}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per dtype, native ISA")
    parser.add_argument("--avx2-repeats", type=int, default=2, help="timed steps per dtype as on an AVX2 CPU "
                        "(an emulated bfloat16 step takes tens of seconds)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gradients", action="store_true", help="also compare one step's gradients")
    parser.add_argument("--isa", choices=[*ISA_SETTINGS, "both"], default="both")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        repeats = args.avx2_repeats if args.isa == "avx2" else args.repeats
        print(json.dumps(measure(repeats, args.threads, args.gradients)))
        return

    print(f"| oneDNN ISA ({FRAMES} x {CROP} x {CROP}, width {WIDTH}, batch {TRAIN_BATCH}, {args.threads} threads) | "
          "bfloat16 kernels | float32 s | bfloat16 autocast s | bfloat16 / float32 | auto picks |")
    print("|---|---|---|---|---|---|")
    for isa in ISA_SETTINGS if args.isa == "both" else [args.isa]:
        command = [sys.executable, __file__, "--child", "--isa", isa, "--repeats", str(args.repeats),
                   "--avx2-repeats", str(args.avx2_repeats), "--threads", str(args.threads)]
        done = subprocess.run(command + (["--gradients"] if args.gradients else []), check=True, text=True,
                              stdout=subprocess.PIPE, env={**os.environ, **ISA_SETTINGS[isa]})
        result = json.loads(done.stdout.splitlines()[-1])
        print(f"| {isa} ({result['cpu_capability']}) | {'yes' if result['bf16_supported'] else 'no'} | "
              f"{result['float32']:.3f} | {result['bfloat16']:.3f} | {result['bfloat16'] / result['float32']:.2f} | "
              f"{result['auto']} |", flush=True)
        print(f"  auto: {result['auto_reason']}", file=sys.stderr)


if __name__ == "__main__":
    main()
