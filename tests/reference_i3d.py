"""Test-only re-implementations of the two published I3D ports' forward pass, from their own conventions.

Independent of ``models/i3d.py`` (not imported): plain ``torch.nn.functional`` calls on a state dict in
the port's own key names, following each port's rules as its source states them.

piergiaj (``pytorch_i3d.py``): units ``Conv3d_1a_7x7``, ``Mixed_3b.b0``/``b1a``/``b1b``/``b2a``/``b2b``/
``b3b``, ``logits``; ``conv3d.*`` and ``bn.*``. Every convolution and max-pool pads for the size it is
given (``total = max(k - s, 0)`` if ``n % s == 0`` else ``max(k - n % s, 0)``, ``front = total // 2``),
with zeros; max-pools round down; BatchNorm eps 1e-3.

hassony2 (``src/i3dpt.py`` and its copies in CoRe, TPT, FineDiving-TSA): units ``conv3d_1a_7x7``,
``mixed_3b.branch_0``, ``branch_1.0``/``branch_1.1``, ``branch_2.0``/``branch_2.1``, ``branch_3.1``,
``conv3d_0c_1x1``; ``conv3d.*`` and ``batch3d.*``. Pads are fixed per layer, ``total = max(k - s, 0)``,
``front = total // 2``, listed per dimension (T, H, W) then with T moved last and handed to
``ConstantPad3d`` (which reads the tuple as W, W, H, H, T, T); a unit whose six pads are equal uses the
convolution's own symmetric padding instead. Max-pools zero-pad the same way and round up
(``ceil_mode=True``). BatchNorm eps: ``BatchNorm3d(c)``'s 1e-5 in the copies (1e-3 in the upstream port).

Both ports' features are ``AvgPool3d((2, 7, 7), stride 1)`` of Mixed_5c, a 1024-vector for
16 x 224 x 224 clips; logits are the 1x1x1 classifier on that.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from tests.i3d_layout import MIXED, NUM_CLASSES, STEM

Tensor = torch.Tensor
Triple = tuple[int, int, int]

# The network in order: ("conv", stem name, stride) | ("pool", kernel, stride) | ("mixed", name).
NETWORK: list[tuple] = [
    ("conv", "Conv3d_1a_7x7", (2, 2, 2)),
    ("pool", (1, 3, 3), (1, 2, 2)),
    ("conv", "Conv3d_2b_1x1", (1, 1, 1)),
    ("conv", "Conv3d_2c_3x3", (1, 1, 1)),
    ("pool", (1, 3, 3), (1, 2, 2)),
    ("mixed", "Mixed_3b"),
    ("mixed", "Mixed_3c"),
    ("pool", (3, 3, 3), (2, 2, 2)),
    ("mixed", "Mixed_4b"),
    ("mixed", "Mixed_4c"),
    ("mixed", "Mixed_4d"),
    ("mixed", "Mixed_4e"),
    ("mixed", "Mixed_4f"),
    ("pool", (2, 2, 2), (2, 2, 2)),
    ("mixed", "Mixed_5b"),
    ("mixed", "Mixed_5c"),
]
HASSONY2_BRANCHES = {"b0": "branch_0", "b1a": "branch_1.0", "b1b": "branch_1.1",
                     "b2a": "branch_2.0", "b2b": "branch_2.1", "b3b": "branch_3.1"}  # fmt: skip


# ---------------------------------------------------------------- layouts and random checkpoints


def hassony2_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the 287 tensors of hassony2's ``model_rgb.pth`` (no BatchNorm counters)."""
    layout: dict[str, tuple[int, ...]] = {}

    def unit(prefix: str, cin: int, cout: int, k: int) -> None:
        layout[f"{prefix}.conv3d.weight"] = (cout, cin, k, k, k)
        for name in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{prefix}.batch3d.{name}"] = (cout,)

    for name, (cin, cout, kernel) in STEM.items():
        unit(name.lower(), cin, cout, kernel[0])
    channels = STEM["Conv3d_2c_3x3"][1]
    for name, (c0, c1a, c1b, c2a, c2b, c3b) in MIXED.items():
        m = name.lower()
        unit(f"{m}.branch_0", channels, c0, 1)
        unit(f"{m}.branch_1.0", channels, c1a, 1)
        unit(f"{m}.branch_1.1", c1a, c1b, 3)
        unit(f"{m}.branch_2.0", channels, c2a, 1)
        unit(f"{m}.branch_2.1", c2a, c2b, 3)
        unit(f"{m}.branch_3.1", channels, c3b, 1)
        channels = c0 + c1b + c2b + c3b
    layout["conv3d_0c_1x1.conv3d.weight"] = (NUM_CLASSES, channels, 1, 1, 1)
    layout["conv3d_0c_1x1.conv3d.bias"] = (NUM_CLASSES,)
    return layout


def random_checkpoint(layout: dict[str, tuple[int, ...]], seed: int) -> dict[str, Tensor]:
    """Random weights that keep activations of order 1 through the whole network.

    Convolutions: He-normal. BatchNorm: running variance log-uniform in [1e-3, 1] (small enough for the
    eps to matter) with the scale ``gamma = u sqrt(var)``, u in [0.4, 1.2], so each layer's gain is ~u.
    """
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for key, shape in layout.items():
        if key.endswith("conv3d.weight"):
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)
        elif key.endswith("running_var"):
            state[key] = 10.0 ** (-3.0 * torch.rand(shape, generator=generator))
        elif key.endswith(("running_mean", "bias")):
            state[key] = torch.randn(shape, generator=generator) * 0.1
        else:  # BatchNorm weight: filled below from the variance
            state[key] = torch.empty(shape)
    for key, shape in layout.items():
        if key.endswith("running_var"):
            prefix = key.removesuffix("running_var")
            gain = 0.4 + 0.8 * torch.rand(shape, generator=generator)
            state[prefix + "weight"] = gain * state[key].sqrt()
    return state


# ---------------------------------------------------------------- the shared skeleton


def _run(
    state: dict[str, Tensor],
    x: Tensor,
    unit_name: Callable[[str], str],
    branch_name: Callable[[str, str], str],
    bn: str,
    eps: float,
    conv: Callable[[Tensor, Tensor, Triple], Tensor],
    pool: Callable[[Tensor, Triple, Triple], Tensor],
) -> Tensor:
    def unit(prefix: str, x: Tensor, stride: Triple = (1, 1, 1)) -> Tensor:
        x = conv(x, state[f"{prefix}.conv3d.weight"], stride)
        x = F.batch_norm(
            x, state[f"{prefix}.{bn}.running_mean"], state[f"{prefix}.{bn}.running_var"],
            state[f"{prefix}.{bn}.weight"], state[f"{prefix}.{bn}.bias"], training=False, eps=eps,
        )  # fmt: skip
        return F.relu(x)

    for step in NETWORK:
        if step[0] == "conv":
            x = unit(unit_name(step[1]), x, step[2])
        elif step[0] == "pool":
            x = pool(x, step[1], step[2])
        else:
            b = {branch: branch_name(step[1], branch) for branch in ("b0", "b1a", "b1b", "b2a", "b2b", "b3b")}
            x = torch.cat(
                [
                    unit(b["b0"], x),
                    unit(b["b1b"], unit(b["b1a"], x)),
                    unit(b["b2b"], unit(b["b2a"], x)),
                    unit(b["b3b"], pool(x, (3, 3, 3), (1, 1, 1))),
                ],
                dim=1,
            )
    return x


def port_features(mixed_5c: Tensor) -> Tensor:
    """Both ports' feature: AvgPool3d((2, 7, 7), stride 1) of Mixed_5c, flattened (16 x 224 x 224 clips)."""
    pooled = F.avg_pool3d(mixed_5c, (2, 7, 7), stride=1)
    if pooled.shape[2:] != (1, 1, 1):
        raise ValueError(f"the ports' feature needs a 2 x 7 x 7 Mixed_5c, got {tuple(mixed_5c.shape[2:])}")
    return pooled.flatten(1)


def logits(state: dict[str, Tensor], prefix: str, features: Tensor) -> Tensor:
    """The 1x1x1 classifier on (N, 1024) features (dropout is identity in eval mode)."""
    weight, bias = state[f"{prefix}.conv3d.weight"], state[f"{prefix}.conv3d.bias"]
    return F.conv3d(features[:, :, None, None, None], weight, bias).flatten(1)


# ---------------------------------------------------------------- piergiaj


def _tf_same(size: int, k: int, s: int) -> tuple[int, int]:
    total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
    return total // 2, total - total // 2


def _piergiaj_pad(x: Tensor, kernel: Triple, stride: Triple) -> Tensor:
    (tf, tb), (hf, hb), (wf, wb) = (_tf_same(n, k, s) for n, k, s in zip(x.shape[2:], kernel, stride))
    return F.pad(x, (wf, wb, hf, hb, tf, tb))


def piergiaj_mixed_5c(state: dict[str, Tensor], x: Tensor) -> Tensor:
    """Mixed_5c (N, 1024, t, h, w) of piergiaj's InceptionI3d for input x (N, 3, T, H, W)."""

    def conv(x: Tensor, weight: Tensor, stride: Triple) -> Tensor:
        return F.conv3d(_piergiaj_pad(x, tuple(weight.shape[2:]), stride), weight, stride=stride)

    def pool(x: Tensor, kernel: Triple, stride: Triple) -> Tensor:
        return F.max_pool3d(_piergiaj_pad(x, kernel, stride), kernel, stride)

    return _run(state, x, lambda n: n, lambda m, b: f"{m}.{b}", "bn", 1e-3, conv, pool)


# ---------------------------------------------------------------- hassony2


def _hassony2_padding_shape(kernel: Triple, stride: Triple) -> tuple[int, ...]:
    """Per dimension (T, H, W): (front, back) of max(k - s, 0); then T's pair moved to the end."""
    pads: list[int] = []
    for k, s in zip(kernel, stride):
        total = max(k - s, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads[2:] + pads[:2])


def hassony2_mixed_5c(state: dict[str, Tensor], x: Tensor, bn_eps: float = 1e-5) -> Tensor:
    """Mixed_5c (N, 1024, t, h, w) of hassony2's I3D (as copied by CoRe) for input x (N, 3, T, H, W)."""

    def conv(x: Tensor, weight: Tensor, stride: Triple) -> Tensor:
        pads = _hassony2_padding_shape(tuple(weight.shape[2:]), stride)
        if len(set(pads)) == 1:  # "simplify_pad": the convolution pads symmetrically itself
            return F.conv3d(x, weight, stride=stride, padding=pads[0])
        return F.conv3d(F.pad(x, pads, value=0.0), weight, stride=stride)

    def pool(x: Tensor, kernel: Triple, stride: Triple) -> Tensor:
        padded = F.pad(x, _hassony2_padding_shape(kernel, stride), value=0.0)
        return F.max_pool3d(padded, kernel, stride, ceil_mode=True)

    return _run(
        state, x, str.lower, lambda m, b: f"{m.lower()}.{HASSONY2_BRANCHES[b]}", "batch3d", bn_eps, conv, pool
    )
