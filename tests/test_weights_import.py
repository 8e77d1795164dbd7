"""Bring-your-own weights: piergiaj / hassony2 I3D checkpoints and official CoRe checkpoints.

Checkpoints are built here with the exact key names and shapes of the published files (random weights)
and written to disk. Expected outputs come from independent re-implementations: ``tests/reference_i3d.py``
for the two I3D ports, and the RegressTree forward / Group_helper rules of CoRe written below.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from models.clips import ClipProtocol
from models.heads import CoReScoringHead
from models.i3d import I3D
from models.model_dir import ModelConfig
from models.weights import WeightImportError, convert_i3d_state_dict, import_core_checkpoint, import_i3d
from models.weights.cli_commands import run_weights_import
from tests.i3d_layout import REFERENCE_NUM_PARAMETERS, REFERENCE_NUM_TENSORS, is_parameter, reference_layout
from tests.paths import MTL_AQA_DIR
from tests.reference_i3d import (
    hassony2_layout,
    hassony2_mixed_5c,
    logits,
    piergiaj_mixed_5c,
    port_features,
    random_checkpoint,
)
from training.core_import import run_core_import
from training.datasets import safe_pickle

TOLERANCE = 1e-4


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def load_backbone(weights: Path) -> I3D:
    model = I3D().eval()
    model.load_state_dict(load_file(str(weights)), strict=True)
    return model


def save_as_numpy1_would(obj: object, path: Path) -> None:
    """``torch.save``, with numpy scalars named as numpy 1.x pickles them (``numpy.core.multiarray``)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                assert b"numpy._core.multiarray\nscalar" in data
                data = data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
            dst.writestr(info.filename, data)


@pytest.fixture(scope="module")
def hassony2_state() -> dict[str, torch.Tensor]:
    return random_checkpoint(hassony2_layout(), seed=1)


@pytest.fixture(scope="module")
def piergiaj_state() -> dict[str, torch.Tensor]:
    return random_checkpoint(reference_layout(), seed=2)


@pytest.fixture(scope="module")
def hassony2_file(tmp_path_factory: pytest.TempPathFactory, hassony2_state) -> Path:
    """``model_rgb.pth`` as a DataParallel-trained copy would save it: wrapped, prefixed, with counters."""
    state = {f"module.{k}": v for k, v in hassony2_state.items()}
    state.update({f"module.{k.removesuffix('running_var')}num_batches_tracked": torch.tensor(5)
                  for k in hassony2_state if k.endswith("running_var")})  # fmt: skip
    path = tmp_path_factory.mktemp("hassony2") / "model_rgb.pth"
    torch.save({"state_dict": state}, path)
    return path


# ---------------------------------------------------------------- I3D layouts


def test_hassony2_layout_converts_to_exactly_ours(hassony2_state) -> None:
    layout = hassony2_layout()
    assert len(layout) == REFERENCE_NUM_TENSORS == 287
    parameters = sum(
        math.prod(s) for k, s in layout.items() if not k.endswith(("running_mean", "running_var"))
    )
    assert parameters == REFERENCE_NUM_PARAMETERS == 12_697_264
    converted = convert_i3d_state_dict(hassony2_state, "hassony2", source_bn_eps=1e-3)  # 1e-3: no folding
    assert {k: tuple(v.shape) for k, v in converted.items()} == reference_layout()
    assert list(converted) == list(reference_layout())
    assert torch.equal(
        converted["Mixed_4c.b1b.conv3d.weight"], hassony2_state["mixed_4c.branch_1.1.conv3d.weight"]
    )
    assert torch.equal(
        converted["Mixed_5b.b3b.bn.running_var"], hassony2_state["mixed_5b.branch_3.1.batch3d.running_var"]
    )
    assert torch.equal(converted["logits.conv3d.bias"], hassony2_state["conv3d_0c_1x1.conv3d.bias"])
    assert sum(v.numel() for k, v in converted.items() if is_parameter(k)) == 12_697_264


def test_hassony2_import_matches_the_port_on_a_224_clip(
    hassony2_file: Path, hassony2_state, tmp_path
) -> None:
    weights = import_i3d(hassony2_file, "hassony2", tmp_path)
    assert weights == tmp_path / "backbone.safetensors"
    record = json.loads((tmp_path / "backbone.json").read_text())
    assert record["source"] == {
        "file": "model_rgb.pth", "layout": "hassony2",
        "sha256": hashlib.sha256(hassony2_file.read_bytes()).hexdigest(),
    }  # fmt: skip
    assert record["batchnorm"] == {"source_eps": 1e-5, "eps": 1e-3, "folded_into_scale": True}
    assert record["input"]["normalization"] == "kinetics" and "imagenet" in record["input"]["note"].lower()
    assert (record["num_tensors"], record["num_parameters"]) == (287, 12_697_264)

    model = load_backbone(weights)
    clip = torch.rand(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        reference = port_features(hassony2_mixed_5c(hassony2_state, clip, bn_eps=1e-5))
        ours = model.forward_features(clip)
        assert max_abs(ours, reference) <= TOLERANCE
        assert reference.abs().max() > 0.1  # a real signal, not zeros
        ours_logits = model.logits(ours[:, :, None, None, None]).flatten(1)  # = model(clip) in eval mode
        assert max_abs(ours_logits, logits(hassony2_state, "conv3d_0c_1x1", reference)) <= TOLERANCE


def test_hassony2_padding_rule_and_batchnorm_eps_at_small_sizes(hassony2_state) -> None:
    """Our default padding equals the port's exactly when T % 4 == 0 and H, W % 16 == 0 (models/i3d.py);
    ``padding="static_same"`` equals it everywhere; the eps of the source must be folded in."""
    folded = convert_i3d_state_dict(hassony2_state, "hassony2")  # source eps 1e-5
    tf_same, static = I3D().eval(), I3D(padding="static_same").eval()
    tf_same.load_state_dict(folded)
    static.load_state_dict(folded)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t, h, w, agree in [(4, 32, 32, True), (4, 32, 48, True), (4, 40, 40, False), (6, 32, 32, False),
                               (5, 33, 47, False)]:  # fmt: skip
            clip = torch.rand(1, 3, t, h, w, generator=generator) * 2 - 1
            reference = hassony2_mixed_5c(hassony2_state, clip).mean(dim=(2, 3, 4))
            assert max_abs(static.forward_features(clip), reference) <= TOLERANCE, (t, h, w)
            assert (max_abs(tf_same.forward_features(clip), reference) <= TOLERANCE) == agree, (t, h, w)

        clip = torch.rand(1, 3, 8, 32, 32, generator=generator) * 2 - 1
        unfolded = I3D().eval()
        unfolded.load_state_dict(convert_i3d_state_dict(hassony2_state, "hassony2", source_bn_eps=1e-3))
        reference_1e5 = hassony2_mixed_5c(hassony2_state, clip, bn_eps=1e-5).mean(dim=(2, 3, 4))
        reference_1e3 = hassony2_mixed_5c(hassony2_state, clip, bn_eps=1e-3).mean(dim=(2, 3, 4))
        assert max_abs(unfolded.forward_features(clip), reference_1e5) > 100 * TOLERANCE  # the eps matters
        assert max_abs(unfolded.forward_features(clip), reference_1e3) <= TOLERANCE  # upstream port's eps
    with pytest.raises(ValueError, match="padding must be one of"):
        I3D(padding="same")


def test_piergiaj_import_is_unchanged_and_exact_at_any_size(piergiaj_state, tmp_path) -> None:
    source = tmp_path / "rgb_imagenet.pt"
    torch.save(piergiaj_state, source)
    out = tmp_path / "out"
    weights = import_i3d(source, "piergiaj", out)
    stored = load_file(str(weights))
    assert set(stored) == set(reference_layout())
    assert all(torch.equal(stored[k], piergiaj_state[k]) for k in stored)  # eps 1e-3 already ours: no folding
    assert json.loads((out / "backbone.json").read_text())["batchnorm"]["folded_into_scale"] is False
    model = load_backbone(weights)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for shape in [(1, 3, 8, 32, 32), (1, 3, 7, 35, 45)]:  # the second: odd sizes, uneven SAME pads
            clip = torch.rand(shape, generator=generator) * 2 - 1
            reference = piergiaj_mixed_5c(piergiaj_state, clip).mean(dim=(2, 3, 4))
            assert max_abs(model.forward_features(clip), reference) <= TOLERANCE, shape


def test_weights_import_command_summarises(hassony2_file: Path, tmp_path) -> None:
    summary = run_weights_import(hassony2_file, "hassony2", tmp_path / "bb")
    assert "287 tensors, 12,697,264 parameters" in summary
    assert "hassony2 layout" in summary and "eps 1e-05" in summary
    assert "T % 4 == 0 and H % 16 == 0 and W % 16 == 0" in summary
    assert (tmp_path / "bb" / "backbone.safetensors").is_file()
    with pytest.raises(WeightImportError, match="already holds backbone.safetensors"):
        run_weights_import(hassony2_file, "hassony2", tmp_path / "bb")


# ---------------------------------------------------------------- refusals and explanations


class RunsCode:
    """Unpickling this calls ``open(marker, "w")``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv3d_1a_7x7.conv3d.weight": RunsCode(marker)}}, path)
    with pytest.raises(WeightImportError, match=r"refused, it needs full unpickling.*\(it calls _?io\.open\)"):
        import_i3d(path, "hassony2", tmp_path / "out")
    with pytest.raises(WeightImportError, match="refused"):
        import_core_checkpoint(path, tmp_path / "model", [[-30, 0], [0, 30]])
    assert not marker.exists()
    assert not (tmp_path / "out" / "backbone.safetensors").exists()


def test_bad_files_and_keys_are_explained(hassony2_state, tmp_path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    with pytest.raises(WeightImportError, match="not a readable PyTorch checkpoint"):
        import_i3d(text, "piergiaj", tmp_path / "a")
    with pytest.raises(WeightImportError, match="no such file"):
        import_i3d(tmp_path / "missing.pt", "piergiaj", tmp_path / "a")
    with pytest.raises(WeightImportError, match="unknown I3D layout 'tf'"):
        import_i3d(text, "tf", tmp_path / "a")
    numbers = tmp_path / "numbers.pt"
    torch.save({"epoch": 3}, numbers)
    with pytest.raises(WeightImportError, match="these entries are not tensors: epoch"):
        import_i3d(numbers, "piergiaj", tmp_path / "a")

    with pytest.raises(WeightImportError, match="287 unexpected keys.*look like the 'hassony2' layout"):
        convert_i3d_state_dict(hassony2_state, "piergiaj")
    broken = dict(hassony2_state)
    del broken["mixed_5c.branch_3.1.batch3d.running_mean"]
    broken["mixed_3b.branch_0.conv3d.weight"] = torch.zeros(64, 192, 3, 3, 3)
    broken["mixed_3b.branch_3.0.conv3d.weight"] = torch.zeros(1)
    message = (
        r"1 unexpected keys \(mixed_3b.branch_3.0.conv3d.weight\); 1 missing keys "
        r"\(Mixed_5c.b3b.bn.running_mean\); 1 shape mismatches \(Mixed_3b.b0.conv3d.weight "
        r"\(64, 192, 3, 3, 3\) in the file, \(64, 192, 1, 1, 1\) expected\)"
    )
    with pytest.raises(WeightImportError, match=message):
        convert_i3d_state_dict(broken, "hassony2")


# ---------------------------------------------------------------- CoRe: reference rules (yuxumin/CoRe)


def regress_tree_layout(in_channel: int = 2049, hidden: int = 256, rt_depth: int = 5) -> dict[str, tuple]:
    """Key -> shape of ``RegressTree(in_channel, hidden, depth=rt_depth)`` (models/RegressTree.py)."""
    leaves = 2 ** (rt_depth - 1)
    layout = {"first_layer.0.weight": (hidden, in_channel), "first_layer.0.bias": (hidden,)}
    for d in range(rt_depth - 1):
        nodes = 2**d
        layout[f"feature_layers.{d}.0.weight"] = (2 * nodes * hidden, hidden, 1)
        layout[f"feature_layers.{d}.0.bias"] = (2 * nodes * hidden,)
        layout[f"clf_layers.{d}.weight"] = (2 * nodes, hidden, 1)
        layout[f"clf_layers.{d}.bias"] = (2 * nodes,)
    layout["reg_layer.weight"] = (leaves, hidden, 1)
    layout["reg_layer.bias"] = (leaves,)
    return layout


def reference_regress_tree(state: dict[str, torch.Tensor], x: torch.Tensor, rt_depth: int = 5):
    """RegressTree.forward: (list of per-level log-probabilities, raw leaf outputs ``delta``)."""
    x = F.relu(F.linear(x, state["first_layer.0.weight"], state["first_layer.0.bias"]))
    bs = x.shape[0]
    x = x.unsqueeze(-1)
    out_prob: list[torch.Tensor] = []
    for i in range(rt_depth - 1):
        prob = F.conv1d(
            x, state[f"clf_layers.{i}.weight"], state[f"clf_layers.{i}.bias"], groups=2**i
        ).squeeze(-1)
        x = F.relu(F.conv1d(x, state[f"feature_layers.{i}.0.weight"], state[f"feature_layers.{i}.0.bias"],
                            groups=2**i))  # fmt: skip
        prob = F.log_softmax(prob.view(bs, -1, 2), dim=-1)
        if out_prob:
            prob = out_prob[-1].view(bs, -1, 1).expand(bs, -1, 2) + prob
        out_prob.append(prob)
    leaves = 2 ** (rt_depth - 1)
    delta = F.conv1d(x, state["reg_layer.weight"], state["reg_layer.bias"], groups=leaves).squeeze(-1)
    return out_prob, delta


def reference_groups(deltas: list[float], rt_depth: int = 5, maximum: float = 30, minimum: float = 0) -> list:
    """Group_helper.build with Symmetrical=True."""
    data, length, leaves = sorted(deltas), len(deltas), 2 ** (rt_depth - 1)
    half = leaves // 2
    groups: list = [None] * leaves
    for i in range(half):
        left = minimum if i == 0 else data[int((i / half) * (length - 1))]
        right = maximum if i == half - 1 else data[int(((i + 1) / half) * (length - 1))]
        groups[half + i] = [left, right]
    for i in range(half):
        groups[i] = sorted(-v for v in groups[leaves - 1 - i])
    return groups


def reference_inference(groups: list, leaf_log_probs: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Group_helper.inference: argmax leaf, then left + (right - left) * raw delta (left + delta if equal)."""
    predictions = []
    for prob, delta in zip(leaf_log_probs, deltas):
        leaf = prob.argmax()
        left, right = groups[leaf]
        predictions.append(left + delta[leaf] if left == right else left + (right - left) * delta[leaf])
    return np.array(predictions)


def reference_mtl_deltas(info: Path) -> list[float]:
    """MTLPair_Dataset.delta() with usingDD and difficulty grouping, on the raw annotation pickles."""
    labels = safe_pickle.load(info / "final_annotations_dict_with_dive_number.pkl")
    by_difficulty: dict = {}
    for item in safe_pickle.load(info / "train_split_0.pkl"):
        by_difficulty.setdefault(labels[item]["difficulty"], []).append(item)
    deltas = []
    for items in by_difficulty.values():
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                a, b = labels[items[i]], labels[items[j]]
                deltas.append(abs(a["final_score"] / a["difficulty"] - b["final_score"] / b["difficulty"]))
    return deltas


@pytest.fixture(scope="module")
def mtl_groups() -> list:
    return reference_groups(reference_mtl_deltas(MTL_AQA_DIR))


@pytest.fixture(scope="module")
def core_parts() -> dict:
    """The state dicts inside the fake official checkpoint (without prefixes)."""
    generator = torch.Generator().manual_seed(4)
    regressor = {}
    for key, shape in regress_tree_layout().items():
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        regressor[key] = torch.randn(shape, generator=generator) * (
            1.0 / math.sqrt(fan_in) if len(shape) > 1 else 0.1
        )
    regressor["clf_layers.3.weight"] *= 8  # decisive leaves, so the argmax differs between pairs
    return {"backbone": random_checkpoint(hassony2_layout(), seed=3), "regressor": regressor}


@pytest.fixture(scope="module")
def core_file(tmp_path_factory: pytest.TempPathFactory, core_parts) -> Path:
    """An official-looking CoRe ``best.pth``: DataParallel prefixes, Adam state, numpy-1.x float scalars."""
    base = {f"module.backbone.{k}": v for k, v in core_parts["backbone"].items()}
    base.update({f"module.backbone.{k.removesuffix('running_var')}num_batches_tracked": torch.tensor(126000)
                 for k in core_parts["backbone"] if k.endswith("running_var")})  # fmt: skip
    group = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False, "maximize": False}
    checkpoint = {
        "base_model": base,
        "regressor": {f"module.{k}": v for k, v in core_parts["regressor"].items()},
        "optimizer": {
            "state": {
                0: {"step": torch.tensor(52000.0), "exp_avg": torch.randn(64), "exp_avg_sq": torch.rand(64)},
                1: {"step": torch.tensor(52000.0), "exp_avg": torch.randn(8), "exp_avg_sq": torch.rand(8)},
            },
            "param_groups": [{**group, "lr": 1e-4, "params": [0]}, {**group, "lr": 1e-3, "params": [1]}],
        },
        "epoch": 199,
        "epoch_best": 143,
        "rho_best": np.float64(0.9512),
        "L2_min": np.float64(65.3),
        "RL2_min": np.float64(0.0026),
    }
    path = tmp_path_factory.mktemp("core") / "best.pth"
    save_as_numpy1_would(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def core_model_dir(tmp_path_factory: pytest.TempPathFactory, core_file: Path, mtl_groups) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("models") / "core"
    return out, run_core_import(core_file, out, MTL_AQA_DIR)


def test_core_import_writes_the_model_directory(core_model_dir, mtl_groups) -> None:
    out, summary = core_model_dir
    assert sorted(p.name for p in out.iterdir()) == [
        "backbone.json",
        "backbone.safetensors",
        "config.json",
        "core_checkpoint.json",
        "head.safetensors",
    ]
    config = ModelConfig.load(out)
    assert config.head == "core" and config.labels.kind == "execution" and config.labels.scale == 30
    assert config.preprocessing == {
        "num_frames": 103,
        "resize": 256,
        "crop": 224,
        "normalization": "imagenet",
        "sampling": "window_end",
        "stretch_to": [256, 455],
    }
    assert config.backbone.padding == "static_same"
    assert config.clip_protocol == ClipProtocol.core_mtl()
    assert (config.voting.num_exemplars, config.voting.strategy) == (10, "random")
    assert {k: config.head_config[k] for k in ("hidden", "depth", "leaf_activation")} == {
        "hidden": 256,
        "depth": 4,
        "leaf_activation": "identity",
    }
    assert config.head_config["boundaries"] == mtl_groups  # Group_helper on the real MTL-AQA training split
    record = json.loads((out / "core_checkpoint.json").read_text())
    assert record["checkpoint"] == {"epoch": 199, "epoch_best": 143, "rho_best": 0.9512, "L2_min": 65.3,
                                    "RL2_min": 0.0026}  # fmt: skip
    assert json.loads((out / "backbone.json").read_text())["input"]["normalization"] == "imagenet"
    pairs = len(reference_mtl_deltas(MTL_AQA_DIR))
    assert f"{pairs:,} same-difficulty pairs of 1059 training dives" in summary
    assert "rho_best 0.9512" in summary and "aqa bank build" in summary


def test_core_pair_predictions_and_voting_match_the_reference(core_model_dir, core_parts, mtl_groups) -> None:
    out, _ = core_model_dir
    config = ModelConfig.load(out)
    head = CoReScoringHead.from_config(config.backbone.feature_dim, config.labels.scale, config.head_config,
                                       load_file(str(out / "head.safetensors")))  # fmt: skip
    generator = torch.Generator().manual_seed(5)
    # Non-negative like I3D's ReLU features; each video its own per-channel scale, so pairs differ.
    query_clips = torch.rand(10, 1024, generator=generator) * 2 * torch.rand(1, 1024, generator=generator)
    exemplar_clips = (
        torch.rand(10, 10, 1024, generator=generator) * 2 * torch.rand(10, 1, 1024, generator=generator)
    )
    exemplar_labels = 6 + 3 * torch.rand(10, generator=generator)  # execution scores
    difficulty = 3.2
    votes = head.vote(query_clips, exemplar_clips, exemplar_labels)
    ours_score = votes.votes.double().mean().item() * difficulty

    # Reference (tools/helper.py network_forward_test): clip features averaged (Backbone.forward), pair =
    # cat(exemplar, query, label / 30), tree, Group_helper.inference, score = mean_m (rel_m + label_m) * diff.
    query = query_clips.mean(0, keepdim=True)
    pairs = torch.cat([exemplar_clips.mean(1), query.expand(10, -1), exemplar_labels[:, None] / 30], dim=1)
    out_prob, delta = reference_regress_tree(core_parts["regressor"], pairs)
    relative = reference_inference(mtl_groups, out_prob[-1].reshape(10, -1).numpy(), delta.numpy())
    reference_score = float(np.mean((relative + exemplar_labels.numpy()) * difficulty))

    assert len({votes.per_exemplar_evidence[m]["leaf"] for m in range(10)}) > 1  # several leaves in use
    assert np.abs(votes.relative.numpy() - relative).max() <= TOLERANCE
    assert abs(ours_score - reference_score) <= TOLERANCE


def test_core_backbone_reproduces_cores_clip_features(core_model_dir, core_parts) -> None:
    """CoRe's Backbone.forward: 10 clips of 16 frames at 0, 10, ..., 80, 86, averaged. Small frames here,
    so the features are Mixed_5c's mean (CoRe's AvgPool3d((2, 7, 7)) is that mean for 224 x 224 clips)."""
    out, _ = core_model_dir
    model = load_backbone(out / "backbone.safetensors")
    video = (torch.rand(3, 103, 32, 32, generator=torch.Generator().manual_seed(6)) - 0.45) / 0.225
    with torch.no_grad():
        ours = model.extract_clip_features(video, ClipProtocol.core_mtl(), check_range=False)[0].mean(0)
        pack = torch.stack([video[:, s : s + 16] for s in (0, 10, 20, 30, 40, 50, 60, 70, 80, 86)])
        reference = hassony2_mixed_5c(core_parts["backbone"], pack, bn_eps=1e-5).mean(dim=(2, 3, 4)).mean(0)
    assert max_abs(ours, reference) <= TOLERANCE and reference.abs().max() > 0.1


def test_bad_core_checkpoints_are_explained(core_parts, core_file: Path, tmp_path) -> None:
    tiny_base = {"module.backbone.conv3d_1a_7x7.conv3d.weight": torch.zeros(1)}
    regressor = {f"module.{k}": v for k, v in core_parts["regressor"].items()}
    no_regressor = tmp_path / "no_regressor.pth"
    torch.save({"base_model": tiny_base}, no_regressor)
    with pytest.raises(WeightImportError, match="no 'regressor' entry"):
        import_core_checkpoint(no_regressor, tmp_path / "a", [[-30, 0], [0, 30]])
    bad_backbone = tmp_path / "bad_backbone.pth"
    torch.save({"base_model": tiny_base, "regressor": regressor}, bad_backbone)
    sixteen = [[float(i), float(i + 1)] for i in range(-8, 8)]
    with pytest.raises(WeightImportError, match=r"\[base_model\].*286 missing keys"):
        import_core_checkpoint(bad_backbone, tmp_path / "b", sixteen)
    with pytest.raises(WeightImportError, match="2 group boundaries given; the tree has 16 leaves"):
        import_core_checkpoint(bad_backbone, tmp_path / "c", [[-30, 0], [0, 30]])
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "config.json").write_text("{}")
    with pytest.raises(WeightImportError, match="not an empty folder"):
        import_core_checkpoint(core_file, tmp_path / "used", sixteen)
