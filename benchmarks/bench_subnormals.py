"""The bundled CoRe head with its weights as trained (half of them subnormal) against the same head with those
flushed to zero (``models/subnormals.py``), side by side: one vote of a query against 10 exemplars (what a
scored video costs after its features) and one training step (forward, GART loss, backward, Adam), with the
largest difference of the votes. Run from the repository root:

    .venv/bin/python benchmarks/bench_subnormals.py [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
from common import ratio, side_by_side
from safetensors.torch import load_file

from exemplar_bank.bank import ExemplarBank
from models.gart import GroupBoundaries, gart_loss
from models.heads import CoReScoringHead
from models.model_dir import BANK_DIR, HEAD_WEIGHTS, ModelConfig
from models.pretrained import DEMO_MODEL_DIR
from models.subnormals import flush_subnormals, subnormal_mask

VOTES_PER_CALL, STEPS_PER_CALL, BATCH = 50, 5, 64


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = ModelConfig.load(DEMO_MODEL_DIR)
    raw = load_file(str(DEMO_MODEL_DIR / HEAD_WEIGHTS))
    subnormal = sum(int(subnormal_mask(t).sum()) for t in raw.values())
    states = {"as_trained": raw, "flushed": flush_subnormals(raw)}

    def head_with(name: str) -> CoReScoringHead:
        return CoReScoringHead.from_config(config.backbone.feature_dim, config.labels.scale, config.head_config,
                                           states[name])

    heads = {name: head_with(name) for name in states}
    bank = ExemplarBank.load(DEMO_MODEL_DIR / BANK_DIR)
    labels = torch.tensor([e.final_score for e in bank.exemplars])
    queries = torch.randint(0, len(bank), (VOTES_PER_CALL,), generator=torch.Generator().manual_seed(0))

    def votes(head: CoReScoringHead) -> list[torch.Tensor]:
        return [head.vote(bank.clip_features[q], bank.clip_features[q + 1: q + 11], labels[q + 1: q + 11]).votes
                for q in queries.clamp(max=len(bank) - 11).tolist()]

    def training_step(name: str) -> Callable[[], None]:
        head = head_with(name).head.train()  # its own copy: training changes the weights
        optimizer = torch.optim.Adam(head.parameters(), lr=1e-4, foreach=True)
        boundaries = GroupBoundaries.from_list(config.head_config["boundaries"])
        pooled = bank.pooled_features
        rows = torch.randint(0, len(bank), (2, BATCH), generator=torch.Generator().manual_seed(1))

        def steps() -> None:
            for _ in range(STEPS_PER_CALL):
                pair = head.pair_features(pooled[rows[0]], pooled[rows[1]], labels[rows[1]])
                log_probs, leaf_values = head(pair)
                group, target = boundaries.assign(labels[rows[0]] - labels[rows[1]])
                loss = gart_loss(log_probs, leaf_values, group, target)
                optimizer.zero_grad(set_to_none=True)
                loss["total"].backward()
                optimizer.step()
        return steps

    vote_timings = side_by_side({name: lambda h=head: votes(h) for name, head in heads.items()}, args.repeats)
    step_timings = side_by_side({name: training_step(name) for name in heads}, args.repeats)
    difference = max(float((a - b).abs().max()) for a, b in zip(votes(heads["as_trained"]), votes(heads["flushed"])))
    result = {
        "subnormal_parameters": subnormal, "parameters": sum(t.numel() for t in raw.values()),
        "threads": args.threads,
        "vote_ms": {name: {stat: t[f"{stat}_s"] / VOTES_PER_CALL * 1e3 for stat in ("min", "median")}
                    for name, t in vote_timings.items()},
        "training_step_ms": {name: {stat: t[f"{stat}_s"] / STEPS_PER_CALL * 1e3 for stat in ("min", "median")}
                             for name, t in step_timings.items()},
        "vote_speedup": ratio(vote_timings["as_trained"], vote_timings["flushed"]),
        "training_step_speedup": ratio(step_timings["as_trained"], step_timings["flushed"]),
        "max_abs_vote_difference": difference,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
