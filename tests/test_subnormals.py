"""Subnormal weights: the bundled head had half its parameters subnormal; loaded, they are zero and every vote
is as before; training flushes them as Adam's weight decay produces them."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from exemplar_bank.bank import ExemplarBank
from models.heads import CoReScoringHead, build_head
from models.model_dir import BANK_DIR, HEAD_WEIGHTS, ModelConfig
from models.pretrained import DEMO_MODEL_DIR
from models.subnormals import (
    TRAINING_FLUSH_EVERY,
    flush_subnormals,
    flush_subnormals_while_training,
    subnormal_mask,
)

SUBNORMAL = 1e-39  # below float32's smallest normal, 1.18e-38


def count_subnormals(tensors: dict[str, torch.Tensor]) -> int:
    return sum(int(subnormal_mask(t).sum()) for t in tensors.values() if t.is_floating_point())


def test_flush_zeroes_only_subnormals() -> None:
    values = torch.tensor([SUBNORMAL, -SUBNORMAL, 1.2e-38, -3.0, 0.0, 5e-45])
    flushed = flush_subnormals({"w": values, "steps": torch.tensor([3, 0])})
    assert flushed["w"].tolist() == torch.tensor([0.0, 0.0, 1.2e-38, -3.0, 0.0, 0.0]).tolist()
    assert flushed["steps"].tolist() == [3, 0]
    clean = torch.ones(3)
    assert flush_subnormals({"clean": clean})["clean"] is clean  # nothing to flush: no copy


def test_the_demo_head_loads_without_subnormals_and_votes_as_with_them() -> None:
    config = ModelConfig.load(DEMO_MODEL_DIR)
    raw = load_file(str(DEMO_MODEL_DIR / HEAD_WEIGHTS))
    assert count_subnormals(raw) > 1_000_000  # the file as trained: the reason for this module
    served = build_head(config.head, config.backbone.feature_dim, config.labels.scale, config.head_config, raw)
    assert isinstance(served, CoReScoringHead)
    assert count_subnormals(served.head.state_dict()) == 0
    as_trained = CoReScoringHead.from_config(config.backbone.feature_dim, config.labels.scale, config.head_config,
                                             raw)  # loads the weights unflushed
    assert count_subnormals(as_trained.head.state_dict()) == count_subnormals(raw)

    bank = ExemplarBank.load(DEMO_MODEL_DIR / BANK_DIR)
    labels = torch.tensor([e.final_score for e in bank.exemplars[:40]])
    for query in range(0, 40, 4):
        exemplars = [i for i in range(40) if i != query][:10]
        served_votes = served.vote(bank.clip_features[query], bank.clip_features[exemplars], labels[exemplars])
        trained_votes = as_trained.vote(bank.clip_features[query], bank.clip_features[exemplars], labels[exemplars])
        torch.testing.assert_close(served_votes.votes, trained_votes.votes, rtol=0, atol=1e-6)
        assert served_votes.per_exemplar_evidence == trained_votes.per_exemplar_evidence


def test_training_flushes_what_adams_weight_decay_makes_subnormal() -> None:
    def train(flush: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        weight = torch.nn.Parameter(torch.full((8,), 0.03))
        optimizer = torch.optim.Adam([weight], lr=1e-3, weight_decay=1e-4)
        if flush:
            flush_subnormals_while_training(optimizer)
        for _ in range(125 * TRAINING_FLUSH_EVERY):  # 2,000 steps; no gradient from the data, only the decay
            optimizer.zero_grad()
            weight.grad = torch.zeros_like(weight)
            optimizer.step()
        return weight.detach(), optimizer.state[weight]

    decayed, state = train(flush=False)
    assert bool(subnormal_mask(decayed).all())  # reproduces the trained head's subnormal weights
    assert bool(subnormal_mask(state["exp_avg"]).all())
    flushed, state = train(flush=True)
    assert flushed.abs().max() == 0 and state["exp_avg"].abs().max() == 0
