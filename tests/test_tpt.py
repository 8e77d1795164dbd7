"""TPT head: attention statistics and losses by hand, the cross-attention step by hand, clip-order
invariance, voting, the state-dict layout, the scoring adapter, bad input and a tiny training run.

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

from models.gart import GroupBoundaries
from models.heads import HeadVotes, TPTScoringHead
from models.tpt import (
    PartParse,
    TemporalParsingLayer,
    TPTHead,
    TPTLossWeights,
    TPTOutput,
    attention_centres,
    attention_spans,
    ranking_loss,
    sparsity_loss,
    tpt_loss,
)

# Two parts over T = 4 clips. Centres: 1(.1) + 2(.2) + 3(.3) + 4(.4) = 3.0 and 1(.5) + 2(.5) = 1.5.
ATTENTION = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.0, 0.0]])
# Centres 1.5 and 3.5.
ORDERED = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]])


def tiny_head(**kwargs) -> TPTHead:
    config = {"in_dim": 6, "d_model": 8, "num_parts": 3, "num_layers": 2, "ffn_dim": 12, "num_groups": 4,
              "head_hidden": 10, "self_attention_heads": 2} | kwargs
    return TPTHead(**config)


FOUR_GROUPS = GroupBoundaries.from_list([[-30, -4], [-4, 0], [0, 4], [4, 30]])


# ---------------------------------------------------------------- attention statistics and losses


def test_attention_centres_by_hand() -> None:
    assert attention_centres(ATTENTION).tolist() == pytest.approx([3.0, 1.5])
    # Any leading dims: (layers, batch, K, T) -> (layers, batch, K).
    stacked = torch.stack([ATTENTION, ORDERED])[:, None]
    assert attention_centres(stacked).shape == (2, 1, 2)
    assert attention_centres(stacked)[1, 0].tolist() == pytest.approx([1.5, 3.5])


def test_attention_spans_by_hand() -> None:
    attention = torch.tensor([
        [0.02, 0.06, 0.60, 0.25, 0.07],  # cumulative .02 .08 .68 .93 1: > .1 at clip 2, >= .9 at clip 3
        [0.00, 0.00, 1.00, 0.00, 0.00],  # all mass on clip 2
        [0.20, 0.20, 0.20, 0.20, 0.20],  # cumulative .2 .4 .6 .8 1: > .1 at clip 0, >= .9 at clip 4
    ])
    assert attention_spans(attention, mass=0.8).tolist() == [[2, 3], [2, 2], [0, 4]]
    # mass .5 on the first row: tails .25 -> cumulative > .25 at clip 2, >= .75 at clip 3.
    assert attention_spans(attention[:1], mass=0.5).tolist() == [[2, 3]]
    with pytest.raises(ValueError, match="mass"):
        attention_spans(attention, mass=0.0)


def test_ranking_loss_by_hand() -> None:
    # Ordered, inside [1 + m, T - m]: 2-4+1, 4-6+1 < 0; 1-2+1 = 0; 6-8+1 < 0 -> no violation.
    assert ranking_loss(torch.tensor([[2.0, 4.0, 6.0]]), num_clips=8, margin=1.0).item() == 0.0
    # First centre too close to clip 1: max(0, 1 - 1.5 + 1) = .5; order 1.5-3+1 < 0; last 3-4+1 = 0.
    assert ranking_loss(torch.tensor([[1.5, 3.0]]), num_clips=4, margin=1.0).item() == pytest.approx(0.5)
    # Reversed: order 3-2+1 = 2; first 1-3+1 < 0; last 2-4+1 < 0.
    assert ranking_loss(torch.tensor([[3.0, 2.0]]), num_clips=4, margin=1.0).item() == pytest.approx(2.0)
    # Last centre too close to T: max(0, 7.5 - 8 + 1) = .5.
    assert ranking_loss(torch.tensor([[2.0, 7.5]]), num_clips=8, margin=1.0).item() == pytest.approx(0.5)
    # Batch mean: (.5 + 2) / 2.
    batch = torch.tensor([[1.5, 3.0], [3.0, 2.0]])
    assert ranking_loss(batch, num_clips=4, margin=1.0).item() == pytest.approx(1.25)
    # The margin matters: with m = 0 the first case has no violation (1 - 1.5 < 0, 1.5 - 3 < 0, 3 - 4 < 0).
    assert ranking_loss(torch.tensor([[1.5, 3.0]]), num_clips=4, margin=0.0).item() == 0.0


def test_sparsity_loss_by_hand() -> None:
    # Part 1, centre 3: 2(.1) + 1(.2) + 0(.3) + 1(.4) = .8; part 2, centre 1.5: .5(.5) + .5(.5) = .5.
    centres = torch.tensor([[3.0, 1.5]])
    assert sparsity_loss(ATTENTION[None], centres).item() == pytest.approx((0.8 + 0.5) / 2)
    # A one-hot attention has no spread.
    one_hot = torch.tensor([[[0.0, 1.0, 0.0]]])
    assert sparsity_loss(one_hot, torch.tensor([[2.0]])).item() == 0.0


def test_tpt_loss_sums_layers_and_both_videos_by_hand() -> None:
    # G = 2: P = [.25, .75]; raw leaf values [0, ln 3] -> sigma_hat [.5, .75]; true group 1, target .5:
    # NLL = -ln .75 = .2876821, reg = (.75 - .5)^2 = .0625.
    log_probs = torch.tensor([[0.25, 0.75]]).log()
    leaf_values = torch.tensor([[0.0, math.log(3)]])
    # Query: layer 0 = ATTENTION (centres 3, 1.5), layer 1 = ORDERED (1.5, 3.5); exemplar: ORDERED twice.
    # m = 2, T = 4. ATTENTION: order 3-1.5+2 = 3.5, first 1-3+2 = 0, last 1.5-4+2 < 0 -> 3.5; spread .65.
    # ORDERED: order 1.5-3.5+2 = 0, first 1-1.5+2 = 1.5, last 3.5-4+2 = 1.5 -> 3.0; spread (.5 + .5)/2 = .5.
    # Layer 0 over the 2 videos: rank (3.5 + 3)/2 = 3.25, sparsity (.65 + .5)/2 = .575; layer 1: 3, .5.
    query = PartParse(torch.zeros(1, 2, 4), torch.stack([ATTENTION, ORDERED])[:, None])
    exemplar = PartParse(torch.zeros(1, 2, 4), torch.stack([ORDERED, ORDERED])[:, None])
    output = TPTOutput(log_probs, leaf_values, torch.zeros(1, 2, 4), query, exemplar)
    loss = tpt_loss(output, torch.tensor([1]), torch.tensor([0.5]), margin=2.0)
    assert loss["cls"].item() == pytest.approx(0.2876821, abs=1e-6)
    assert loss["reg"].item() == pytest.approx(0.0625, abs=1e-6)
    assert loss["rank"].item() == pytest.approx(6.25, abs=1e-6)
    assert loss["sparsity"].item() == pytest.approx(1.075, abs=1e-6)
    # Default weights 1, 1, 1, .05: .2876821 + .0625 + 6.25 + .05 * 1.075
    assert loss["total"].item() == pytest.approx(6.6539321, abs=1e-6)
    weighted = tpt_loss(output, torch.tensor([1]), torch.tensor([0.5]),
                        TPTLossWeights(cls=2, reg=0, rank=0.5, sparsity=1), margin=2.0)
    assert weighted["total"].item() == pytest.approx(2 * 0.2876821 + 3.125 + 1.075, abs=1e-6)


def test_reference_reductions_add_the_directions_and_average_within_leaves() -> None:
    """TPT's train script: nll(dir 1) + nll(dir 2) + sum over both directions and the 16 leaves of the mean
    squared error of the pairs in each leaf; here 2 pairs per direction, G = 2, sigmoid leaves."""
    log_probs = torch.tensor([[0.25, 0.75], [0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]).log()
    leaf_values = torch.tensor([[0.0, math.log(3)], [0.0, 0.0], [math.log(3), 0.0], [0.0, 0.0]])
    group = torch.tensor([1, 1, 0, 1])  # direction 1: both pairs in leaf 1; direction 2: one in each leaf
    target = torch.tensor([0.5, 0.25, 0.5, 1.0])
    parse = PartParse(torch.zeros(4, 2, 4), torch.stack([ORDERED, ORDERED])[:, None].expand(2, 4, 2, 4))
    output = TPTOutput(log_probs, leaf_values, torch.zeros(4, 2, 4), parse, parse)
    loss = tpt_loss(output, group, target, margin=2.0, reduction="leaf", directions=2)
    nll = [-math.log(0.75), -math.log(0.5), -math.log(0.9), -math.log(0.8)]
    assert loss["cls"].item() == pytest.approx((nll[0] + nll[1]) / 2 + (nll[2] + nll[3]) / 2, abs=1e-6)
    squared = [(0.75 - 0.5) ** 2, (0.5 - 0.25) ** 2, (0.75 - 0.5) ** 2, (0.5 - 1.0) ** 2]
    assert loss["reg"].item() == pytest.approx((squared[0] + squared[1]) / 2 + squared[2] + squared[3], abs=1e-6)
    pair_mean = tpt_loss(output, group, target, margin=2.0)
    assert pair_mean["cls"].item() == pytest.approx(sum(nll) / 4, abs=1e-6)
    assert pair_mean["reg"].item() == pytest.approx(sum(squared) / 4, abs=1e-6)
    assert loss["rank"].item() == pair_mean["rank"].item() == pytest.approx(2 * 3.0, abs=1e-6)


# ---------------------------------------------------------------- the decoder


def identity_layer(temperature: float) -> TemporalParsingLayer:
    """in_dim = d = 2 with identity key/value/query projections and zero biases."""
    layer = TemporalParsingLayer(in_dim=2, d_model=2, ffn_dim=3, temperature=temperature, dropout=0.0,
                                 self_attention_heads=None)
    with torch.no_grad():
        for projection in (layer.key_embed, layer.value_embed, layer.query_embed):
            projection.weight.copy_(torch.eye(2))
            projection.bias.zero_()
    return layer.eval()


def test_cross_attention_step_by_hand() -> None:
    clips = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]]])  # v_1..v_3
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # q_1, q_2
    parts = torch.tensor([[[0.5, -0.5], [0.0, 0.0]]])  # p_1 from a previous layer, p_2 = 0
    # d tau = 2 * .5 = 1, so the logits are (p_k + q_k) . v_t:
    # part 1: p + q = [1.5, -.5] -> [1.5, -.5, 3] -> softmax [.1780302, .0240938, .7978760];
    #   sum_t alpha v_t = [.1780302 + 2 (.7978760), .0240938] = [1.7737823, .0240938]
    # part 2: q = [0, 1] -> [0, 1, 0] -> [.2119416, .5761169, .2119416]; sum = [.6358247, .5761169]
    attended, alpha = identity_layer(0.5).cross_attention(clips, parts, queries)
    expected_alpha = torch.tensor([[[0.1780302, 0.0240938, 0.7978760], [0.2119416, 0.5761169, 0.2119416]]])
    assert torch.allclose(alpha, expected_alpha, atol=1e-6)
    assert torch.allclose(attended, torch.tensor([[[1.7737823, 0.0240938], [0.6358247, 0.5761169]]]), atol=1e-6)
    # The part update p + sum_t alpha v_t (before the layer norm) for part 1: [2.2737823, -.4759062].
    assert torch.allclose((parts + attended)[0, 0], torch.tensor([2.2737823, -0.4759062]), atol=1e-6)
    # tau = .25 doubles the logits: part 2 -> [0, 2, 0] -> e^2 / (2 + e^2) = .7869860, .1065070 each.
    _, sharper = identity_layer(0.25).cross_attention(clips, parts, queries)
    assert torch.allclose(sharper[0, 1], torch.tensor([0.1065070, 0.7869860, 0.1065070]), atol=1e-6)
    # The layer returns the same attention it updates with.
    _, layer_attention = identity_layer(0.5)(clips, parts, queries)
    assert torch.allclose(layer_attention, expected_alpha, atol=1e-6)


def test_temperature_starts_at_007_and_learns() -> None:
    head = tiny_head()
    temps = [layer.temp for layer in head.action_decoder.layers]
    assert [t.item() for t in temps] == pytest.approx([0.07, 0.07])
    groups = GroupBoundaries.from_list([[-2, -1], [-1, 0], [0, 1], [1, 2]])
    output = head(torch.randn(2, 5, 6), torch.randn(2, 5, 6))
    group_idx, target = groups.assign(torch.tensor([0.5, -1.5]))
    tpt_loss(output, group_idx, target)["total"].backward()
    assert all(t.requires_grad and t.grad is not None and t.grad.abs() > 0 for t in temps)


def test_parts_do_not_depend_on_clip_order() -> None:
    """No positional embedding: permuting the clips leaves the parts unchanged (every layer) and permutes the
    attention columns the same way."""
    torch.manual_seed(3)
    head = tiny_head().eval()
    clips = torch.randn(2, 7, 6)
    order = torch.tensor([4, 0, 6, 2, 1, 5, 3])
    with torch.no_grad():
        parse, shuffled = head.parse(clips), head.parse(clips[:, order])
    assert torch.allclose(parse.parts, shuffled.parts, atol=1e-5)
    assert torch.allclose(parse.attention[..., order], shuffled.attention, atol=1e-6)
    assert parse.attention.shape == (2, 2, 3, 7)
    assert torch.allclose(parse.attention.sum(-1), torch.ones(2, 2, 3), atol=1e-6)
    # Not a constant: different clips give different parts.
    assert not torch.allclose(parse.parts, head.parse(torch.randn(2, 7, 6)).parts, atol=1e-3)


def test_pair_representation_puts_the_exemplar_first() -> None:
    """r_k = f_r(concat(p0_k, p_k)): with f_r = ReLU of the first half of its input, r_k = ReLU(p0_k)."""
    torch.manual_seed(8)
    head = tiny_head(dropout=0.0).eval()
    first, second = head.pair_encoder.mlp[0], head.pair_encoder.mlp[3]
    with torch.no_grad():
        first.weight.copy_(torch.cat([torch.eye(8), torch.zeros(8, 8)], dim=1))
        second.weight.copy_(torch.eye(8))
        first.bias.zero_()
        second.bias.zero_()
        output = head(torch.randn(2, 5, 6), torch.randn(2, 5, 6))
    assert torch.allclose(output.part_pairs, output.exemplar_parse.parts.relu())
    assert not torch.allclose(output.part_pairs, output.query_parse.parts.relu())


# ---------------------------------------------------------------- inference


def test_single_part_evidence_equals_the_fused_prediction() -> None:
    """With K = 1 the part average is r_1 itself, so the per-part relative score is the fused one."""
    torch.manual_seed(4)
    head = tiny_head(num_parts=1).eval()
    with torch.no_grad():
        result = head.predict_relative(torch.randn(5, 4, 6), torch.randn(5, 4, 6), FOUR_GROUPS)
    assert result.part_relative.shape == (5, 1)
    assert torch.allclose(result.part_relative[:, 0], result.relative)
    assert torch.equal(result.part_group[:, 0], result.group)
    assert ((result.relative >= -30) & (result.relative <= 30)).all()


def test_vote_is_one_batched_pass_equal_to_single_calls() -> None:
    torch.manual_seed(5)
    head = tiny_head().eval()
    query, exemplars = torch.randn(5, 6), torch.randn(4, 5, 6)
    labels = torch.tensor([10.0, 12.0, 15.0, 20.0])
    batch_sizes: list[int] = []
    hook = head.action_decoder.register_forward_hook(lambda module, args, out: batch_sizes.append(args[0].shape[0]))
    with torch.no_grad():
        vote = head.vote(query, exemplars, labels, FOUR_GROUPS)
        assert batch_sizes == [1 + 4]  # one decoder pass: the query and the 4 exemplars
        singles = [head.predict_relative(query[None], exemplars[m, None], FOUR_GROUPS) for m in range(4)]
    hook.remove()
    assert torch.allclose(vote.relative, torch.cat([s.relative for s in singles]), atol=1e-5)
    assert torch.allclose(vote.part_relative, torch.cat([s.part_relative for s in singles]), atol=1e-5)
    assert vote.group.tolist() == [s.group.item() for s in singles]
    assert torch.allclose(vote.votes, labels + vote.relative)
    assert vote.score.item() == pytest.approx(vote.votes.mean().item())
    assert vote.query_attention.shape == (2, 3, 5)


# ---------------------------------------------------------------- layout and adapter


def tiny_layout(self_attention: bool) -> dict[str, tuple[int, ...]]:
    """in_dim 6, d 8, K 3, 2 layers, ffn 12, G 4, head hidden 10."""
    layout: dict[str, tuple[int, ...]] = {"action_decoder.query_embed.weight": (3, 8)}
    for i in range(2):
        prefix = f"action_decoder.layers.{i}."
        layout |= {
            prefix + "temp": (),
            prefix + "key_embed.weight": (8, 6), prefix + "key_embed.bias": (8,),
            prefix + "value_embed.weight": (8, 6), prefix + "value_embed.bias": (8,),
            prefix + "query_embed.weight": (8, 8), prefix + "query_embed.bias": (8,),
            prefix + "norm1.weight": (8,), prefix + "norm1.bias": (8,),
            prefix + "linear1.weight": (12, 8), prefix + "linear1.bias": (12,),
            prefix + "linear2.weight": (8, 12), prefix + "linear2.bias": (8,),
            prefix + "norm2.weight": (8,), prefix + "norm2.bias": (8,),
        }
    if self_attention:
        layout |= {
            "action_decoder.layers.0.self_attn.in_proj_weight": (24, 8),
            "action_decoder.layers.0.self_attn.in_proj_bias": (24,),
            "action_decoder.layers.0.self_attn.out_proj.weight": (8, 8),
            "action_decoder.layers.0.self_attn.out_proj.bias": (8,),
            "action_decoder.layers.0.norm3.weight": (8,),
            "action_decoder.layers.0.norm3.bias": (8,),
        }
    return layout | {
        "pair_encoder.mlp.0.weight": (8, 16), "pair_encoder.mlp.0.bias": (8,),
        "pair_encoder.mlp.3.weight": (8, 8), "pair_encoder.mlp.3.bias": (8,),
        "cls.0.weight": (10, 8), "cls.0.bias": (10,), "cls.2.weight": (4, 10), "cls.2.bias": (4,),
        "reg.0.weight": (10, 8), "reg.0.bias": (10,), "reg.2.weight": (4, 10), "reg.2.bias": (4,),
    }


def test_state_dict_layout_is_documented_and_round_trips(tmp_path) -> None:
    for self_attention in (True, False):
        head = tiny_head(query_self_attention=self_attention)
        layout = {key: tuple(value.shape) for key, value in head.state_dict().items()}
        assert layout == tiny_layout(self_attention)

    torch.manual_seed(6)
    head = tiny_head().eval()
    path = tmp_path / "head.safetensors"
    save_file(head.state_dict(), str(path))
    config = json.loads(json.dumps(head.config()))
    restored = TPTHead.from_config(config).eval()
    restored.load_state_dict(load_file(str(path)), strict=True)
    query, exemplars, labels = torch.randn(5, 6), torch.randn(3, 5, 6), torch.tensor([1.0, 2.0, 3.0])
    with torch.no_grad():
        assert torch.equal(head.vote(query, exemplars, labels, FOUR_GROUPS).votes,
                           restored.vote(query, exemplars, labels, FOUR_GROUPS).votes)
    with pytest.raises(ValueError, match="unknown TPT head config keys"):
        TPTHead.from_config(config | {"hidden": 256})


def test_scoring_adapter_votes_with_part_evidence(tmp_path) -> None:
    torch.manual_seed(7)
    head = tiny_head()
    save_file(head.state_dict(), str(tmp_path / "head.safetensors"))
    config = {key: value for key, value in head.config().items() if key not in ("in_dim", "num_groups")}
    config["boundaries"] = FOUR_GROUPS.to_list()
    adapter = TPTScoringHead.from_config(6, 30.0, json.loads(json.dumps(config)),
                                         load_file(str(tmp_path / "head.safetensors")))
    query, exemplars, labels = torch.randn(5, 6), torch.randn(3, 5, 6), torch.tensor([7.0, 8.0, 9.0])
    votes = adapter.vote(query, exemplars, labels)
    assert isinstance(votes, HeadVotes)
    with torch.no_grad():
        direct = head.eval().vote(query, exemplars, labels, FOUR_GROUPS)
    assert torch.allclose(votes.votes, direct.votes)
    parts = votes.evidence["parts"]
    assert [part["part"] for part in parts] == [0, 1, 2]
    last_layer = direct.query_attention[-1]
    for part, attention in zip(parts, last_layer, strict=True):
        first, last = part["span_clips"]
        assert 0 <= first <= last <= 4
        assert attention[first : last + 1].sum() >= 0.8 - 1e-6  # the span holds the promised mass
        assert 0 <= part["centre_clip"] <= 4  # 0-based
    assert [part["relative"] for part in parts] == pytest.approx(direct.part_relative.mean(0).tolist(), abs=1e-4)
    assert len(votes.per_exemplar_evidence) == 3
    assert len(votes.per_exemplar_evidence[0]["part_relative"]) == 3
    with pytest.raises(ValueError, match="expects 6-d clip features, the backbone gives 8"):
        TPTScoringHead.from_config(8, 30.0, config | {"in_dim": 6}, head.state_dict())


def test_bad_input_is_rejected_with_a_reason() -> None:
    head = tiny_head()
    query, exemplars, labels = torch.randn(5, 6), torch.randn(3, 5, 6), torch.zeros(3)
    with pytest.raises(ValueError, match="2 groups but the head predicts 4"):
        head.vote(query, exemplars, labels, GroupBoundaries.from_list([[-1, 0], [0, 1]]))
    with pytest.raises(ValueError, match=r"exemplar_clips must have shape \(3, 'T', 6\)"):
        head.vote(query, torch.randn(3, 5, 7), labels, FOUR_GROUPS)
    with pytest.raises(ValueError, match="the query has 5"):
        head.vote(query, torch.randn(3, 4, 6), labels, FOUR_GROUPS)
    with pytest.raises(ValueError, match="exemplar_labels must have shape"):
        head.vote(query, exemplars, torch.zeros(2), FOUR_GROUPS)
    with pytest.raises(ValueError, match="NaN"):
        head.vote(torch.full((5, 6), math.nan), exemplars, labels, FOUR_GROUPS)
    with pytest.raises(TypeError, match="floating-point"):
        head.parse(torch.ones(2, 5, 6, dtype=torch.int64))
    with pytest.raises(ValueError, match="must match"):
        head(torch.randn(2, 5, 6), torch.randn(2, 4, 6))
    with pytest.raises(ValueError, match="must divide d_model"):
        tiny_head(self_attention_heads=3)
    with pytest.raises(ValueError, match="temperature"):
        tiny_head(temperature=0.0)


# ---------------------------------------------------------------- training sanity


def phased_dives(count: int, generator: torch.Generator, clips: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 8-d clip features: a phase-A run (pattern on dim 0) then a phase-B run (pattern on dim 1),
    switching at a random clip 3..7. Dim 3 carries the quality x in phase-B clips and a stronger,
    unrelated distractor in phase-A clips, so the score is readable only from the clips of the right
    phase. Score = 10 x."""
    quality = torch.rand(count, generator=generator)
    distractor = torch.rand(count, generator=generator)
    switch = torch.randint(3, 8, (count,), generator=generator)
    phase_b = (torch.arange(clips)[None] >= switch[:, None]).float()
    features = 0.1 * torch.randn(count, clips, 8, generator=generator)
    features[..., 0] += 2 * (1 - phase_b)
    features[..., 1] += 2 * phase_b
    features[..., 3] += 6 * distractor[:, None] * (1 - phase_b) + 2 * quality[:, None] * phase_b
    return features, 10 * quality


def test_tiny_training_run_parses_phases_and_ranks() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster and fair to a shared machine
    try:
        torch.manual_seed(0)
        features, scores = phased_dives(160, torch.Generator().manual_seed(0))
        train, test = torch.arange(120), torch.arange(120, 160)
        # Averaging the clips mixes the distractor in: the pooled quality dim ranks the test dives poorly.
        pooled_rho = spearmanr(features[test, :, 3].mean(1).numpy(), scores[test].numpy()).statistic
        assert pooled_rho < 0.6

        pairs = torch.combinations(train, 2)
        groups = GroupBoundaries.from_deltas((scores[pairs[:, 0]] - scores[pairs[:, 1]]).numpy(), 8,
                                             score_range=10)
        head = TPTHead(in_dim=8, d_model=16, num_parts=2, num_layers=2, ffn_dim=32, num_groups=8,
                       head_hidden=32, self_attention_heads=2)
        optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
        for _ in range(150):
            query, exemplar = train[torch.randint(120, (32,))], train[torch.randint(120, (32,))]
            group_idx, target = groups.assign(scores[query] - scores[exemplar])
            loss = tpt_loss(head(features[query], features[exemplar]), group_idx, target, margin=1.0)
            optimizer.zero_grad()
            loss["total"].backward()
            optimizer.step()

        head.eval()
        exemplars = train[:8]
        with torch.no_grad():
            voted = [head.vote(features[q], features[exemplars], scores[exemplars], groups).score.item()
                     for q in test]
            attention = head.parse(features[test]).attention[-1]  # (B, K, T), last layer
    finally:
        torch.set_num_threads(threads)
    rho = spearmanr(voted, scores[test].numpy()).statistic
    assert rho > 0.8, f"Spearman {rho:.3f} after 150 Adam steps"
    # The ranking loss orders the parts: part 1 reads phase A, part 2 phase B.
    phase_b = (features[test, :, 1] > 1).float()
    mass_b = (attention * phase_b[:, None]).sum(-1).mean(0)
    assert mass_b[0] < 0.2 and mass_b[1] > 0.8, f"phase-B attention mass per part {mass_b.tolist()}"
    assert np.isfinite(loss["total"].item())
