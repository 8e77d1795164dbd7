"""Inflated Inception-v1 (I3D), Carreira & Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017.

The network of the paper's Fig. 3 (left): a stem of 3-D convolutions and max-pools, nine Inception
modules (Fig. 3, right: four parallel branches, 1x1x1 | 1x1x1 -> 3x3x3 | 1x1x1 -> 3x3x3 |
3x3x3 max-pool -> 1x1x1, concatenated on channels) and a 1x1x1 convolution classifier. Every
convolution is Conv3d (no bias) -> BatchNorm (eps 1e-3, momentum 0.01) -> ReLU, and every convolution
and max-pool pads TF-style "SAME" (:func:`same_padding`).

State-dict layout
-----------------
Module and key names follow the PyTorch port by piergiaj (``pytorch_i3d.py``), so its Kinetics
checkpoint ``rgb_imagenet.pt`` loads with ``load_state_dict(sd, strict=True)``. Shapes at
``width=1.0``; ``bn.*`` is ``bn.{weight, bias, running_mean, running_var}``, each of shape (out
channels,); max-pools have no tensors::

    module kernel/stride          key prefix                         tensors
    Conv3d_1a_7x7 7x7x7/2         Conv3d_1a_7x7.                     conv3d.weight (64, 3, 7, 7, 7), bn.*
    MaxPool3d_2a_3x3 1x3x3/1,2,2
    Conv3d_2b_1x1 1x1x1/1         Conv3d_2b_1x1.                     conv3d.weight (64, 64, 1, 1, 1), bn.*
    Conv3d_2c_3x3 3x3x3/1         Conv3d_2c_3x3.                     conv3d.weight (192, 64, 3, 3, 3), bn.*
    MaxPool3d_3a_3x3 1x3x3/1,2,2
    Mixed_3b, Mixed_3c            Mixed_3b.{b0,b1a,b1b,b2a,b2b,b3b}. conv3d.weight (c, c_in, k, k, k), bn.*
    MaxPool3d_4a_3x3 3x3x3/2
    Mixed_4b ... Mixed_4f         Mixed_4b.{...}.                    as above
    MaxPool3d_5a_2x2 2x2x2/2
    Mixed_5b, Mixed_5c            Mixed_5b.{...}.                    as above (Mixed_5c: 1024 channels out)
    logits 1x1x1/1                logits.conv3d.                     weight (400, 1024, 1, 1, 1), bias (400,)

In an Inception module, ``c`` comes from :data:`INCEPTION_CHANNELS`, ``k`` is 3 for b1b and b2b and 1
otherwise, ``c_in`` is b1a's / b2a's ``c`` for b1b / b2b and the module input otherwise; ``b3a`` is the
3x3x3 / 1 max-pool (no tensors).

That is 57 units x 5 + 2 = 287 tensors and 12,697,264 parameters (checked in ``tests/test_i3d.py``).
BatchNorm's ``num_batches_tracked`` counter is not part of the layout (the port's checkpoint comes
from a PyTorch that predates it): :class:`BatchNorm3dNoCounter` keeps it out of ``state_dict()`` and
ignores it if a checkpoint carries one, so checkpoints with or without the counters load strictly. The counter is
only read when ``momentum`` is None, which it never is here.

Input: (N, 3, T, H, W) in [-1, 1] (the Kinetics convention, ``x / 127.5 - 1``). ``I3D(width=w)``
scales every channel count (:func:`scale_channels`) for a small CPU model with the same key names.

Padding modes
-------------
``padding="tf_same"`` (default, piergiaj and TensorFlow) pads each layer's input for its actual size
(:func:`same_padding`). ``padding="static_same"`` reproduces the hassony2 port and the copies of it in
CoRe, TPT and FineDiving-TSA: the pads are fixed when the layer is built, as TF's rule gives them for a
size divisible by the stride (:func:`static_same_padding`), and the max-pools round their output size
up (``ceil_mode``). The two agree exactly when T % 4 == 0 and H % 16 == 0 and W % 16 == 0 (every
strided layer then sees an even size, as with CoRe's 16 x 224 x 224 clips) and differ otherwise
(``tests/test_weights_import.py``). Importing hassony2 checkpoints: ``models/weights``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.clips import ClipProtocol

Triple = tuple[int, int, int]
PaddingMode = Literal["tf_same", "static_same"]
PADDING_MODES: tuple[str, ...] = ("tf_same", "static_same")

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
CHANNEL_DIVISOR = 8
INPUT_LIMIT = 1.5

# Inception-v1 channel counts per module (Szegedy et al. 2015, Table 1; I3D Fig. 3):
# (b0 1x1, b1a 3x3-reduce, b1b 3x3, b2a "5x5"-reduce, b2b "5x5" (3x3x3 in I3D), b3b pool-projection).
INCEPTION_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

# Max-pool name -> (kernel, stride), and the order in which the feature stages run.
_POOLS: dict[str, tuple[Triple, Triple]] = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}
_STAGES = (
    "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
    "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3",
    "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f", "MaxPool3d_5a_2x2",
    "Mixed_5b", "Mixed_5c",
)  # fmt: skip


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding of one dimension as (front, back), so the output has ceil(size / stride).

    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0);
    front = total // 2, back = total - front (the extra pixel goes at the end).
    """
    remainder = size % stride
    total = max(kernel - (stride if remainder == 0 else remainder), 0)
    return total // 2, total - total // 2


def static_same_padding(kernel: int, stride: int) -> tuple[int, int]:
    """The hassony2 port's fixed "SAME" padding: :func:`same_padding` of a size divisible by ``stride``.

    total = max(kernel - stride, 0); front = total // 2, back = total - front, whatever the input size.
    """
    total = max(kernel - stride, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: Triple, stride: Triple, mode: PaddingMode = "tf_same") -> torch.Tensor:
    """Zero-pad (N, C, T, H, W) for a "SAME" window of ``kernel`` / ``stride`` (no copy if no pad)."""
    pads = [p for pair in reversed(same_pads(tuple(x.shape[2:]), kernel, stride, mode)) for p in pair]
    return F.pad(x, pads) if any(pads) else x  # F.pad wants W, H, T


def same_pads(sizes: tuple[int, ...], kernel: Triple, stride: Triple, mode: PaddingMode) -> list[tuple[int, int]]:
    """(front, back) of each of T, H, W for a "SAME" window of ``kernel`` / ``stride`` on ``sizes``."""
    if mode == "tf_same":
        return [same_padding(n, k, s) for n, k, s in zip(sizes, kernel, stride)]
    return [static_same_padding(k, s) for k, s in zip(kernel, stride)]


def _check_padding(padding: str) -> None:
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")


def scale_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded half-up to a multiple of 8, at least 8 (exact for width 1.0)."""
    return max(CHANNEL_DIVISOR, int(channels * width / CHANNEL_DIVISOR + 0.5) * CHANNEL_DIVISOR)


class BatchNorm3dNoCounter(nn.BatchNorm3d):
    """BatchNorm3d whose ``num_batches_tracked`` stays out of the state dict, in and out.

    With a fixed ``momentum`` the counter is never used; dropping it keeps the 287-key layout exact.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.register_buffer("num_batches_tracked", self.num_batches_tracked, persistent=False)

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        # Version 2 tells _NormBase not to insert a default counter for "old" checkpoints.
        metadata = {**local_metadata, "version": 2}
        super()._load_from_state_dict(
            state_dict, prefix, metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class Unit3D(nn.Module):
    """SAME-padded Conv3d -> BatchNorm3d -> ReLU; keys ``conv3d.*`` and ``bn.*``.

    ``padding`` chooses the SAME arithmetic (see "Padding modes" in the module docstring).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Triple = (1, 1, 1),
        stride: Triple = (1, 1, 1),
        *,
        batch_norm: bool = True,
        activation: bool = True,
        bias: bool = False,
        padding: PaddingMode = "tf_same",
    ) -> None:
        super().__init__()
        _check_padding(padding)
        self.kernel, self.stride, self.activation, self.padding = kernel, stride, activation, padding
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=bias)
        self.bn = BatchNorm3dNoCounter(out_channels) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(pad_same(x, self.kernel, self.stride, self.padding))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.Module):
    """Max-pool with SAME zero padding, as in the port.

    Zero padding equals TF's (which ignores padded cells) because every pool here follows a ReLU.
    With ``padding="static_same"`` the output size is rounded up (``ceil_mode``), as in hassony2's port.
    """

    def __init__(self, kernel: Triple, stride: Triple, padding: PaddingMode = "tf_same") -> None:
        super().__init__()
        _check_padding(padding)
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = pad_same(x, self.kernel, self.stride, self.padding)
        return F.max_pool3d(padded, self.kernel, self.stride, ceil_mode=self.padding == "static_same")


class InceptionModule(nn.Module):
    """Fig. 3 (right): concat(b0(x), b1b(b1a(x)), b2b(b2a(x)), b3b(b3a(x))) on channels."""

    def __init__(
        self,
        in_channels: int,
        channels: tuple[int, int, int, int, int, int],
        padding: PaddingMode = "tf_same",
    ) -> None:
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3b = channels
        self.b0 = Unit3D(in_channels, c0, padding=padding)
        self.b1a = Unit3D(in_channels, c1a, padding=padding)
        self.b1b = Unit3D(c1a, c1b, (3, 3, 3), padding=padding)
        self.b2a = Unit3D(in_channels, c2a, padding=padding)
        self.b2b = Unit3D(c2a, c2b, (3, 3, 3), padding=padding)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1), padding=padding)
        self.b3b = Unit3D(in_channels, c3b, padding=padding)
        self.out_channels = c0 + c1b + c2b + c3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1
        )


class ClipFeatures:
    """``extract_clip_features`` for a module with ``in_channels`` and ``forward_features``."""

    in_channels: int
    forward_features: Callable[[torch.Tensor], torch.Tensor]

    def extract_clip_features(
        self,
        video: torch.Tensor,
        clips: ClipProtocol,
        batch_size: int | None = None,
        check_range: bool = True,
    ) -> torch.Tensor:
        """(C, T, H, W) or (B, C, T, H, W) -> (B, num_clips, feature_dim), one feature per clip.

        Clips are cut as in :meth:`ClipProtocol.split` (row ``b * num_clips + k``) and run
        ``batch_size`` at a time (all at once if None), so at most ``batch_size`` clips are in memory.
        ``check_range`` rejects input outside [-1.5, 1.5] (e.g. raw [0, 255] pixels); pass False for
        other normalisations such as ImageNet mean/std. Gradients and train/eval mode are the caller's.
        """
        if video.dim() not in (4, 5):
            raise ValueError(f"video must be (C, T, H, W) or (B, C, T, H, W), got {tuple(video.shape)}")
        batched = video if video.dim() == 5 else video.unsqueeze(0)
        if batched.shape[1] != self.in_channels:
            raise ValueError(f"video must have {self.in_channels} channels, got shape {tuple(video.shape)}")
        if check_range:
            check_input_range(batched)
        return clips.run(self.forward_features, batched, batch_size)


class I3D(ClipFeatures, nn.Module):
    """I3D with the piergiaj state-dict layout and an optional channel width multiplier.

    ``width`` scales every channel count with :func:`scale_channels` (same modules, same key names);
    ``width=1.0`` is the standard model, and 0.5 / 0.25 give ``feature_dim`` 512 / 256.
    ``dropout`` is the drop probability before the classifier (the port's 0.5). ``padding`` is the SAME
    arithmetic ("Padding modes" in the module docstring); it has no tensors, so both modes share weights.
    ``channels_last`` runs the layers in channels-last memory layout (same values, same state dict): oneDNN's
    3D convolutions are faster that way on the CPU (``benchmarks/bench_channels_last.py``).
    """

    def __init__(
        self,
        num_classes: int = 400,
        width: float = 1.0,
        in_channels: int = 3,
        dropout: float = 0.5,
        padding: PaddingMode = "tf_same",
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"need num_classes >= 1 and in_channels >= 1, got {num_classes}, {in_channels}")
        _check_padding(padding)
        self.width, self.in_channels, self.num_classes = width, in_channels, num_classes
        self.padding: PaddingMode = padding
        self.channels_last = channels_last
        c64, c192 = scale_channels(64, width), scale_channels(192, width)
        self.Conv3d_1a_7x7 = Unit3D(in_channels, c64, (7, 7, 7), (2, 2, 2), padding=padding)
        self.Conv3d_2b_1x1 = Unit3D(c64, c64, padding=padding)
        self.Conv3d_2c_3x3 = Unit3D(c64, c192, (3, 3, 3), padding=padding)
        for name, (kernel, stride) in _POOLS.items():
            setattr(self, name, MaxPool3dSame(kernel, stride, padding=padding))
        channels = c192
        for name, table in INCEPTION_CHANNELS.items():
            module = InceptionModule(channels, tuple(scale_channels(c, width) for c in table), padding)
            setattr(self, name, module)
            channels = module.out_channels
        self._feature_dim = channels
        self.dropout = nn.Dropout(dropout)
        self.logits = Unit3D(channels, num_classes, batch_norm=False, activation=False, bias=True)

    @property
    def feature_dim(self) -> int:
        """Channels after Mixed_5c: 1024 at width 1.0."""
        return self._feature_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, H, W) in [-1, 1] -> (N, feature_dim): Mixed_5c averaged over its T, H, W.

        For 16 x 224 x 224 clips Mixed_5c is 2 x 7 x 7 and this equals the port's AvgPool3d([2, 7, 7]);
        for other sizes it is the global average (the port's fixed kernel would leave a grid or fail).
        """
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"I3D expects (N, {self.in_channels}, T, H, W), got {tuple(x.shape)}")
        if self.channels_last and not torch.onnx.is_in_onnx_export():
            x = x.contiguous(memory_format=torch.channels_last_3d)
        for name in _STAGES:
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, H, W) -> (N, num_classes) logits: pooled features -> dropout -> 1x1x1 conv."""
        pooled = self.forward_features(x)[:, :, None, None, None]
        return self.logits(self.dropout(pooled)).flatten(1)

    def fused(self, kernels: Kernels | None = None) -> FusedI3D:
        """The inference form of these weights (:class:`FusedI3D`): same features, less work."""
        return FusedI3D(self, kernels)


def check_input_range(video: torch.Tensor) -> None:
    """Refuse input outside [-INPUT_LIMIT, INPUT_LIMIT], e.g. raw [0, 255] pixels given to a Kinetics I3D."""
    low, high = torch.aminmax(video.detach())
    if not (low >= -INPUT_LIMIT and high <= INPUT_LIMIT):
        raise ValueError(f"video values span [{low.item():.3g}, {high.item():.3g}]; the Kinetics I3D expects "
                         "input in [-1, 1] (pixels / 127.5 - 1)")


# ---------------------------------------------------------------- the inference form


def fold_batch_norm(unit: Unit3D) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A unit's conv weight and bias with its eval-mode BatchNorm folded in, in float32.

    BN(conv(x, w)) = conv(x, w * g) + (beta - mu * g), g = gamma / sqrt(var + eps) per output channel
    (eval-mode BatchNorm is an affine map; Ioffe & Szegedy 2015, Sec. 3.1). Computed in float64.
    """
    weight = unit.conv3d.weight.detach().double()
    bias = unit.conv3d.bias.detach().double() if unit.conv3d.bias is not None else None
    if unit.bn is None:
        return weight.float(), None if bias is None else bias.float()
    bn = unit.bn
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.detach().double() + bn.eps)
    shift = bn.bias.detach().double() - bn.running_mean.detach().double() * scale
    if bias is not None:
        shift = shift + bias * scale
    return (weight * scale.view(-1, 1, 1, 1, 1)).float(), shift.float()


def _symmetric(pads: list[tuple[int, int]]) -> tuple[int, int, int] | None:
    """The conv's own zero padding for per-dimension (front, back) pads, or None when they are asymmetric."""
    return tuple(front for front, _ in pads) if all(front == back for front, back in pads) else None


Kernels = Literal["onednn", "aten"]


def default_kernels(device: torch.device | str) -> Kernels:
    """"onednn" on a CPU whose torch build has oneDNN (mkldnn), else "aten" (CUDA, or builds without it)."""
    return "onednn" if torch.device(device).type == "cpu" and torch.backends.mkldnn.is_available() else "aten"


class FusedUnit3D(nn.Module):
    """:class:`Unit3D` for inference: BatchNorm folded into the conv (:func:`fold_batch_norm`), the ReLU fused,
    and the SAME pads handed to the convolution, which pads without a copy when they are symmetric (every
    stride-1 unit: its kernel is odd). Asymmetric pads, which only the strided stem has, are laid out by
    :class:`FusedI3D` with its input; anywhere else they fall back to a padded copy.

    ``kernels="onednn"`` (CPU) calls oneDNN's convolution with the bias and ReLU as post-ops and its weight
    reordered once into oneDNN's blocked layout, as inductor does for frozen CPU graphs; the generic
    convolution dispatch would send units with few input channels to a slow im2col path and make a
    contiguous output that drops the channels-last layout. ``"aten"``: ``F.conv3d`` then an in-place ReLU.
    """

    def __init__(self, unit: Unit3D, kernels: Kernels = "aten") -> None:
        super().__init__()
        weight, bias = fold_batch_norm(unit)
        device = unit.conv3d.weight.device
        self.weight = nn.Parameter(weight.to(device), requires_grad=False)
        self.bias = nn.Parameter(bias.to(device), requires_grad=False) if bias is not None else None
        self.kernel, self.stride, self.padding = unit.kernel, unit.stride, unit.padding
        self.activation, self.kernels = unit.activation, kernels
        self._packed: torch.Tensor | None = None
        if kernels == "onednn":
            sizes = tuple(max(8, k) for k in self.kernel)  # nominal: the blocked layout depends on the channels
            pads = [p for p, _ in self.pads(sizes)]
            self._packed = torch._C._nn.mkldnn_reorder_conv3d_weight(
                self.weight.detach().to_mkldnn(), pads, list(self.stride), [1, 1, 1], 1, [1, weight.shape[1], *sizes])

    def pads(self, sizes: tuple[int, ...]) -> list[tuple[int, int]]:
        return same_pads(sizes, self.kernel, self.stride, self.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        symmetric = _symmetric(self.pads(tuple(x.shape[2:])))
        if symmetric is None:
            return self.forward_padded(pad_same(x, self.kernel, self.stride, self.padding))
        return self._conv(x, symmetric)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """The unit on an input that already holds its SAME pads."""
        return self._conv(x, (0, 0, 0))

    def _conv(self, x: torch.Tensor, padding: tuple[int, int, int]) -> torch.Tensor:
        if self._packed is not None:
            return torch.ops.mkldnn._convolution_pointwise(
                x, self._packed, self.bias, list(padding), list(self.stride), [1, 1, 1], 1,
                "relu" if self.activation else "none", [], "")
        x = F.conv3d(x, self.weight, self.bias, self.stride, padding)
        return F.relu_(x) if self.activation else x


class FusedMaxPool3d(nn.Module):
    """:class:`MaxPool3dSame` without the padded copy.

    A window that overhangs the input is what max-pool's own padding (-inf) and ``ceil_mode`` give; that
    equals zero padding because every pool here follows a ReLU (inputs >= 0) and every window keeps at
    least one input cell. So (front, back) pads become ``padding=front`` with whichever ``ceil_mode`` yields
    the same number of windows as the explicit pads; windows start at the same cells either way. Sizes
    where no such form exists fall back to the padded copy.
    """

    def __init__(self, pool: MaxPool3dSame) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = pool.kernel, pool.stride, pool.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        form = self._unpadded_form(tuple(x.shape[2:]))
        if form is None:
            padded = pad_same(x, self.kernel, self.stride, self.padding)
            return F.max_pool3d(padded, self.kernel, self.stride, ceil_mode=self.padding == "static_same")
        padding, ceil_mode = form
        return F.max_pool3d(x, self.kernel, self.stride, padding, ceil_mode=ceil_mode)

    def _unpadded_form(self, sizes: tuple[int, ...]) -> tuple[tuple[int, int, int], bool] | None:
        pads = same_pads(sizes, self.kernel, self.stride, self.padding)
        explicit_ceil = self.padding == "static_same"
        wanted = [_pool_windows(n + f + b, k, s, 0, explicit_ceil) for n, (f, b), k, s
                  in zip(sizes, pads, self.kernel, self.stride)]
        fronts = tuple(f for f, _ in pads)
        if any(2 * f > k for f, k in zip(fronts, self.kernel)):  # max_pool3d allows pads up to half the kernel
            return None
        for ceil_mode in (False, True):
            counts = [_pool_windows(n, k, s, f, ceil_mode) for n, f, k, s in zip(sizes, fronts, self.kernel, self.stride)]
            if counts == wanted:
                return fronts, ceil_mode
        return None


def _pool_windows(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """Output length of a max-pool as PyTorch computes it (a ceil-mode window must start inside the input
    or its front pad)."""
    span = size + 2 * pad - kernel
    count = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (count - 1) * stride >= size + pad:
        count -= 1
    return count


class FusedInception(nn.Module):
    """:class:`InceptionModule` of fused units; the branch-3 pool pads without a copy (3x3x3 / 1)."""

    def __init__(self, module: InceptionModule, kernels: Kernels) -> None:
        super().__init__()
        for name in ("b0", "b1a", "b1b", "b2a", "b2b", "b3b"):
            setattr(self, name, FusedUnit3D(getattr(module, name), kernels))
        self.b3a = FusedMaxPool3d(module.b3a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1
        )


class FusedI3D(ClipFeatures, nn.Module):
    """The inference form of an :class:`I3D`: its ``forward_features`` and ``extract_clip_features``, same
    values to float32 rounding, with no BatchNorm, no separate ReLU pass and no padded copies.

    Made by :meth:`I3D.fused` from eval-mode weights (later changes to the I3D do not reach it); it has no
    classifier and no training mode. The stem's asymmetric SAME pads (7x7x7 / 2 on even sizes: (2, 3)) are
    laid out with the input: it is copied once into a zeroed, padded buffer, the copy the channels-last
    layout costs anyway.
    """

    def __init__(self, backbone: I3D, kernels: Kernels | None = None) -> None:
        super().__init__()
        self.kernels = kernels or default_kernels(next(backbone.parameters()).device)
        self.in_channels, self.feature_dim = backbone.in_channels, backbone.feature_dim
        self.width, self.padding, self.channels_last = backbone.width, backbone.padding, backbone.channels_last
        for name in _STAGES:
            stage = getattr(backbone, name)
            if isinstance(stage, Unit3D):
                setattr(self, name, FusedUnit3D(stage, self.kernels))
            elif isinstance(stage, MaxPool3dSame):
                setattr(self, name, FusedMaxPool3d(stage))
            else:
                setattr(self, name, FusedInception(stage, self.kernels))
        self.eval()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, H, W) in [-1, 1] -> (N, feature_dim), as :meth:`I3D.forward_features`."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"I3D expects (N, {self.in_channels}, T, H, W), got {tuple(x.shape)}")
        stem: FusedUnit3D = self.Conv3d_1a_7x7
        x = stem.forward_padded(self._padded_input(x, stem.pads(tuple(x.shape[2:]))))
        for name in _STAGES[1:]:
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def _padded_input(self, x: torch.Tensor, pads: list[tuple[int, int]]) -> torch.Tensor:
        """``x`` copied into a zero buffer with ``pads`` around T, H, W, channels-last if the model is."""
        (tf, tb), (hf, hb), (wf, wb) = pads
        n, c, t, h, w = x.shape
        layout = torch.channels_last_3d if self.channels_last else torch.contiguous_format
        padded = torch.empty((n, c, t + tf + tb, h + hf + hb, w + wf + wb), dtype=x.dtype, device=x.device,
                             memory_format=layout).zero_()
        padded[:, :, tf : tf + t, hf : hf + h, wf : wf + w] = x
        return padded
