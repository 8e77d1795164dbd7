"""Soft dynamic time warping (Cuturi & Blondel, "Soft-DTW: a Differentiable Loss Function for
Time-Series", ICML 2017), the alignment loss of LAV (Haresh et al., CVPR 2021, Eq. 2-4).

For a cost matrix ``D`` (N, M) and the set ``A_{N,M}`` of monotone alignment paths from (1, 1) to
(N, M) with steps (i-1, j), (i, j-1), (i-1, j-1)::

    min^gamma(a_1..a_k) = -gamma log sum_i exp(-a_i / gamma)                              (LAV Eq. 3)
    r(i, j) = D(i, j) + min^gamma(r(i-1, j), r(i, j-1), r(i-1, j-1)),  r(0, 0) = 0         (LAV Eq. 2)
    dtw_gamma(D) = r(N, M) = min^gamma_{A in A_{N,M}} <A, D>                               (LAV Eq. 4)

``gamma -> 0`` gives classic DTW. The gradient ``E = d dtw_gamma / d D`` is the expected alignment
matrix under the Gibbs distribution ``p(A) ~ exp(-<A, D> / gamma)``; it is computed by the backward
recursion of Cuturi & Blondel (Algorithm 2), not by unrolling autograd through the O(NM) loop.

The recursions run over anti-diagonals (cells with equal i + j), vectorised over the batch and the
diagonal, so a 20 x 20 cost takes 39 steps. Costs must be finite.
"""

from __future__ import annotations

import numpy as np
import torch


def soft_min(values: torch.Tensor, gamma: float) -> torch.Tensor:
    """``min^gamma`` over the last dimension: ``-gamma log sum_i exp(-a_i / gamma)`` (LAV Eq. 3).

    Entries of ``+inf`` are ignored (they contribute ``exp(-inf) = 0``).
    """
    _check_gamma(gamma)
    return -gamma * torch.logsumexp(-values / gamma, dim=-1)


def pairwise_sq_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean cost ``D(i, j) = ||x_i - y_j||^2``: (B, N, E), (B, M, E) -> (B, N, M).

    Computed from the differences (not ``|x|^2 + |y|^2 - 2 x.y``), so it is exact, non-negative and
    differentiable where ``x_i == y_j``.
    """
    if x.dim() != 3 or y.dim() != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(
            f"need x (B, N, E) and y (B, M, E) with matching B and E, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return (x[:, :, None, :] - y[:, None, :, :]).pow(2).sum(-1)


def soft_dtw(cost: torch.Tensor, gamma: float) -> torch.Tensor:
    """``dtw_gamma`` of a cost (B, N, M) -> (B,), or (N, M) -> 0-d; differentiable w.r.t. ``cost``."""
    batched, squeeze = _batched_cost(cost)
    _check_gamma(gamma)
    value = _SoftDTWFunction.apply(batched, float(gamma))
    return value[0] if squeeze else value


def soft_dtw_alignment(cost: torch.Tensor, gamma: float) -> torch.Tensor:
    """Expected alignment ``E = d dtw_gamma / d cost``, same shape as ``cost``; entries in [0, 1].

    ``E(i, j)`` is the probability that a path drawn with ``p(A) ~ exp(-<A, D> / gamma)`` visits
    (i, j); ``E(0, 0) = E(N-1, M-1) = 1``. As ``gamma -> 0`` it becomes the hard DTW path's 0/1 matrix.
    """
    batched, squeeze = _batched_cost(cost)
    _check_gamma(gamma)
    with torch.no_grad():
        table = _forward_table(batched.detach(), gamma)
        expected = _expected_alignment(batched.detach(), table, gamma)
    return expected[0] if squeeze else expected


def hard_dtw_path(cost: torch.Tensor | np.ndarray) -> list[tuple[int, int]]:
    """The minimum-cost monotone path through a cost (N, M), as 0-based (i, j) from (0, 0) to (N-1, M-1).

    Classic DTW (LAV Eq. 1-2) with backtracking; on ties the diagonal step is preferred, then
    (i-1, j), then (i, j-1). For evidence: which query step matches which exemplar step.
    """
    matrix = np.asarray(cost.detach().cpu() if isinstance(cost, torch.Tensor) else cost, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
        raise ValueError(f"cost must be a non-empty (N, M) matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("cost contains NaN or infinite values")
    n, m = matrix.shape
    table = np.full((n + 1, m + 1), np.inf)
    table[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            table[i, j] = matrix[i - 1, j - 1] + min(table[i - 1, j - 1], table[i - 1, j], table[i, j - 1])
    path = [(n - 1, m - 1)]
    i, j = n, m
    while (i, j) != (1, 1):
        steps = ((i - 1, j - 1), (i - 1, j), (i, j - 1))
        i, j = min(steps, key=lambda s: table[s])  # min() keeps the first of equal values: the tie order
        path.append((i - 1, j - 1))
    return path[::-1]


# ---------------------------------------------------------------- the two recursions


def _check_gamma(gamma: float) -> None:
    if not gamma > 0:
        raise ValueError(f"gamma must be positive, got {gamma}")


def _batched_cost(cost: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if not isinstance(cost, torch.Tensor) or not cost.is_floating_point():
        raise TypeError("cost must be a floating-point tensor of shape (N, M) or (B, N, M)")
    if cost.dim() not in (2, 3) or cost.shape[-1] < 1 or cost.shape[-2] < 1:
        raise ValueError(f"cost must have shape (N, M) or (B, N, M) with N, M >= 1, got {tuple(cost.shape)}")
    if not torch.isfinite(cost).all():
        raise ValueError("cost contains NaN or infinite values")
    return (cost.unsqueeze(0), True) if cost.dim() == 2 else (cost, False)


def _diagonal(n: int, m: int, d: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based cells (i, j) of the padded table with i + j = d, 1 <= i <= n, 1 <= j <= m."""
    i = torch.arange(max(1, d - m), min(n, d - 1) + 1, device=device)
    return i, d - i


def _forward_table(cost: torch.Tensor, gamma: float) -> torch.Tensor:
    """The table r (B, N+2, M+2) of LAV Eq. 2 with the soft min; r[:, 0, 0] = 0, other borders +inf."""
    batch, n, m = cost.shape
    table = cost.new_full((batch, n + 2, m + 2), float("inf"))
    table[:, 0, 0] = 0.0
    for d in range(2, n + m + 1):
        i, j = _diagonal(n, m, d, cost.device)
        previous = torch.stack([table[:, i - 1, j], table[:, i, j - 1], table[:, i - 1, j - 1]], dim=-1)
        table[:, i, j] = cost[:, i - 1, j - 1] + soft_min(previous, gamma)
    return table


def _expected_alignment(cost: torch.Tensor, table: torch.Tensor, gamma: float) -> torch.Tensor:
    """Cuturi & Blondel Algorithm 2: e(i, j) = sum over successors s of e(s) exp((r(s) - r(i,j) - D(s)) / gamma).

    The successors of (i, j) are (i+1, j), (i, j+1), (i+1, j+1); e(N+1, M+1) = 1 and r(N+1, M+1) =
    r(N, M) seed the recursion, the other border cells get r = -inf so they contribute nothing.
    """
    batch, n, m = cost.shape
    padded_cost = cost.new_zeros((batch, n + 2, m + 2))
    padded_cost[:, 1 : n + 1, 1 : m + 1] = cost
    r = table.clone()
    r[:, n + 1, :] = -float("inf")
    r[:, :, m + 1] = -float("inf")
    r[:, n + 1, m + 1] = table[:, n, m]
    e = cost.new_zeros((batch, n + 2, m + 2))
    e[:, n + 1, m + 1] = 1.0
    for d in range(n + m, 1, -1):
        i, j = _diagonal(n, m, d, cost.device)
        here = r[:, i, j]
        total = cost.new_zeros((batch, i.numel()))
        for di, dj in ((1, 0), (0, 1), (1, 1)):
            weight = torch.exp((r[:, i + di, j + dj] - here - padded_cost[:, i + di, j + dj]) / gamma)
            total = total + e[:, i + di, j + dj] * weight
        e[:, i, j] = total
    return e[:, 1 : n + 1, 1 : m + 1]


class _SoftDTWFunction(torch.autograd.Function):
    """dtw_gamma with the analytic gradient ``grad_cost = grad_output * E`` (first order only)."""

    @staticmethod
    def forward(ctx, cost: torch.Tensor, gamma: float) -> torch.Tensor:  # type: ignore[override]
        table = _forward_table(cost, gamma)
        ctx.save_for_backward(cost, table)
        ctx.gamma = gamma
        n, m = cost.shape[1:]
        return table[:, n, m].clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        cost, table = ctx.saved_tensors
        expected = _expected_alignment(cost, table, ctx.gamma)
        return grad_output[:, None, None] * expected, None
