"""CoRe head and GART: boundaries, labels, losses, tree probabilities, layout, voting, a tiny training run.

Expected numbers are worked out by hand in the comments, not recomputed with the code under test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from scipy.stats import spearmanr

from models.core import CoReHead, GroupedLinear
from models.gart import GroupBoundaries, gart_loss

EIGHT_GROUPS = [[-30, -8], [-8, -4], [-4, -2], [-2, 0], [0, 2], [2, 4], [4, 8], [8, 30]]


# ---------------------------------------------------------------- boundaries


def test_symmetric_boundaries_by_hand() -> None:
    # |delta| sorted = [0.5, 1, 2, 3, 4, 6, 8, 10, 12]: T = 9, T - 1 = 8 (signs and order must not matter).
    deltas = np.array([3, -0.5, 12, 1, -2, 4, 10, -6, 8])
    # 4 groups -> 2 per side, indices floor(8 * r / 2) = 0, 4, 8: edges a[0]->0 (innermost), a[4]=4, a[8]->30.
    four = GroupBoundaries.from_deltas(deltas, num_groups=4, symmetric=True, score_range=30)
    assert four.to_list() == [[-30, -4], [-4, 0], [0, 4], [4, 30]]
    # 8 groups -> 4 per side, indices floor(8 * r / 4) = 0, 2, 4, 6, 8: 0, a[2]=2, a[4]=4, a[6]=8, 30.
    eight = GroupBoundaries.from_deltas(deltas, num_groups=8, symmetric=True, score_range=30)
    assert eight.to_list() == EIGHT_GROUPS
    # Without a score range the outer bound is the largest |delta| (12).
    assert GroupBoundaries.from_deltas(deltas, 4).to_list() == [[-12, -4], [-4, 0], [0, 4], [4, 12]]


def test_symmetric_boundaries_with_ties_give_degenerate_groups() -> None:
    # |delta| = [0, 0, 0, 0, 0, 1, 2, 3, 4]; 2 per side: a[0]->0, a[4] = 0, 30 -> [0, 0] and [0, 30].
    groups = GroupBoundaries.from_deltas(np.array([0, 0, 0, 0, 0, 1, 2, 3, 4]), 4, score_range=30)
    assert groups.to_list() == [[-30, 0], [0, 0], [0, 0], [0, 30]]
    assert "-0.0" not in json.dumps(groups.to_list())


def test_seed_formula_on_signed_deltas_by_hand() -> None:
    # sorted = [-5, -3, -1, 0, 1, 2, 4, 7], T - 1 = 7, R = 4: floor(7 r / 4) = 0, 1, 3, 5, 7
    # -> edges -5, -3, 0, 2, 7.
    deltas = np.array([4, -1, 0, 7, -5, 2, 1, -3])
    groups = GroupBoundaries.from_deltas(deltas, num_groups=4, symmetric=False)
    assert groups.to_list() == [[-5, -3], [-3, 0], [0, 2], [2, 7]]
    widened = GroupBoundaries.from_deltas(deltas, num_groups=4, symmetric=False, score_range=30)
    assert widened.to_list() == [[-30, -3], [-3, 0], [0, 2], [2, 30]]


def test_boundaries_round_trip_and_reject_bad_input() -> None:
    groups = GroupBoundaries.from_list(EIGHT_GROUPS)
    assert GroupBoundaries.from_list(json.loads(json.dumps(groups.to_list()))) == groups
    with pytest.raises(ValueError, match="contiguous"):
        GroupBoundaries.from_list([[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="reversed"):
        GroupBoundaries.from_list([[1, 0]])
    with pytest.raises(ValueError, match="empty"):
        GroupBoundaries.from_deltas(np.array([]), 4)
    with pytest.raises(ValueError, match="NaN"):
        GroupBoundaries.from_deltas(np.array([1.0, math.nan]), 4)
    with pytest.raises(ValueError, match="even"):
        GroupBoundaries.from_deltas(np.array([1.0, 2.0]), 3, symmetric=True)


# ---------------------------------------------------------------- assign / decode


def test_assign_by_hand() -> None:
    groups = GroupBoundaries.from_list(EIGHT_GROUPS)
    cases = [  # delta, group, target
        (0.0, 4, 0.0),  # 0 <= 0 < 2
        (2.0, 5, 0.0),  # non-negative: shared bound goes to the upper group [2, 4]
        (-2.0, 2, 1.0),  # negative: -4 < -2 <= -2, group [-4, -2], (-2 + 4) / 2
        (3.0, 5, 0.5),
        (-3.0, 2, 0.5),
        (19.0, 7, 0.5),  # (19 - 8) / 22
        (-8.0, 0, 1.0),  # -30 < -8 <= -8
        (30.0, 7, 1.0),  # the outer bound itself
        (-30.0, 0, 0.0),
        (45.0, 7, 1.0),  # outside: clamped to 30
        (-100.0, 0, 0.0),  # outside: clamped to -30
    ]
    group_idx, target = groups.assign(torch.tensor([c[0] for c in cases]))
    assert group_idx.dtype == torch.int64
    assert group_idx.tolist() == [c[1] for c in cases]
    assert torch.allclose(target, torch.tensor([c[2] for c in cases]))


def test_assign_degenerate_groups() -> None:
    groups = GroupBoundaries.from_list([[-1, 0], [0, 0], [0, 1], [1, 1]])
    group_idx, target = groups.assign(torch.tensor([0.0, 1.0, 1.5, -0.5, -1.0]))
    # 0 -> [0, 1) (the empty [0, 0) never matches); 1 and 1.5 (clamped) -> outermost [1, 1], 1 - 1 = 0;
    # -0.5 -> (-1, 0], 0.5; -1 -> outer bound of the first group, 0.
    assert group_idx.tolist() == [2, 3, 3, 0, 0]
    assert target.tolist() == [0.0, 0.0, 0.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="NaN"):
        groups.assign(torch.tensor([math.nan]))


def test_decode_by_hand() -> None:
    groups = GroupBoundaries.from_list(EIGHT_GROUPS)
    delta = groups.decode(torch.tensor([5, 0, 7, 3]), torch.tensor([0.25, 0.5, 1.0, 0.0]))
    # 2 + 0.25 * 2, -30 + 0.5 * 22, 8 + 1 * 22, -2 + 0
    assert torch.allclose(delta, torch.tensor([2.5, -19.0, 30.0, -2.0]))
    degenerate = GroupBoundaries.from_list([[-1, 0], [0, 0], [0, 1], [1, 1]])
    assert degenerate.decode(torch.tensor([3]), torch.tensor([0.25])).tolist() == [1.25]  # 1 + 0.25
    with pytest.raises(ValueError, match="out of range"):
        groups.decode(torch.tensor([8]), torch.tensor([0.5]))


# ---------------------------------------------------------------- loss


def test_gart_loss_by_hand() -> None:
    # Pair A: P = [.1, .2, .3, .4], true leaf 2, target .75; pair B: P = [.5, .25, .125, .125], true 0, .25.
    log_probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.25, 0.125, 0.125]]).log()
    # True-leaf raw values: A 0 (sigmoid .5), B ln 3 (sigmoid .75); 100 elsewhere must not count.
    raw = torch.tensor([[100.0, 100.0, 0.0, 100.0], [math.log(3), 100.0, 100.0, 100.0]])
    group_idx, target = torch.tensor([2, 0]), torch.tensor([0.75, 0.25])

    bce = gart_loss(log_probs, raw, group_idx, target)
    # BCE A = -(ln .9 + ln .8 + ln .3 + ln .6) = 2.0433025; B = -(ln .5 + ln .75 + 2 ln .875) = 1.2478920
    assert bce["cls"].item() == pytest.approx(1.6455973, abs=1e-6)
    # sigmoid: ((.5 - .75)^2 + (.75 - .25)^2) / 2 = (.0625 + .25) / 2
    assert bce["reg"].item() == pytest.approx(0.15625, abs=1e-6)
    assert bce["total"].item() == pytest.approx(1.6455973 + 0.15625, abs=1e-6)

    nll = gart_loss(log_probs, raw, group_idx, target, classification="nll", leaf_activation="identity")
    # NLL: (-ln .3 - ln .5) / 2 = (1.2039728 + 0.6931472) / 2
    assert nll["cls"].item() == pytest.approx(0.9485600, abs=1e-6)
    # identity: ((0 - .75)^2 + (1.0986123 - .25)^2) / 2 = (.5625 + .7201428) / 2
    assert nll["reg"].item() == pytest.approx(0.6413214, abs=1e-6)


def test_bce_is_finite_for_a_certain_leaf() -> None:
    log_probs = torch.tensor([[0.0, -200.0]], requires_grad=True)  # P = [1, ~0]
    loss = gart_loss(log_probs, torch.zeros(1, 2), torch.tensor([1]), torch.tensor([0.5]))
    loss["total"].backward()
    assert torch.isfinite(loss["total"]) and torch.isfinite(log_probs.grad).all()
    assert loss["cls"].item() > 15  # the wrong leaf is certain: a large penalty


# ---------------------------------------------------------------- tree


def hand_set_head(depth: int, clf_biases: list[list[float]], leaf_biases: list[float], **kwargs) -> CoReHead:
    """All weights zero, so every node's logits are its biases and every leaf value is its bias."""
    head = CoReHead(feature_dim=3, hidden=4, depth=depth, **kwargs)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.zero_()
        for layer, bias in zip(head.clf_layers, clf_biases, strict=True):
            layer.bias.copy_(torch.tensor(bias))
        head.reg_layer.bias.copy_(torch.tensor(leaf_biases))
    return head


def test_leaf_probabilities_are_path_products() -> None:
    # Root logits [0, ln 3] -> [1/4, 3/4]; left child [0, 0] -> [1/2, 1/2];
    # right child [0, ln 4] -> [1/5, 4/5].
    head = hand_set_head(2, [[0, math.log(3)], [0, 0, 0, math.log(4)]], [0.0, 0.0, 0.0, 0.0])
    log_probs, leaf_values = head(torch.randn(5, 7))
    # leaves: 1/4 * 1/2, 1/4 * 1/2, 3/4 * 1/5, 3/4 * 4/5
    expected = torch.tensor([1 / 8, 1 / 8, 3 / 20, 3 / 5]).expand(5, 4)
    assert torch.allclose(log_probs.exp(), expected, atol=1e-6)
    assert torch.allclose(log_probs.exp().sum(1), torch.ones(5))
    assert leaf_values.shape == (5, 4)


def test_random_tree_probabilities_sum_to_one() -> None:
    torch.manual_seed(0)
    log_probs, _ = CoReHead(feature_dim=8, hidden=16, depth=4)(torch.randn(6, 17))
    assert log_probs.shape == (6, 16)
    assert torch.allclose(log_probs.exp().sum(1), torch.ones(6), atol=1e-5)


def test_predict_relative_and_vote_by_hand() -> None:
    groups = GroupBoundaries.from_list([[-30, -4], [-4, 0], [0, 4], [4, 30]])
    clf = [[0, math.log(3)], [0, 0, 0, math.log(4)]]  # most probable leaf: 3 with P = 3/5
    sigmoid_head = hand_set_head(2, clf, [5.0, 5.0, 5.0, 0.0])
    identity_head = hand_set_head(2, clf, [5.0, 5.0, 5.0, 0.25], leaf_activation="identity")
    query, exemplars = torch.randn(3), torch.randn(2, 3)
    labels = torch.tensor([10.0, 20.0])

    relative, leaf, leaf_prob = sigmoid_head.predict_relative(query.expand(2, 3), exemplars, labels, groups)
    assert relative.tolist() == [17.0, 17.0]  # 4 + sigmoid(0) * (30 - 4)
    assert leaf.tolist() == [3, 3] and torch.allclose(leaf_prob, torch.tensor([0.6, 0.6]))

    vote = identity_head.vote(query, exemplars, labels, groups)
    assert vote.relative.tolist() == [10.5, 10.5]  # 4 + 0.25 * 26
    assert vote.votes.tolist() == [20.5, 30.5]  # label + relative
    assert vote.score.item() == 25.5


def test_pair_feature_order_is_exemplar_query_label() -> None:
    head = CoReHead(feature_dim=2, hidden=4, depth=1, label_scale=30.0)
    pair = head.pair_features(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]]), torch.tensor([15.0]))
    assert pair.tolist() == [[3.0, 4.0, 1.0, 2.0, 0.5]]


def test_head_loss_targets_query_minus_exemplar() -> None:
    # One decision level: P = [1/4, 3/4]; sigma_hat = [sigmoid(ln 3), sigmoid(0)] = [.75, .5].
    head = hand_set_head(1, [[0, math.log(3)]], [math.log(3), 0.0])
    groups = GroupBoundaries.from_list([[-10, 0], [0, 10]])
    query, exemplar = torch.randn(1, 3), torch.randn(1, 3)
    exemplar_label, query_label = torch.tensor([10.0]), torch.tensor([18.0])
    loss = head.loss(query, exemplar, exemplar_label, query_label, groups, classification="nll")
    # delta = 18 - 10 = 8 -> group 1, target .8: NLL = -ln .75 = .2876821, reg = (.5 - .8)^2 = .09
    # (the reversed sign would give group 0, target .2: -ln .25 and (.75 - .2)^2 = .3025).
    assert loss["cls"].item() == pytest.approx(0.2876821, abs=1e-6)
    assert loss["reg"].item() == pytest.approx(0.09, abs=1e-6)
    bce = head.loss(query, exemplar, exemplar_label, query_label, groups)
    assert bce["cls"].item() == pytest.approx(0.5753641, abs=1e-6)  # -(ln .75 + ln .75)


# ---------------------------------------------------------------- layout


REFERENCE_LAYOUT = {  # reference RegressTree(in_channel=2049, hidden_channel=256, depth=5)
    "first_layer.0.weight": (256, 2049),
    "first_layer.0.bias": (256,),
    "feature_layers.0.0.weight": (512, 256, 1),
    "feature_layers.0.0.bias": (512,),
    "feature_layers.1.0.weight": (1024, 256, 1),
    "feature_layers.1.0.bias": (1024,),
    "feature_layers.2.0.weight": (2048, 256, 1),
    "feature_layers.2.0.bias": (2048,),
    "feature_layers.3.0.weight": (4096, 256, 1),
    "feature_layers.3.0.bias": (4096,),
    "clf_layers.0.weight": (2, 256, 1),
    "clf_layers.0.bias": (2,),
    "clf_layers.1.weight": (4, 256, 1),
    "clf_layers.1.bias": (4,),
    "clf_layers.2.weight": (8, 256, 1),
    "clf_layers.2.bias": (8,),
    "clf_layers.3.weight": (16, 256, 1),
    "clf_layers.3.bias": (16,),
    "reg_layer.weight": (16, 256, 1),
    "reg_layer.bias": (16,),
}


def test_state_dict_matches_reference_layout_and_loads_strictly(tmp_path) -> None:
    head = CoReHead(feature_dim=1024, hidden=256, depth=4)
    assert {k: tuple(v.shape) for k, v in head.state_dict().items()} == REFERENCE_LAYOUT
    assert head.num_leaves == 16
    torch.manual_seed(1)
    path = tmp_path / "core_regressor.safetensors"
    save_file({k: torch.randn(shape) for k, shape in REFERENCE_LAYOUT.items()}, str(path))
    restored = CoReHead(**head.config())
    restored.load_state_dict(load_file(str(path)), strict=True)
    assert torch.equal(restored.reg_layer.weight, load_file(str(path))["reg_layer.weight"])


# ---------------------------------------------------------------- voting / errors


def test_vote_is_one_batch_equal_to_single_calls() -> None:
    torch.manual_seed(2)
    head = CoReHead(feature_dim=8, hidden=16, depth=3).eval()
    groups = GroupBoundaries.from_deltas(np.linspace(0, 10, 50), 8, score_range=30)
    query, exemplars, labels = torch.randn(8), torch.randn(5, 8), torch.tensor([1.0, 5.0, 9.0, 12.0, 20.0])
    batch_sizes: list[int] = []
    hook = head.first_layer.register_forward_hook(lambda module, args, out: batch_sizes.append(out.shape[0]))
    with torch.no_grad():
        vote = head.vote(query, exemplars, labels, groups)
        assert batch_sizes == [5]
        singles = [head.predict_relative(query[None], exemplars[m, None], labels[m, None], groups)
                   for m in range(5)]
    hook.remove()
    assert torch.allclose(vote.relative, torch.cat([s.relative for s in singles]), atol=1e-5)
    assert vote.leaf.tolist() == [s.leaf.item() for s in singles]
    assert torch.allclose(vote.votes, labels + vote.relative)
    assert vote.score.item() == pytest.approx(vote.votes.mean().item())


def test_bad_input_is_rejected_with_a_reason() -> None:
    head = CoReHead(feature_dim=4, hidden=8, depth=2)
    groups = GroupBoundaries.from_list([[-1, 0], [0, 1]])
    good = GroupBoundaries.from_list([[-2, -1], [-1, 0], [0, 1], [1, 2]])
    with pytest.raises(ValueError, match="2 groups but the tree has 4 leaves"):
        head.vote(torch.randn(4), torch.randn(3, 4), torch.zeros(3), groups)
    with pytest.raises(ValueError, match=r"exemplars must have shape \(3, 4\)"):
        head.vote(torch.randn(4), torch.randn(3, 5), torch.zeros(3), good)
    with pytest.raises(ValueError, match="exemplar_labels must have shape"):
        head.vote(torch.randn(4), torch.randn(3, 4), torch.zeros(2), good)
    with pytest.raises(ValueError, match="NaN"):
        head.vote(torch.full((4,), math.nan), torch.randn(3, 4), torch.zeros(3), good)
    with pytest.raises(TypeError, match="floating-point"):
        head.vote(torch.ones(4, dtype=torch.int64), torch.randn(3, 4), torch.zeros(3), good)
    with pytest.raises(ValueError, match="leaf_activation"):
        CoReHead(feature_dim=4, leaf_activation="relu")


# ---------------------------------------------------------------- training sanity


def test_tiny_training_run_learns_relative_scores() -> None:
    """Synthetic 8-d features, score = 15 + 3 w.f, so s_q - s_e is linear in (f_q - f_e)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster and fair to a shared machine
    try:
        rho = train_and_rank()
    finally:
        torch.set_num_threads(threads)
    assert rho > 0.9, f"Spearman {rho:.3f} after 300 Adam steps"


def train_and_rank() -> float:
    torch.manual_seed(0)
    generator = np.random.default_rng(0)
    weights = torch.tensor(generator.normal(size=8), dtype=torch.float32)
    weights /= weights.norm()
    features = torch.randn(160, 8)
    scores = 15 + 3 * features @ weights
    train, test = torch.arange(120), torch.arange(120, 160)

    pairs = torch.combinations(train, 2)
    pair_deltas = (scores[pairs[:, 0]] - scores[pairs[:, 1]]).numpy()
    groups = GroupBoundaries.from_deltas(pair_deltas, 8, score_range=30)
    head = CoReHead(feature_dim=8, hidden=32, depth=3, label_scale=30.0)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(300):
        query, exemplar = train[torch.randint(120, (64,))], train[torch.randint(120, (64,))]
        loss = head.loss(features[query], features[exemplar], scores[exemplar], scores[query], groups)
        optimizer.zero_grad()
        loss["total"].backward()
        optimizer.step()

    head.eval()
    exemplars = train[:10]
    with torch.no_grad():
        voted = [
            head.vote(features[q], features[exemplars], scores[exemplars], groups).score.item() for q in test
        ]
    return float(spearmanr(voted, scores[test].numpy()).statistic)


def test_grouped_linear_is_the_reference_grouped_pointwise_convolution() -> None:
    """Same initial parameters under one seed, same outputs and gradients as Conv1d(kernel_size=1, groups)."""
    torch.manual_seed(3)
    conv = torch.nn.Conv1d(12, 8, 1, groups=4)
    torch.manual_seed(3)
    grouped = GroupedLinear(12, 8, groups=4)
    assert torch.equal(conv.weight, grouped.weight) and torch.equal(conv.bias, grouped.bias)

    x = torch.randn(5, 12)
    expected = conv(x.unsqueeze(-1)).squeeze(-1)
    actual = grouped(x)
    assert torch.allclose(actual, expected, atol=1e-6)
    expected.square().sum().backward()
    actual.square().sum().backward()
    assert torch.allclose(grouped.weight.grad, conv.weight.grad, atol=1e-5)
    with pytest.raises(ValueError, match="divide"):
        GroupedLinear(10, 8, groups=4)
