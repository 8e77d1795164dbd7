"""PCLN: losses on hand numbers, shapes and layout, the pair module's symmetry, the exemplar-free serve
path through the scoring-head interface (weights through a real safetensors file), a tiny training run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from scipy.stats import spearmanr

from models.heads import PCLNScoringHead
from models.pcln import PCLN, FrameEncoder, PCLNOutput, pcln_losses

torch.set_num_threads(1)


def tiny_pcln(frame_encoder: torch.nn.Module | None = None, feature_dim: int = 6, **kwargs) -> PCLN:
    options = {"num_frames": 16, "temporal_channels": 8, "regression_hidden": (16, 8), "pair_channels": 4,
               "conv_channels": (2, 3), **kwargs}
    return PCLN(frame_encoder, feature_dim=feature_dim, **options)


# ---------------------------------------------------------------- losses


def test_losses_by_hand() -> None:
    # Pair 1: S^ = (80, 72), dS = 6, S = (85, 75):
    #   bs = 1/2 ((80-85)^2 + (72-75)^2) = 1/2 (25 + 9) = 17;  ds = (6 - 10)^2 = 16;  rs = (6 - |80-72|)^2 = 4
    # Pair 2: S^ = (60, 65), dS = 1, S = (60, 61):
    #   bs = 1/2 (0 + 16) = 8;  ds = (1 - 1)^2 = 0;  rs = (1 - 5)^2 = 16
    out = PCLNOutput(torch.tensor([80.0, 60.0]), torch.tensor([72.0, 65.0]), torch.tensor([6.0, 1.0]))
    losses = pcln_losses(out, torch.tensor([85.0, 60.0]), torch.tensor([75.0, 61.0]))
    assert losses["bs"].item() == pytest.approx(12.5)  # mean(17, 8)
    assert losses["ds"].item() == pytest.approx(8.0)  # mean(16, 0)
    assert losses["rs"].item() == pytest.approx(10.0)  # mean(4, 16)
    assert losses["total"].item() == pytest.approx(30.5)
    weighted = pcln_losses(out, torch.tensor([85.0, 60.0]), torch.tensor([75.0, 61.0]), 1.0, 0.5, 2.0)
    assert weighted["total"].item() == pytest.approx(12.5 + 4.0 + 20.0)
    with pytest.raises(ValueError, match="score_q"):
        pcln_losses(out, torch.tensor([85.0, 60.0]), torch.tensor([75.0]))


def test_consistency_loss_reaches_both_branches() -> None:
    model = tiny_pcln()
    features = torch.randn(2, 2, 6, 16)
    out = model.forward_features(features[0], features[1])
    pcln_losses(out, torch.zeros(2), torch.zeros(2), bs_weight=0.0, ds_weight=0.0)["total"].backward()
    assert model.regressor[0].weight.grad.abs().sum() > 0
    assert model.pair_mlp[0].weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- architecture


def test_shapes_from_frames_through_the_frame_encoder() -> None:
    encoder = FrameEncoder(width=4, stages=2)  # out_dim 4 x 2 = 8
    assert encoder.out_dim == 8
    model = tiny_pcln(encoder, feature_dim=8, num_frames=17)
    frames_p, frames_q = torch.randn(2, 3, 17, 3, 16, 16)
    encoded = model.encode(frames_p)
    assert encoded.shape == (3, 8, 4)  # T' = 17 // 2 // 2
    assert model.regress(encoded).shape == (3,)
    out = model(frames_p, frames_q)
    assert [t.shape for t in out] == [(3,), (3,), (3,)]
    assert (out.delta >= 0).all()


def test_pair_module_is_symmetric_and_non_negative() -> None:
    torch.manual_seed(0)
    model = tiny_pcln(num_frames=40)
    enc_p, enc_q = (model.encode_features(x) for x in torch.randn(2, 5, 6, 40))
    forward, backward = model.pair_difference(enc_p, enc_q), model.pair_difference(enc_q, enc_p)
    assert forward.shape == (5,)
    assert torch.allclose(forward, backward)
    assert (forward > 0).all()


def test_state_dict_layout() -> None:
    model = tiny_pcln(FrameEncoder(width=4, stages=2), feature_dim=8, num_frames=33)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # T = 33: T' = 8, pair map 8 x 8 -> 4 x 4 -> 2 x 2; C = 8, C' = 4, conv (2, 3), hidden (16, 8).
    expected = {
        "temporal_encoder.0.weight": (8, 8, 1), "temporal_encoder.3.weight": (8, 8, 1),
        "regressor.0.weight": (16, 64), "regressor.2.weight": (8, 16), "regressor.4.weight": (1, 8),
        "pair_projection.weight": (4, 8, 3),
        "pair_convs.0.weight": (2, 1, 3, 3), "pair_convs.3.weight": (3, 2, 3, 3),
        "pair_mlp.0.weight": (64, 12), "pair_mlp.2.weight": (32, 64), "pair_mlp.4.weight": (8, 32),
        "pair_mlp.6.weight": (1, 8),
        "frame_encoder.stem.0.weight": (4, 3, 3, 3), "frame_encoder.blocks.1.shortcut.0.weight": (8, 4, 1, 1),
    }
    assert {k: shapes[k] for k in expected} == expected
    feature_only = {k for k in shapes if not k.startswith("frame_encoder.")}
    assert set(tiny_pcln(feature_dim=8, num_frames=33).state_dict()) == feature_only


def test_bad_configurations_and_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        tiny_pcln(num_frames=15)
    with pytest.raises(ValueError, match="label_scale"):
        tiny_pcln(label_scale=0.0)
    model = tiny_pcln()
    with pytest.raises(RuntimeError, match="no frame encoder"):
        model.encode(torch.zeros(1, 16, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 6, 16\)"):
        model.encode_features(torch.zeros(1, 16, 6))
    with pytest.raises(ValueError, match="NaN"):
        model.encode_features(torch.full((1, 6, 16), float("nan")))
    with pytest.raises(TypeError):
        model.encode_features(torch.zeros(1, 6, 16, dtype=torch.int64))
    with_encoder = tiny_pcln(FrameEncoder(width=4, stages=2), feature_dim=7)
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        with_encoder.encode(torch.zeros(1, 16, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 16, 3, H, W\)"):
        with_encoder.encode(torch.zeros(1, 15, 3, 8, 8))


# ---------------------------------------------------------------- serving


def test_serve_path_is_one_exemplar_free_vote(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tiny_pcln(label_offset=60.0, label_scale=10.0).eval()
    save_file(model.state_dict(), str(tmp_path / "head.safetensors"))
    config = json.loads(json.dumps(model.config()))
    head = PCLNScoringHead.from_config(6, config, load_file(str(tmp_path / "head.safetensors")))
    with pytest.raises(ValueError, match="6-d features"):
        PCLNScoringHead.from_config(1024, config, model.state_dict())

    query = torch.randn(16, 6)  # (T, D): what the scorer holds per video
    votes = head.vote(query, torch.empty(0, 16, 6), torch.empty(0))
    with torch.no_grad():
        expected = model.regress(model.encode_features(query.T[None]))
    assert votes.votes.shape == (1,)
    assert torch.allclose(votes.votes, expected)
    assert votes.relative.tolist() == [0.0]
    assert votes.evidence == {"exemplar_free": True}
    # Exemplars, if passed anyway, change nothing.
    assert torch.allclose(head.vote(query, torch.randn(3, 16, 6), torch.tensor([1.0, 2.0, 3.0])).votes, expected)
    with pytest.raises(ValueError, match=r"\(16, 6\)"):
        head.vote(torch.randn(10, 6), torch.empty(0, 16, 6), torch.empty(0))


# ---------------------------------------------------------------- a tiny training run


def test_tiny_training_learns_scores_and_differences() -> None:
    # Synthetic feature sequences (D = 4, T = 16): every step carries s x v plus noise, s ~ U(-1, 1);
    # the score is 50 + 10 s. Train on random pairs with all three losses, offset 50 and scale 10.
    torch.manual_seed(0)
    direction = torch.randn(4, 1)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.rand(n) * 2 - 1
        return s[:, None, None] * direction + 0.5 * torch.randn(n, 4, 16), 50 + 10 * s

    train_x, train_s = sample(512)
    test_x, test_s = sample(128)
    model = PCLN(feature_dim=4, num_frames=16, temporal_channels=32, regression_hidden=(64, 32),
                 pair_channels=8, conv_channels=(4, 8), label_offset=50.0, label_scale=10.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(300):
        p, q = torch.randint(0, 512, (2, 32))
        losses = pcln_losses(model.forward_features(train_x[p], train_x[q]), train_s[p], train_s[q])
        optimiser.zero_grad()
        losses["total"].backward()
        optimiser.step()
        if step == 0:
            first = {k: v.item() for k, v in losses.items()}

    model.eval()
    with torch.no_grad():
        predicted = model.regress(model.encode_features(test_x))
        delta = model.pair_difference(model.encode_features(test_x[:64]), model.encode_features(test_x[64:]))
    true_delta = (test_s[:64] - test_s[64:]).abs()
    assert losses["total"].item() < 0.2 * first["total"]
    assert spearmanr(predicted, test_s).statistic > 0.9
    assert spearmanr(delta, true_delta).statistic > 0.6
