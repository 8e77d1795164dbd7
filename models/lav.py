"""LAV: "Learning by Aligning Videos in Time" (Haresh et al., CVPR 2021) — the frame embedder and its
self-supervised loss (alignment by soft-DTW + the contrastive inverse difference moment).

For two videos with frame embeddings X (n, E) and Y (m, E)::

    L(X, Y) = [ dtw_gamma(D_XY) + alpha (I*(X) + I*(Y)) ] / N                          (LAV Eq. 8)
    D_XY(i, j) = ||x_i - y_j||^2,      dtw_gamma: models/soft_dtw.py                   (LAV Eq. 1-4)

    I*(X) = sum_{i,j} y_ij W'(i, j) max(0, lambda - D_X(i, j))                          (LAV Eq. 7)
                    + (1 - y_ij) W(i, j) D_X(i, j)
    W'(i, j) = (t_i - t_j)^2 + 1,   W(i, j) = 1 / ((t_i - t_j)^2 + 1),   y_ij = [|k_i - k_j| > sigma]

``D_X`` is X's self-distance matrix, ``k_i`` the index of frame i in its source video of L frames
and ``t_i = k_i / L`` its time. Temporally FAR frames (y = 1) are pushed at least ``lambda`` apart, the
more strongly the farther apart they are (W' grows with the gap); temporally NEAR frames are pulled
together, the more strongly the closer they are (W shrinks with the gap). The sum runs over all ordered
pairs, so every off-diagonal pair counts twice. ``/ N`` (N = frames per video) is the reference code's
normalisation (methods.md).

Time units follow the reference code: ``t_i = k_i / L`` lies in [0, 1], and a pair is far when its
frame indices differ by more than ``sigma`` frames (reference: 10 frames of the source video). With
:class:`SampledFrames` the indices and lengths are those of the source videos; without, the N embedded
frames are taken as the whole video (indices 0..N-1, L = N). In these units W' stays in [1, 2]; with
raw frame indices (as the paper writes Eq. 7) W' would reach (N-1)^2 + 1 = 362 for N = 20 and the far
term would dwarf the alignment term. The reference code weights near pairs by 1 instead of W; near
pairs have ``|t_i - t_j| <= sigma / L``, so W >= 1 / (1 + (sigma / L)^2), which is >= 0.99 for
sigma = 10 and L >= 100: the two agree closely, and we keep the paper's W.

Reference configuration (methods.md): gamma 0.1, sigma 10 frames, lambda 2.0, alpha 0.5, 128-d
L2-normalised embeddings, 20 sampled frames per video, lr 1e-4, weight decay 1e-5. With unit-norm
embeddings every squared distance lies in [0, 4], so lambda = 2 asks far frames to be at least 90
degrees apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.soft_dtw import hard_dtw_path, pairwise_sq_distances, soft_dtw

REFERENCE_GAMMA = 0.1
REFERENCE_SIGMA_FRAMES = 10.0
REFERENCE_MARGIN = 2.0
REFERENCE_ALPHA = 0.5
REFERENCE_EMBEDDING_DIM = 128
REFERENCE_FRAMES_PER_VIDEO = 20


@dataclass(frozen=True)
class SampledFrames:
    """Where the N embedded frames of each video sit in their source video (reference time units).

    ``indices`` (B, N): frame index of every embedded frame in its source video;
    ``video_length`` (B,): number of frames of each source video.
    """

    indices: torch.Tensor
    video_length: torch.Tensor

    def __post_init__(self) -> None:
        if self.indices.dim() != 2 or self.video_length.shape != (self.indices.shape[0],):
            raise ValueError(
                f"need indices (B, N) and video_length (B,), got {tuple(self.indices.shape)} and "
                f"{tuple(self.video_length.shape)}"
            )
        if not (self.video_length > 0).all():
            raise ValueError("every video_length must be positive")


def contrastive_idm(
    embeddings: torch.Tensor,
    sigma: float = REFERENCE_SIGMA_FRAMES,
    margin: float = REFERENCE_MARGIN,
    frames: SampledFrames | None = None,
) -> torch.Tensor:
    """``I*(X)`` of LAV Eq. 7 for each video: embeddings (B, N, E) -> (B,).

    ``sigma`` is the near/far window in frames of the source video (``frames``) or, without
    ``frames``, in embedded frames; see the module docstring for the time units.
    """
    if embeddings.dim() != 3:
        raise ValueError(f"embeddings must be (B, N, E), got {tuple(embeddings.shape)}")
    if sigma < 0 or margin < 0:
        raise ValueError(f"sigma and margin must be non-negative, got {sigma}, {margin}")
    batch, n, _ = embeddings.shape
    if frames is None:
        indices = torch.arange(n, device=embeddings.device).expand(batch, n)
        frames = SampledFrames(indices=indices, video_length=torch.full((batch,), n, device=embeddings.device))
    if frames.indices.shape != (batch, n):
        raise ValueError(f"frames.indices must be ({batch}, {n}), got {tuple(frames.indices.shape)}")
    indices = frames.indices.to(embeddings.device).double()
    index_gap = (indices[:, :, None] - indices[:, None, :]).abs()
    far = (index_gap > sigma).to(embeddings.dtype)  # y_ij, decided on frame indices (no rounding at the edge)
    gap = index_gap / frames.video_length.to(embeddings.device).double()[:, None, None]  # |t_i - t_j|
    near_weight = (1.0 / (gap.pow(2) + 1.0)).to(embeddings.dtype)  # W
    far_weight = (gap.pow(2) + 1.0).to(embeddings.dtype)  # W'
    distances = pairwise_sq_distances(embeddings, embeddings)
    terms = far * far_weight * F.relu(margin - distances) + (1.0 - far) * near_weight * distances
    return terms.sum(dim=(1, 2))


def lav_loss(
    x_emb: torch.Tensor,
    y_emb: torch.Tensor,
    gamma: float = REFERENCE_GAMMA,
    sigma: float = REFERENCE_SIGMA_FRAMES,
    margin: float = REFERENCE_MARGIN,
    alpha: float = REFERENCE_ALPHA,
    x_frames: SampledFrames | None = None,
    y_frames: SampledFrames | None = None,
) -> dict[str, torch.Tensor]:
    """LAV Eq. 8 on a batch of video pairs: x_emb (B, N, E), y_emb (B, M, E).

    Returns batch means: ``dtw`` (soft-DTW of the squared-Euclidean cost), ``idm_x``, ``idm_y``
    (``I*``) and ``total = mean_b [dtw + alpha (idm_x + idm_y)] / N`` with N = x_emb's frame count
    (the reference samples the same N frames from both videos).
    """
    if x_emb.dim() != 3 or y_emb.dim() != 3 or x_emb.shape[0] != y_emb.shape[0]:
        raise ValueError(f"need x_emb (B, N, E) and y_emb (B, M, E), got {tuple(x_emb.shape)}, {tuple(y_emb.shape)}")
    dtw = soft_dtw(pairwise_sq_distances(x_emb, y_emb), gamma)
    idm_x = contrastive_idm(x_emb, sigma, margin, x_frames)
    idm_y = contrastive_idm(y_emb, sigma, margin, y_frames)
    total = (dtw + alpha * (idm_x + idm_y)) / x_emb.shape[1]
    return {"dtw": dtw.mean(), "idm_x": idm_x.mean(), "idm_y": idm_y.mean(), "total": total.mean()}


class LAVEmbedder(nn.Module):
    """Backbone features (B, T, D) -> L2-normalised frame embeddings (B, T, embedding_dim).

    Per step: Linear(D, hidden) + ReLU, then a temporal Conv1d (kernel 3, zero padding) + ReLU that
    mixes each step with its two neighbours (the reference embedder stacks context frames for the same
    purpose), then Linear(hidden, embedding_dim) and L2 normalisation. Works on per-frame or per-clip
    features alike: T is whatever the backbone produced.

    State-dict layout::

        projection.{weight (hidden, D), bias (hidden,)}
        temporal.{weight (hidden, hidden, 3), bias (hidden,)}
        output.{weight (embedding_dim, hidden), bias (embedding_dim,)}
    """

    def __init__(self, feature_dim: int, hidden: int = 256, embedding_dim: int = REFERENCE_EMBEDDING_DIM) -> None:
        super().__init__()
        if min(feature_dim, hidden, embedding_dim) < 1:
            raise ValueError(f"dimensions must be >= 1, got {feature_dim}, {hidden}, {embedding_dim}")
        self.feature_dim = feature_dim
        self.hidden = hidden
        self.embedding_dim = embedding_dim
        self.projection = nn.Linear(feature_dim, hidden)
        self.temporal = nn.Conv1d(hidden, hidden, kernel_size=3, padding=1)
        self.output = nn.Linear(hidden, embedding_dim)

    def config(self) -> dict[str, int]:
        """Constructor arguments, JSON-ready."""
        return {"feature_dim": self.feature_dim, "hidden": self.hidden, "embedding_dim": self.embedding_dim}

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not isinstance(features, torch.Tensor) or not features.is_floating_point():
            raise TypeError(f"features must be a floating-point tensor (B, T, {self.feature_dim})")
        if features.dim() != 3 or features.shape[2] != self.feature_dim:
            raise ValueError(f"features must have shape (B, T, {self.feature_dim}), got {tuple(features.shape)}")
        x = F.relu(self.projection(features))
        x = F.relu(self.temporal(x.transpose(1, 2))).transpose(1, 2)
        return F.normalize(self.output(x), dim=-1)


def alignment_path(query_clips: torch.Tensor, exemplar_clips: torch.Tensor) -> dict[str, object]:
    """Evidence: which query clip matches which exemplar clip, by the hard DTW path (LAV Eq. 1-2).

    query_clips (T, D), exemplar_clips (T', D): per-clip backbone features. The cost is LAV's squared
    Euclidean distance between L2-normalised vectors (= 2 - 2 cos). Returns ``{"path": [[i, j], ...]}``
    (0-based clip indices from (0, 0) to (T-1, T'-1)) and ``"mean_cost"`` along the path.
    """
    if query_clips.dim() != 2 or exemplar_clips.dim() != 2 or query_clips.shape[1] != exemplar_clips.shape[1]:
        raise ValueError(f"need clip features (T, D) and (T', D), got {tuple(query_clips.shape)}, "
                         f"{tuple(exemplar_clips.shape)}")
    query = F.normalize(query_clips.double(), dim=-1)
    exemplar = F.normalize(exemplar_clips.double(), dim=-1)
    cost = pairwise_sq_distances(query[None], exemplar[None])[0]
    path = hard_dtw_path(cost)
    mean_cost = float(sum(cost[i, j] for i, j in path) / len(path))
    return {"path": [[i, j] for i, j in path], "mean_cost": round(mean_cost, 4)}
