"""Soft-DTW and the LAV loss: hand-computed values, brute force over all alignment paths, gradients.

Expected numbers are worked out by hand in the comments or by enumerating paths independently of the
dynamic programme under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from models.lav import LAVEmbedder, SampledFrames, contrastive_idm, lav_loss
from models.soft_dtw import hard_dtw_path, pairwise_sq_distances, soft_dtw, soft_dtw_alignment, soft_min

torch.set_num_threads(1)


def all_paths(n: int, m: int) -> list[list[tuple[int, int]]]:
    """Every monotone path (0, 0) -> (n-1, m-1) with steps (1, 0), (0, 1), (1, 1), by recursion."""
    if (n, m) == (1, 1):
        return [[(0, 0)]]
    paths = []
    for di, dj in ((1, 0), (0, 1), (1, 1)):
        if n - di >= 1 and m - dj >= 1:
            paths += [p + [(n - 1, m - 1)] for p in all_paths(n - di, m - dj)]
    return paths


def brute_force(cost: torch.Tensor, gamma: float) -> tuple[float, torch.Tensor]:
    """dtw_gamma = -gamma log sum_A exp(-<A, D> / gamma) and E = sum_A p(A) A, over all paths A."""
    paths = all_paths(*cost.shape)
    costs = torch.tensor([sum(float(cost[i, j]) for i, j in p) for p in paths], dtype=torch.float64)
    value = float(-gamma * torch.logsumexp(-costs / gamma, 0))
    probs = torch.softmax(-costs / gamma, 0)
    expected = torch.zeros(cost.shape, dtype=torch.float64)
    for p, prob in zip(paths, probs):
        for i, j in p:
            expected[i, j] += prob
    return value, expected


# ---------------------------------------------------------------- soft min and soft-DTW


def test_soft_min_by_hand_and_its_hard_limit() -> None:
    # -log(e^-1 + e^-2 + e^-3) = 1 - log(1 + e^-1 + e^-2) = 1 - log(1.5032147) = 0.5923940
    values = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert soft_min(values, 1.0).item() == pytest.approx(0.5923940, abs=1e-6)
    # gamma -> 0: min; the soft min is below the min by at most gamma log k.
    assert soft_min(values, 1e-3).item() == pytest.approx(1.0, abs=1e-3 * math.log(3))
    # batched over leading dimensions; +inf entries drop out.
    batch = torch.tensor([[1.0, 2.0, 3.0], [0.5, float("inf"), float("inf")]], dtype=torch.float64)
    assert torch.allclose(soft_min(batch, 1.0), torch.tensor([0.5923940, 0.5], dtype=torch.float64), atol=1e-6)
    with pytest.raises(ValueError, match="gamma"):
        soft_min(values, 0.0)


def test_soft_dtw_2x2_by_hand() -> None:
    # D = [[1, 2], [3, 4]]: three paths, costs 1+4 = 5 (diagonal), 1+2+4 = 7, 1+3+4 = 8.
    # dtw_1 = -log(e^-5 + e^-7 + e^-8) = 5 - log(1 + e^-2 + e^-3) = 5 - log(1.1851194) = 4.8301540
    cost = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    assert soft_dtw(cost, 1.0).item() == pytest.approx(4.8301540, abs=1e-6)
    # E(0, 1) = e^-2 / 1.1851194 = 0.1141952 (the path over (0, 1)); E(1, 0) = e^-3 / 1.1851194 = 0.0420101
    expected = torch.tensor([[1.0, 0.1141952], [0.0420101, 1.0]], dtype=torch.float64)
    assert torch.allclose(soft_dtw_alignment(cost, 1.0), expected, atol=1e-6)
    # gamma -> 0: classic DTW, 5.
    assert soft_dtw(cost, 1e-3).item() == pytest.approx(5.0, abs=2e-3)


def test_soft_dtw_matches_brute_force_over_all_paths() -> None:
    generator = torch.Generator().manual_seed(0)
    cost = torch.rand(3, 4, generator=generator, dtype=torch.float64) * 3
    assert len(all_paths(3, 4)) == 25  # Delannoy number D(2, 3)
    for gamma in (0.1, 1.0, 5.0):
        value, expected = brute_force(cost, gamma)
        assert soft_dtw(cost, gamma).item() == pytest.approx(value, abs=1e-9)
        assert torch.allclose(soft_dtw_alignment(cost, gamma), expected, atol=1e-9)
    # A batch gives the same numbers as one matrix at a time (also with N > M).
    batch = torch.rand(3, 4, 3, generator=generator, dtype=torch.float64)
    for b in range(3):
        assert soft_dtw(batch, 0.5)[b].item() == pytest.approx(brute_force(batch[b], 0.5)[0], abs=1e-9)


def test_soft_dtw_tends_to_hard_dtw_and_its_path() -> None:
    # x = [0, 1, 2] against y = [0, 0, 1, 2, 2] with cost |x_i - y_j|: the only zero-cost path is
    # (0,0) (0,1) (1,2) (2,3) (2,4); every other path pays at least 1.
    cost = torch.tensor(
        [[0.0, 0.0, 1.0, 2.0, 2.0], [1.0, 1.0, 0.0, 1.0, 1.0], [2.0, 2.0, 1.0, 0.0, 0.0]], dtype=torch.float64
    )
    path = [(0, 0), (0, 1), (1, 2), (2, 3), (2, 4)]
    assert hard_dtw_path(cost) == path
    assert hard_dtw_path(cost.numpy()) == path
    assert soft_dtw(cost, 0.01).item() == pytest.approx(0.0, abs=0.01 * math.log(len(all_paths(3, 5))))
    hard = torch.zeros_like(cost)
    for i, j in path:
        hard[i, j] = 1.0
    assert torch.allclose(soft_dtw_alignment(cost, 0.01), hard, atol=1e-6)


def test_hard_path_prefers_the_diagonal_on_ties_and_rejects_bad_costs() -> None:
    # All-zero 3x3: every path costs 0; the tie rule gives the diagonal.
    assert hard_dtw_path(torch.zeros(3, 3)) == [(0, 0), (1, 1), (2, 2)]
    assert hard_dtw_path(torch.zeros(1, 3)) == [(0, 0), (0, 1), (0, 2)]
    with pytest.raises(ValueError, match="non-empty"):
        hard_dtw_path(torch.zeros(3))
    with pytest.raises(ValueError, match="infinite"):
        hard_dtw_path(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="infinite"):
        soft_dtw(torch.tensor([[0.0, float("inf")]]), 0.1)
    with pytest.raises(TypeError):
        soft_dtw(torch.zeros(2, 2, dtype=torch.int64), 0.1)
    with pytest.raises(ValueError, match="gamma"):
        soft_dtw(torch.zeros(2, 2), -1.0)


def test_soft_dtw_gradient_matches_finite_differences() -> None:
    generator = torch.Generator().manual_seed(1)
    cost = torch.rand(2, 4, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: soft_dtw(c, 0.3), (cost,))
    # Through the squared-Euclidean cost down to the embeddings (the LAV training path).
    x = torch.randn(1, 4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 3, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: soft_dtw(pairwise_sq_distances(a, b), 0.1), (x, y))


# ---------------------------------------------------------------- contrastive IDM and the LAV loss


def test_contrastive_idm_by_hand_in_embedded_frames() -> None:
    # 1-d embeddings x = [0, 1, 3]: D_X(0,1) = 1, D_X(0,2) = 9, D_X(1,2) = 4. Without SampledFrames the
    # 3 frames are the whole video: t = 0, 1/3, 2/3. sigma = 1 frame:
    # near pairs (0,1), (1,2), gap 1/3: W = 1 / (1 + 1/9) = 0.9 (the diagonal has D = 0):
    #   near = 2 x (0.9 x 1 + 0.9 x 4) = 9 (both orders of each pair)
    # far pair (0,2), gap 2/3: W' = 1 + 4/9 = 13/9, hinge max(0, lambda - 9):
    #   lambda = 2 -> 0, total 9;   lambda = 10 -> 2 x 13/9 x 1 = 26/9, total 107/9.
    x = torch.tensor([[[0.0], [1.0], [3.0]]], dtype=torch.float64)
    assert contrastive_idm(x, sigma=1.0, margin=2.0).item() == pytest.approx(9.0)
    assert contrastive_idm(x, sigma=1.0, margin=10.0).item() == pytest.approx(107 / 9)
    # sigma = 2 makes (0,2) near: W = 9/13, 2 x 9/13 x 9 = 162/13 -> total 9 + 162/13 = 279/13.
    assert contrastive_idm(x, sigma=2.0, margin=10.0).item() == pytest.approx(279 / 13)
    # A batch of two videos gives one value each; the second has D = 4, 36, 16:
    # near 2 x (0.9 x 4 + 0.9 x 16) = 36, far hinge max(0, 2 - 36) = 0.
    both = torch.cat([x, 2 * x])
    assert torch.allclose(contrastive_idm(both, 1.0, 2.0), torch.tensor([9.0, 36.0], dtype=torch.float64))


def test_contrastive_idm_by_hand_in_reference_time_units() -> None:
    # Frames 0, 5, 30 of a 100-frame video: t = 0, 0.05, 0.30; window sigma / length = 10 / 100 = 0.1.
    # near (0,1), gap 0.05: W = 1/1.0025, D = 1 -> 2 / 1.0025 = 1.9950125
    # far (0,2), gap 0.30: W' = 1.09, max(0, 10 - 9) = 1 -> 2 x 1.09 = 2.18
    # far (1,2), gap 0.25: W' = 1.0625, max(0, 10 - 4) = 6 -> 2 x 6.375 = 12.75       total 16.9250125
    x = torch.tensor([[[0.0], [1.0], [3.0]]], dtype=torch.float64)
    frames = SampledFrames(indices=torch.tensor([[0, 5, 30]]), video_length=torch.tensor([100]))
    assert contrastive_idm(x, sigma=10.0, margin=10.0, frames=frames).item() == pytest.approx(16.9250125)
    with pytest.raises(ValueError, match="indices"):
        contrastive_idm(x, frames=SampledFrames(torch.tensor([[0, 5]]), torch.tensor([100])))
    with pytest.raises(ValueError, match="positive"):
        SampledFrames(torch.tensor([[0, 5, 30]]), torch.tensor([0]))


def test_lav_loss_combines_its_terms_as_eq_8() -> None:
    x = torch.tensor([[[0.0], [1.0], [3.0]]], dtype=torch.float64)
    y = torch.tensor([[[0.5], [3.0]]], dtype=torch.float64)
    # I*(X) = 9 (above); Y = [0.5, 3], t = 0, 1/2: one near pair, W = 1 / (1 + 1/4) = 0.8, D = 6.25
    # -> 2 x 0.8 x 6.25 = 10.
    losses = lav_loss(x, y, gamma=0.1, sigma=1.0, margin=2.0, alpha=0.5)
    assert losses["idm_x"].item() == pytest.approx(9.0)
    assert losses["idm_y"].item() == pytest.approx(10.0)
    dtw = soft_dtw(pairwise_sq_distances(x, y), 0.1).item()
    assert losses["dtw"].item() == pytest.approx(dtw)
    assert losses["total"].item() == pytest.approx((dtw + 0.5 * (9.0 + 10.0)) / 3)


def test_lav_training_needs_the_idm_to_avoid_collapse() -> None:
    # Videos of one motion at different speeds: frame features are a smooth function of the phase.
    # Soft-DTW alone is minimised by mapping every frame to one point (LAV Sec. 3.2); with the
    # contrastive IDM, frames more than sigma apart stay about lambda = 2 apart while near frames
    # stay close, and the hard DTW path on the embeddings pairs frames of nearly the same phase.
    torch.manual_seed(0)
    feature_dim, frames, sigma = 6, 20, 5.0
    basis = torch.randn(3, feature_dim)

    def video(phase: torch.Tensor) -> torch.Tensor:  # (B, N) phases in [0, 1] -> (B, N, D)
        waves = torch.stack([torch.sin(math.pi * phase), torch.cos(math.pi * phase), phase], -1)
        return waves @ basis + 0.05 * torch.randn(*phase.shape, feature_dim)

    def phases(batch: int) -> torch.Tensor:
        speed = torch.rand(batch, 1) * 1.5 + 0.5  # time-warp exponent
        return torch.linspace(0, 1, frames).expand(batch, frames) ** speed

    far = (torch.arange(frames)[:, None] - torch.arange(frames)[None]).abs() > sigma
    trained = {}
    for alpha in (0.0, 0.5):
        torch.manual_seed(1)
        embedder = LAVEmbedder(feature_dim, hidden=32, embedding_dim=16)
        optimiser = torch.optim.Adam(embedder.parameters(), lr=1e-2, weight_decay=1e-5)
        for _ in range(60):
            loss = lav_loss(embedder(video(phases(8))), embedder(video(phases(8))), sigma=sigma, alpha=alpha)
            optimiser.zero_grad()
            loss["total"].backward()
            optimiser.step()
        trained[alpha] = embedder

    with torch.no_grad():
        collapsed = pairwise_sq_distances(*[trained[0.0](video(phases(4)))] * 2)
        spread = pairwise_sq_distances(*[trained[0.5](video(phases(4)))] * 2)
    assert collapsed.max() < 1e-2
    assert spread[:, far].mean() > 2.0  # lambda
    assert spread[:, ~far].mean() < 1.0

    embeddings = trained[0.5](torch.randn(2, frames, feature_dim))
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(2, frames))
    px, py = phases(1), phases(1)
    with torch.no_grad():
        cost = pairwise_sq_distances(trained[0.5](video(px)), trained[0.5](video(py)))[0]
    phase_error = torch.tensor([abs(px[0, i] - py[0, j]) for i, j in hard_dtw_path(cost)])
    assert phase_error.mean() < 0.05


def test_lav_embedder_rejects_wrong_features() -> None:
    embedder = LAVEmbedder(4)
    assert list(embedder.state_dict()) == [
        "projection.weight", "projection.bias", "temporal.weight", "temporal.bias", "output.weight", "output.bias"
    ]
    with pytest.raises(ValueError, match=r"\(B, T, 4\)"):
        embedder(torch.zeros(2, 5, 3))
    with pytest.raises(TypeError):
        embedder(torch.zeros(2, 5, 4, dtype=torch.int64))
