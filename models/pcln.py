"""PCLN: basic regression + Pairwise Contrastive Learning Network (action quality assessment, 2022).

A video pair (p, q) is encoded by one weight-shared encoder; a basic regressor scores each video and
the PCLN module predicts how far apart their scores are::

    f_i   = TemporalEncoder(FrameEncoder(V_i))            i = p, q   (two blocks: 1x1 Conv1d, ReLU, MaxPool1d(2))
    S_i^  = FC(flatten f_i)                                          (D -> 4096 -> 2048 -> 1)
    f'_i  = ReLU(Conv1d(f_i))                                        (kernel 3)
    f_(0) = f'_p^T f'_q / C'                                         (T' x T' map)
    f_(k) = MaxPool2d(ReLU(Conv2d(f_(k-1))))                          k = 1, 2
    dS    = MLP(flatten f_(2))                                       (64 -> 32 -> 8 -> 1)

Losses (:func:`pcln_losses`), with ground-truth scores S_p, S_q::

    L_bs = 1/2 sum_{i=p,q} (S^_i - S_i)^2      L_ds = (dS - |S_p - S_q|)^2      L_rs = (dS - |S^_p - S^_q|)^2

L_rs is the consistency constraint tying PCLN to the basic regressor. At serve time only the basic
regression runs (``regress(encode_features(x))``): no exemplar is needed.

Decisions the paper leaves open (ours, documented here):
- Regression input: the encoded sequence flattened (D = C * T'). The temporal encoder's 1x1 convs never
  mix time steps, so its max-pools only make sense if the regressor sees the (shortened) time axis.
- Pair map: ``f'_p^T f'_q`` is the T' x T' cross-time similarity (step a of p against step b of q),
  divided by C' to keep its scale independent of the width; 2-D convolutions over it look at local
  temporal structure. The channel-wise C' x C' product would have no spatial order for a Conv2d.
- Symmetry and sign: the target |S_p - S_q| is symmetric and non-negative, so dS is made the same:
  the MLP runs on the map and on its transpose, the two outputs are averaged and passed through
  softplus (smooth and positive; a ReLU output could stop the L_ds gradient for good).
- Label units: ``S^ = label_offset + label_scale * FC(.)`` and ``dS = label_scale * softplus(.)``, so
  a freshly initialised network (raw outputs near 0) starts at the label mean with the label spread
  (e.g. the training set's mean and sd) and the pair module is not dragged around while the regressor
  climbs to the mean. In our synthetic check (labels 50 +- 10, 300 steps, two seeds) training without
  the offset left dS's rank correlation with |S_p - S_q| at 0.26-0.34 (near-constant dS in one seed),
  against 0.79-0.91 with it.

Inputs: frames (B, T, 3, H, W) in the preprocessing's normalisation (``Preprocessing.normalize`` gives
(3, T, H, W): permute to (T, 3, H, W)); or a precomputed feature sequence (B, D, T).

Frame encoder: :class:`FrameEncoder` is a compact ResNet-style 2-D CNN for the CPU. Any module mapping
(N, 3, H, W) -> (N, feature_dim) plugs in, e.g. a torchvision ResNet-18 with ``fc = nn.Identity()``
(feature_dim 512, the paper's kind of backbone; torchvision is not a dependency of this project).

State-dict layout (C = temporal_channels, C' = pair_channels, (c1, c2) = conv_channels, T' = T // 4,
T'' = T' // 4, (h1, h2) = regression_hidden)::

    frame_encoder.*                     only when a frame encoder is given (FrameEncoder: see its docstring)
    temporal_encoder.0.{weight (C, D, 1), bias (C,)}        block 1: Conv1d k=1, ReLU, MaxPool1d(2)
    temporal_encoder.3.{weight (C, C, 1), bias (C,)}        block 2
    regressor.0.{weight (h1, C T'), bias}  regressor.2.{weight (h2, h1), bias}  regressor.4.{weight (1, h2), bias}
    pair_projection.{weight (C', C, 3), bias (C',)}
    pair_convs.0.{weight (c1, 1, 3, 3), bias}   pair_convs.3.{weight (c2, c1, 3, 3), bias}
    pair_mlp.0.{weight (64, c2 T''^2), bias}  pair_mlp.2 (32, 64)  pair_mlp.4 (8, 32)  pair_mlp.6 (1, 8)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

MIN_FRAMES = 16  # T // 4 // 4 >= 1: two temporal max-pools, then two 2-D max-pools on the T' x T' map
PAIR_MLP_WIDTHS = (64, 32, 8, 1)


class PCLNOutput(NamedTuple):
    """Basic-regression scores of both videos (B,) and PCLN's predicted |S_p - S_q| (B,)."""

    score_p: torch.Tensor
    score_q: torch.Tensor
    delta: torch.Tensor


class _ResidualBlock(nn.Module):
    """ResNet basic block (He et al. 2016): 3x3 conv-BN-ReLU, 3x3 conv-BN, + shortcut, ReLU."""

    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride=stride, bias=False), nn.BatchNorm2d(channels_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class FrameEncoder(nn.Module):
    """Compact ResNet-style per-frame encoder: (N, 3, H, W) -> (N, out_dim), out_dim = width * 2**(stages-1).

    A 3x3 stride-2 stem (conv-BN-ReLU), then ``stages`` basic blocks (the first keeps the stem's width
    and resolution, each later one doubles the channels and halves the resolution), then global average
    pooling. Layout: ``stem.0.weight (width, 3, 3, 3)``, ``stem.1.*`` (BN), ``blocks.{s}.conv1/bn1/
    conv2/bn2`` and, where the shape changes, ``blocks.{s}.shortcut.{0 (conv), 1 (BN)}``.
    """

    def __init__(self, width: int = 32, stages: int = 4) -> None:
        super().__init__()
        if width < 1 or stages < 1:
            raise ValueError(f"width and stages must be >= 1, got {width}, {stages}")
        self.width = width
        self.stages = stages
        self.out_dim = width * 2 ** (stages - 1)
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        channels = [width * 2**s for s in range(stages)]
        self.blocks = nn.Sequential(
            *(
                _ResidualBlock(channels[max(s - 1, 0)], channels[s], stride=1 if s == 0 else 2)
                for s in range(stages)
            )
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(frames)).mean(dim=(2, 3))


class PCLN(nn.Module):
    """Basic regression + PCLN pair module over a fixed number of time steps.

    Args:
        frame_encoder: per-frame 2-D backbone (N, 3, H, W) -> (N, feature_dim); None for a model that
            runs only on precomputed feature sequences (:meth:`encode_features`).
        feature_dim: D, the per-step feature size (frame encoder output or precomputed features).
        num_frames: T, time steps per video (frames, or clips when fed clip features); at least 16.
        temporal_channels: C of the temporal encoder.
        regression_hidden: hidden widths of the basic regressor (paper: 4096, 2048).
        pair_channels: C' of the pair module's Conv1d.
        conv_channels: output channels of the two stacked Conv2d + MaxPool2d layers.
        label_offset, label_scale: ``S^ = label_offset + label_scale * raw`` and ``dS = label_scale * raw``
            (label units; e.g. the training labels' mean and sd).
    """

    def __init__(
        self,
        frame_encoder: nn.Module | None = None,
        *,
        feature_dim: int,
        num_frames: int,
        temporal_channels: int = 512,
        regression_hidden: tuple[int, int] = (4096, 2048),
        pair_channels: int = 256,
        conv_channels: tuple[int, int] = (16, 32),
        label_offset: float = 0.0,
        label_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if num_frames < MIN_FRAMES:
            raise ValueError(f"PCLN needs at least {MIN_FRAMES} time steps, got num_frames={num_frames}")
        widths = (feature_dim, temporal_channels, pair_channels, *regression_hidden, *conv_channels)
        if len(regression_hidden) != 2 or len(conv_channels) != 2 or min(widths) < 1:
            raise ValueError("feature_dim and every width must be >= 1; regression_hidden and conv_channels take two")
        if not label_scale > 0 or not math.isfinite(label_offset):
            raise ValueError(f"need a positive label_scale and a finite label_offset, got {label_scale}, {label_offset}")
        self.feature_dim = feature_dim
        self.num_frames = num_frames
        self.temporal_channels = temporal_channels
        self.regression_hidden = tuple(regression_hidden)
        self.pair_channels = pair_channels
        self.conv_channels = tuple(conv_channels)
        self.label_offset = float(label_offset)
        self.label_scale = float(label_scale)
        self.encoded_length = num_frames // 2 // 2
        pooled_map = self.encoded_length // 2 // 2

        self.frame_encoder = frame_encoder
        self.temporal_encoder = nn.Sequential(
            nn.Conv1d(feature_dim, temporal_channels, 1), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(temporal_channels, temporal_channels, 1), nn.ReLU(), nn.MaxPool1d(2),
        )
        h1, h2 = self.regression_hidden
        self.regressor = nn.Sequential(
            nn.Linear(temporal_channels * self.encoded_length, h1), nn.ReLU(),
            nn.Linear(h1, h2), nn.ReLU(),
            nn.Linear(h2, 1),
        )
        self.pair_projection = nn.Conv1d(temporal_channels, pair_channels, 3, padding=1)
        c1, c2 = self.conv_channels
        self.pair_convs = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        mlp: list[nn.Module] = []
        width_in = c2 * pooled_map * pooled_map
        for width_out in PAIR_MLP_WIDTHS:
            mlp += [nn.Linear(width_in, width_out), nn.ReLU()]
            width_in = width_out
        self.pair_mlp = nn.Sequential(*mlp[:-1])

    def config(self) -> dict[str, Any]:
        """Constructor arguments except the frame encoder, JSON-ready: ``PCLN(**config)`` rebuilds a
        feature-sequence model with the same layout (minus ``frame_encoder.*``)."""
        return {
            "feature_dim": self.feature_dim,
            "num_frames": self.num_frames,
            "temporal_channels": self.temporal_channels,
            "regression_hidden": list(self.regression_hidden),
            "pair_channels": self.pair_channels,
            "conv_channels": list(self.conv_channels),
            "label_offset": self.label_offset,
            "label_scale": self.label_scale,
        }

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (B, T, 3, H, W) -> encoded sequence (B, C, T // 4) via the frame and temporal encoders."""
        if self.frame_encoder is None:
            raise RuntimeError("this PCLN has no frame encoder; feed feature sequences to encode_features()")
        if not isinstance(frames, torch.Tensor) or not frames.is_floating_point():
            raise TypeError("frames must be a floating-point tensor (B, T, 3, H, W)")
        if frames.dim() != 5 or frames.shape[1] != self.num_frames or frames.shape[2] != 3:
            raise ValueError(f"frames must have shape (B, {self.num_frames}, 3, H, W), got {tuple(frames.shape)}")
        batch = frames.shape[0]
        per_frame = self.frame_encoder(frames.flatten(0, 1))
        if per_frame.shape != (batch * self.num_frames, self.feature_dim):
            raise ValueError(
                f"frame encoder must return (N, {self.feature_dim}) features, got {tuple(per_frame.shape)}"
            )
        return self.encode_features(per_frame.view(batch, self.num_frames, self.feature_dim).transpose(1, 2))

    def encode_features(self, features: torch.Tensor) -> torch.Tensor:
        """Feature sequence (B, D, T) -> encoded sequence (B, C, T // 4) (the temporal encoder)."""
        expected = (self.feature_dim, self.num_frames)
        if not isinstance(features, torch.Tensor) or not features.is_floating_point():
            raise TypeError(f"features must be a floating-point tensor (B, {expected[0]}, {expected[1]})")
        if features.dim() != 3 or tuple(features.shape[1:]) != expected:
            raise ValueError(f"features must have shape (B, {expected[0]}, {expected[1]}), got {tuple(features.shape)}")
        if not torch.isfinite(features).all():
            raise ValueError("features contain NaN or infinite values")
        return self.temporal_encoder(features)

    def regress(self, encoded: torch.Tensor) -> torch.Tensor:
        """Basic regression (the serve path): encoded (B, C, T') -> scores (B,) in label units."""
        return self.label_offset + self.label_scale * self.regressor(encoded.flatten(1)).squeeze(-1)

    def pair_difference(self, enc_p: torch.Tensor, enc_q: torch.Tensor) -> torch.Tensor:
        """PCLN module: encoded pair (B, C, T'), (B, C, T') -> predicted |S_p - S_q| (B,), >= 0, symmetric."""
        if enc_p.shape != enc_q.shape:
            raise ValueError(f"encoded pair shapes differ: {tuple(enc_p.shape)} vs {tuple(enc_q.shape)}")
        f_p = F.relu(self.pair_projection(enc_p))
        f_q = F.relu(self.pair_projection(enc_q))
        cross = torch.bmm(f_p.transpose(1, 2), f_q) / self.pair_channels  # (B, T', T')
        both_orders = torch.cat([cross, cross.transpose(1, 2)], dim=0).unsqueeze(1)
        logits = self.pair_mlp(self.pair_convs(both_orders).flatten(1)).squeeze(-1)
        batch = enc_p.shape[0]
        return self.label_scale * F.softplus(0.5 * (logits[:batch] + logits[batch:]))

    def forward(self, frames_p: torch.Tensor, frames_q: torch.Tensor) -> PCLNOutput:
        """Training pass on a pair of frame batches (B, T, 3, H, W)."""
        return self._pair(self.encode(frames_p), self.encode(frames_q))

    def forward_features(self, features_p: torch.Tensor, features_q: torch.Tensor) -> PCLNOutput:
        """Training pass on a pair of feature-sequence batches (B, D, T)."""
        return self._pair(self.encode_features(features_p), self.encode_features(features_q))

    def _pair(self, enc_p: torch.Tensor, enc_q: torch.Tensor) -> PCLNOutput:
        return PCLNOutput(self.regress(enc_p), self.regress(enc_q), self.pair_difference(enc_p, enc_q))


def pcln_losses(
    out: PCLNOutput,
    score_p: torch.Tensor,
    score_q: torch.Tensor,
    bs_weight: float = 1.0,
    ds_weight: float = 1.0,
    rs_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Batch means of L_bs, L_ds, L_rs (module docstring) and ``total`` = their weighted sum.

    ``score_p``, ``score_q`` (B,) are the ground-truth scores in label units. L_rs back-propagates into
    both the regressor and the PCLN module (the constraint balances the two).
    """
    batch = out.score_p.shape
    for name, value in (("score_p", score_p), ("score_q", score_q)):
        if not isinstance(value, torch.Tensor) or value.shape != batch:
            raise ValueError(f"{name} must be a tensor of shape {tuple(batch)}")
    score_p = score_p.to(out.score_p.dtype)
    score_q = score_q.to(out.score_p.dtype)
    bs = 0.5 * ((out.score_p - score_p).pow(2) + (out.score_q - score_q).pow(2))
    ds = (out.delta - (score_p - score_q).abs()).pow(2)
    rs = (out.delta - (out.score_p - out.score_q).abs()).pow(2)
    losses = {"bs": bs.mean(), "ds": ds.mean(), "rs": rs.mean()}
    losses["total"] = bs_weight * losses["bs"] + ds_weight * losses["ds"] + rs_weight * losses["rs"]
    return losses
