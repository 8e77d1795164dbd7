"""The papers' training recipes (``kinetics`` = CoRe, ``kinetics-tpt`` = TPT): profile fields against the reference
code, one end-to-end step against a hand-derived loss, frozen BatchNorm statistics through ``aqa train``, a tiny
fine-tune that lowers the loss, and resume against an uninterrupted run."""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from aqa.cli import main
from models.clips import ClipProtocol
from models.core import CoReHead
from models.gart import GroupBoundaries
from models.i3d import I3D
from models.model_dir import BACKBONE_WEIGHTS
from models.scorer import QueryLabels, Scorer
from models.weights.core_import import CORE_PREPROCESSING
from tests.paths import MTL_AQA_DIR
from tests.test_protocols import write_fake_mtl_aqa
from training.checkpoints import BEST, LAST, CheckpointError
from training.datasets.folder_csv import load_folder_csv
from training.datasets.mtl_aqa import load_mtl_aqa
from training.finetune_pairs import PairStep, _optimizer, finetune_pairs, frozen_batchnorm_train
from training.pairs import PairSampler, pair_groups, pairing_keys, within_group_deltas
from training.profiles import PROFILES, TrainingProfile
from training.protocols import PROTOCOLS
from training.train_tpt import build_tpt_head

SIZE_FIELDS = {"name", "description", "preprocessing", "clips", "backbone_width", "num_exemplars",
               "validation_fraction", "test_fraction"}


def _batchnorm_statistics(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


def _imported_backbone(folder: Path, width: float = 0.125, seed: int = 1) -> Path:
    """A backbone.safetensors as `aqa weights import` writes it: random weights whose BatchNorm statistics were
    estimated on random clips (like a pretrained network's: input-dependent features, statistics that no
    re-estimation on the training videos would give)."""
    torch.manual_seed(seed)
    backbone = I3D(width=width)
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batch
    with torch.no_grad():
        backbone.train().forward_features(torch.rand(4, 3, 8, 32, 32) * 2 - 1)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(folder / BACKBONE_WEIGHTS))
    return folder


# --- the recipes, field by field -----------------------------------------------------------------


def test_kinetics_is_cores_recipe() -> None:
    profile = PROFILES["kinetics"]
    head, e2e = profile.head, profile.end_to_end
    assert e2e is not None
    assert profile.preprocessing == CORE_PREPROCESSING == PROTOCOLS["core-mtl"].reference_input
    assert profile.clips == ClipProtocol.core_mtl() and profile.backbone_width == 1.0
    assert (head.hidden, head.depth, head.epochs, head.batch_size, head.lr, head.weight_decay) == (
        256, 4, 200, 1, 1e-3, 0.0)
    assert (head.leaf_activation, head.classification_loss, head.reduction) == ("identity", "nll", "leaf")
    assert head.both_directions and head.pairing == "difficulty" and head.pair_singletons
    assert (e2e.backbone_lr_factor, e2e.accumulate, e2e.temporal_jitter) == (0.1, 2, 3)
    assert e2e.random_crop and e2e.crop_margin is None and e2e.horizontal_flip and e2e.freeze_batchnorm
    assert not profile.backbone.recalibrate_batchnorm and profile.num_exemplars == 10


def test_kinetics_tpt_is_tpts_recipe() -> None:
    profile = PROFILES["kinetics-tpt"]
    tpt, e2e = profile.tpt, profile.end_to_end
    assert e2e is not None and profile.default_head == "tpt" and profile.clips == ClipProtocol.tpt()
    assert (tpt.d_model, tpt.ffn_dim, tpt.num_parts, tpt.num_layers, tpt.epochs, tpt.batch_size) == (
        512, 512, 5, 2, 250, 3)
    assert (tpt.lr_decoder, tpt.lr_heads, tpt.weight_decay, tpt.sparsity_weight) == (1e-4, 1e-3, 0.0, 0.05)
    assert (tpt.ranking_margin, tpt.cap_ranking_margin, tpt.reduction, tpt.pairing) == (3.2, False, "leaf",
                                                                                       "difficulty")
    assert e2e.accumulate * tpt.batch_size == 24  # 8 GPUs x 3 queries per step
    assert e2e.backbone_lr_factor * tpt.lr_heads == pytest.approx(1e-4)


@pytest.mark.parametrize(("tiny", "full"), [("tiny-kinetics", "kinetics"), ("tiny-kinetics-tpt", "kinetics-tpt")])
def test_tiny_recipes_differ_from_the_papers_only_in_size(tiny: str, full: str) -> None:
    small, big = PROFILES[tiny].to_dict(), PROFILES[full].to_dict()
    differing = {k for k in big if small[k] != big[k]} - SIZE_FIELDS
    size_only = {"hidden", "depth", "epochs", "d_model", "ffn_dim", "head_hidden", "self_attention_heads",
                 "eval_every", "workers", "accumulate"}
    for section in differing:
        changed = {k for k in big[section] if small[section][k] != big[section][k]}
        assert changed <= size_only, (section, changed)


def test_difficulty_pairing_on_mtl_aqa_split_0() -> None:
    """CoRe pairs same-difficulty dives: 67,562 training pairs and a first group bound of 0.912 on split 0,
    where pairing by action class first gave 33,216 and 0.5."""
    train = load_mtl_aqa(MTL_AQA_DIR).train
    labels = np.array([r.execution_score for r in train])
    for rule, pairs, bound in (("difficulty", 67_562, 0.9118), ("class_then_difficulty", 33_216, 0.5)):
        keys = pairing_keys([r.action_class for r in train], [r.difficulty for r in train], rule)  # type: ignore[arg-type]
        deltas = within_group_deltas(labels, pair_groups(keys))
        groups = GroupBoundaries.from_deltas(deltas, 16, symmetric=True, score_range=30.0)
        assert len(deltas) == pairs and groups.groups[8][1] == pytest.approx(bound, abs=1e-4)
    sampler = PairSampler(pairing_keys([None] * len(train), [r.difficulty for r in train], "difficulty"), 0,
                          pair_singletons=True)
    assert len(sampler.queries) == len(train)  # the one dive of difficulty 1.5 pairs with itself, as in CoRe
    lone = next(i for i, r in enumerate(train) if r.difficulty == 1.5)
    assert sampler.partner(lone) == lone


# --- one training step against a hand-derived loss --------------------------------------------------


def _step_profile() -> TrainingProfile:
    """tiny-kinetics with 8-frame videos cut into 2 clips of 4 frames (so the clip average matters)."""
    base = PROFILES["tiny-kinetics"]
    return replace(base, preprocessing=replace(base.preprocessing, num_frames=8), clips=ClipProtocol.strided(8, 4, 4),
                   head=replace(base.head, hidden=8, depth=2))


def _hand_leaf(delta: float, groups: tuple[tuple[float, float], ...]) -> tuple[int, float]:
    """The reference's membership (``Group_helper.produce_label``) and in-group position, by hand."""
    for r, (low, high) in enumerate(groups):
        inside = (low <= delta < high) if delta >= 0 else (low < delta <= high)
        if inside:
            return r, (delta - low) / (high - low)
    raise AssertionError(delta)


def test_one_core_recipe_step_equals_the_hand_derived_loss() -> None:
    profile = _step_profile()
    torch.manual_seed(0)
    backbone = I3D(width=0.125)
    head = CoReHead(backbone.feature_dim, hidden=8, depth=2, label_scale=30.0, leaf_activation="identity")
    boundaries = GroupBoundaries(((-30.0, -1.0), (-1.0, 0.0), (0.0, 1.0), (1.0, 30.0)))
    step = PairStep("core", backbone, head, boundaries, profile, num_clips=2)
    generator = torch.Generator().manual_seed(3)
    query = torch.randint(0, 256, (3, 8, 32, 32, 3), dtype=torch.uint8, generator=generator)
    exemplar = torch.randint(0, 256, (3, 8, 32, 32, 3), dtype=torch.uint8, generator=generator)
    query_labels, exemplar_labels = torch.tensor([20.0, 21.0, 10.0]), torch.tensor([18.0, 19.0, 12.5])
    frozen_batchnorm_train(backbone, freeze_batchnorm=True)
    statistics = copy.deepcopy(_batchnorm_statistics(backbone.state_dict()))
    loss = step.loss(query, exemplar, query_labels, exemplar_labels, torch.autocast("cpu", enabled=False))

    with torch.no_grad():
        def feature(frames: torch.Tensor) -> torch.Tensor:  # CoRe: the mean of the 2 clip features
            video = profile.preprocessing.normalize(frames)  # (3, 8, 32, 32)
            return (backbone.forward_features(video[None, :, 0:4]) + backbone.forward_features(video[None, :, 4:8]))[0] / 2

        f_query = [feature(v) for v in query]
        f_exemplar = [feature(v) for v in exemplar]
        expected = 0.0
        # direction 1: the exemplar first, predicting s_query - s_exemplar; direction 2: the pair swapped
        for first, second, first_labels, second_labels in ((f_exemplar, f_query, exemplar_labels, query_labels),
                                                           (f_query, f_exemplar, query_labels, exemplar_labels)):
            x = torch.stack([torch.cat([a, b, (la / 30.0)[None]]) for a, b, la in zip(first, second, first_labels)])
            log_probs, leaves = head(x)
            nll, by_leaf = [], {}
            for i in range(3):
                r, sigma = _hand_leaf(float(second_labels[i] - first_labels[i]), boundaries.groups)
                nll.append(-float(log_probs[i, r]))
                by_leaf.setdefault(r, []).append((float(leaves[i, r]) - sigma) ** 2)  # raw leaf, no sigmoid
            expected += np.mean(nll) + sum(np.mean(errors) for errors in by_leaf.values())
    assert loss["total"].item() == pytest.approx(expected, rel=1e-5)
    assert loss["cls"].item() + loss["reg"].item() == pytest.approx(expected, rel=1e-5)
    loss["total"].backward()
    assert backbone.Conv3d_1a_7x7.conv3d.weight.grad.abs().sum() > 0  # end to end: the backbone gets gradients
    assert all(torch.equal(v, statistics[k]) for k, v in _batchnorm_statistics(backbone.state_dict()).items())


def test_optimiser_groups_follow_the_references() -> None:
    backbone = I3D(width=0.125)
    core = CoReHead(backbone.feature_dim, hidden=8, depth=2)
    kinetics = PROFILES["kinetics"]
    optimizer = _optimizer("core", backbone, core, kinetics, kinetics.end_to_end)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-4, 1e-3])
    assert all(g["weight_decay"] == 0.0 for g in optimizer.param_groups)
    tpt_profile = PROFILES["tiny-kinetics-tpt"]
    tpt = build_tpt_head(backbone.feature_dim, tpt_profile.tpt)
    optimizer = _optimizer("tpt", backbone, tpt, tpt_profile, tpt_profile.end_to_end)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-4, 1e-4, 1e-3])


# --- through `aqa train` ---------------------------------------------------------------------------


def test_aqa_train_kinetics_keeps_imported_batchnorm_statistics(tmp_path: Path) -> None:
    """The CoRe recipe on an MTL-AQA layout (--protocol core-mtl): BatchNorm statistics come out as imported
    (frozen, CoRe's fix_bn) while every other part of the backbone trained."""
    data = write_fake_mtl_aqa(tmp_path / "mtl")
    init = _imported_backbone(tmp_path / "kinetics")
    out = tmp_path / "model"
    assert main(["train", str(data), "--protocol", "core-mtl", "--profile", "tiny-kinetics", "--init-backbone",
                 str(init), "--out", str(out), "--cache", str(tmp_path / "cache"), "--device", "cpu"]) == 0
    imported, trained = load_file(str(init / BACKBONE_WEIGHTS)), load_file(str(out / BACKBONE_WEIGHTS))
    statistics = _batchnorm_statistics(imported)
    assert statistics and all(torch.equal(trained[k], v) for k, v in statistics.items())
    assert not torch.equal(trained["Conv3d_1a_7x7.conv3d.weight"], imported["Conv3d_1a_7x7.conv3d.weight"])
    assert not torch.equal(trained["Mixed_5c.b0.bn.bias"], imported["Mixed_5c.b0.bn.bias"])
    card = json.loads((out / "model_card.json").read_text())
    assert card["data"]["split"] == "core-mtl" and card["data"]["test"] == 3
    assert "never used" in card["training"]["epoch_selection"]
    assert card["training"]["end_to_end"]["device"] == "cpu"
    assert (out / "checkpoints" / LAST).is_file() and (out / "checkpoints" / BEST).is_file()
    history = json.loads((out / "report" / "training.json").read_text())["head_history"]
    assert [h["epoch"] for h in history] == [1, 2] and all("validation" in h for h in history)


def test_aqa_train_kinetics_tpt_trains_the_tpt_head_end_to_end(tmp_path: Path, tiny_dataset: Path) -> None:
    init = _imported_backbone(tmp_path / "kinetics")
    out = tmp_path / "model"
    assert main(["train", str(tiny_dataset), "--profile", "tiny-kinetics-tpt", "--init-backbone", str(init),
                 "--out", str(out), "--cache", str(tmp_path / "cache")]) == 0
    scorer = Scorer.from_dir(out)
    assert scorer.config.head == "tpt" and scorer.bank.clip_features.shape[1] == 16
    record = load_folder_csv(tiny_dataset / "labels.csv")[0]
    assert np.isfinite(scorer.score(record.video, QueryLabels(difficulty=record.difficulty)).score)
    trained, imported = load_file(str(out / BACKBONE_WEIGHTS)), load_file(str(init / BACKBONE_WEIGHTS))
    assert all(torch.equal(trained[k], v) for k, v in _batchnorm_statistics(imported).items())
    history = json.loads((out / "report" / "training.json").read_text())["head_history"]
    assert {"loss_cls", "loss_reg", "loss_rank", "loss_sparsity"} <= history[0].keys()


def test_aqa_train_refuses_what_cannot_work(tmp_path: Path, tiny_dataset: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / "m"), "--cache", str(tmp_path / "c")]
    assert main(["train", str(tiny_dataset), "--profile", "tiny-kinetics", *out]) == 1
    assert "--init-backbone" in capsys.readouterr().err
    init = _imported_backbone(tmp_path / "init")
    assert main(["train", str(tiny_dataset), "--profile", "tiny-kinetics", "--init-backbone", str(init), "--resume",
                 *out]) == 1
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["train", str(tiny_dataset), "--profile", "tiny", "--resume", *out]) == 1
    assert "no end-to-end training" in capsys.readouterr().err
    assert main(["train", str(tiny_dataset), "--profile", "tiny-kinetics", "--device", "cuda", *out]) == 1
    assert "CUDA" in capsys.readouterr().err


# --- fine-tuning and resuming ------------------------------------------------------------------------


class _Stop(Exception):
    pass


def _finetune(records: list, profile: TrainingProfile, folder: Path, init: Path, cache: Path, resume: bool = False,
              stop_at_epoch: int | None = None) -> tuple[I3D, nn.Module]:
    """finetune_pairs on 10 training and 4 validation dives; ``stop_at_epoch`` interrupts that epoch's validation."""
    backbone = I3D(width=profile.backbone_width)
    backbone.load_state_dict(load_file(str(init / BACKBONE_WEIGHTS)))
    validations = []

    def validate(head: nn.Module, boundaries: GroupBoundaries, train: torch.Tensor, val: torch.Tensor) -> float:
        validations.append(len(validations) + 1)  # after every epoch (eval_every = 1)
        if validations[-1] == stop_at_epoch:
            raise _Stop
        return float(val.mean() - train.mean())

    result = finetune_pairs(backbone, "core", records[:10], records[10:14], profile, 30.0, True,
                            folder / "checkpoints", cache, validate, torch.device("cpu"), resume=resume,
                            progress=False, recipe={"init": str(init)})
    return backbone, result.head


def _checkpoint_state(folder: Path) -> dict:
    with safe_open(str(folder / "checkpoints" / LAST), framework="pt") as handle:
        return json.loads(handle.metadata()["training_state"])


def _e2e_profile(epochs: int) -> TrainingProfile:
    base = PROFILES["tiny-kinetics"]
    return replace(base, head=replace(base.head, epochs=epochs), end_to_end=replace(base.end_to_end, cache_frames=True))


@pytest.fixture(scope="module")
def straight_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, I3D, nn.Module]:
    """Four uninterrupted epochs of the tiny CoRe recipe: (run folder, imported init, backbone, head)."""
    root = tmp_path_factory.mktemp("e2e")
    init = _imported_backbone(root / "init")
    records = load_folder_csv(tiny_dataset / "labels.csv")
    backbone, head = _finetune(records, _e2e_profile(epochs=4), root / "straight", init, root / "cache")
    return root, init, backbone, head


def test_resume_gives_the_weights_of_an_uninterrupted_run(tiny_dataset: Path, straight_run: tuple) -> None:
    root, init, straight_backbone, straight_head = straight_run
    records = load_folder_csv(tiny_dataset / "labels.csv")
    profile = _e2e_profile(epochs=4)
    with pytest.raises(_Stop):  # killed during epoch 2's validation: the checkpoint holds epoch 1
        _finetune(records, profile, root / "resumed", init, root / "cache", stop_at_epoch=2)
    assert _checkpoint_state(root / "resumed")["epoch"] == 1
    # resumed with 2 decoding processes instead of none: the worker count is not part of the recipe
    more_workers = replace(profile, end_to_end=replace(profile.end_to_end, workers=2))
    resumed_backbone, resumed_head = _finetune(records, more_workers, root / "resumed", init, root / "cache",
                                               resume=True)
    for straight, resumed in ((straight_backbone, resumed_backbone), (straight_head, resumed_head)):
        a, b = straight.state_dict(), resumed.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    last = {name: load_file(str(root / name / "checkpoints" / LAST)) for name in ("straight", "resumed")}
    assert all(torch.equal(v, last["resumed"][k]) for k, v in last["straight"].items())
    def losses(run: str) -> list[dict]:
        return [{k: v for k, v in h.items() if "seconds" not in k} for h in _checkpoint_state(root / run)["history"]]

    assert losses("resumed") == losses("straight")
    with pytest.raises(CheckpointError, match="another recipe"):
        _finetune(records, _e2e_profile(epochs=5), root / "resumed", init, root / "cache", resume=True)


def test_a_tiny_end_to_end_fine_tune_lowers_the_training_loss(straight_run: tuple) -> None:
    root, init, backbone, _ = straight_run
    losses = [h["loss_total"] for h in _checkpoint_state(root / "straight")["history"]]
    assert all(later < earlier for earlier, later in itertools.pairwise(losses)) and losses[-1] < 0.9 * losses[0], losses
    start, final = load_file(str(init / BACKBONE_WEIGHTS)), backbone.state_dict()
    assert not torch.equal(final["Mixed_4b.b1b.conv3d.weight"], start["Mixed_4b.b1b.conv3d.weight"])
    assert all(torch.equal(final[k], v) for k, v in _batchnorm_statistics(start).items())


def test_profiles_serialise_their_end_to_end_part() -> None:
    data = PROFILES["kinetics"].to_dict()
    assert data["end_to_end"] == asdict(PROFILES["kinetics"].end_to_end) and data["default_head"] == "core"
    assert PROFILES["cpu"].to_dict()["end_to_end"] is None
