"""Turn an official CoRe checkpoint (Yu et al., ICCV 2021; github.com/yuxumin/CoRe) into a model directory.

The checkpoint (``tools/helper.py`` ``save_checkpoint``, read back by ``tools/builder.py``
``load_model``) is a dict::

    base_model   I3D_backbone state dict: "module.backbone." + hassony2 I3D keys (+ BatchNorm counters)
    regressor    RegressTree state dict: "module." + first_layer.0.*, feature_layers.{i}.0.*,
                 clf_layers.{i}.*, reg_layer.* (reg_layer.weight (16, 256, 1) for RT_depth 5)
    optimizer    the Adam state dict (not used)
    epoch, epoch_best, rho_best, L2_min, RL2_min    numbers, kept as provenance in core_checkpoint.json

The directory written (``models/model_dir.py``) holds:

* ``backbone.safetensors``: hassony2 -> our layout, with the BatchNorm eps 1e-5 of CoRe's I3D copy folded
  into the scales (``models/weights/i3d_import.py``). The config builds it with ``padding="static_same"``,
  the copy's own padding arithmetic (equal to our default for CoRe's 16 x 224 x 224 clips, and still
  the copy's at any other input size).
* ``head.safetensors``: :class:`CoReHead` with the reference's dimensions read from the tensors (1024-d
  features, hidden 256, 16 leaves = ``depth`` 4, i.e. reference ``RT_depth`` 5), label scale 30 and
  ``leaf_activation="identity"``: the reference decodes the raw leaf output,
  ``delta = min + (max - min) * leaf`` (``utils/Group_helper.py`` ``inference``).
* ``config.json``: labels ``execution`` (final / difficulty) with scale 30, the query's difficulty
  multiplying the voted execution score; 10 exemplars chosen at random among same-difficulty ones (the
  reference test protocol); clips :meth:`ClipProtocol.core_mtl`; CoRe's input (:data:`CORE_PREPROCESSING`):
  the 103 consecutive frames ending at the dive's last frame, stretched to 256 wide x 455 tall,
  centre-cropped to 224 at CoRe's offsets, ImageNet mean/std.
* ``backbone.json`` and ``core_checkpoint.json``: provenance and the differences listed below.

Not in the checkpoint: the group boundaries. CoRe rebuilds them at test time from its training set
(``build_group``: |final/difficulty| differences of same-difficulty training pairs, symmetric, Min 0,
Max 30), so the caller passes them (``training/core_import.py`` computes them from MTL-AQA annotations).
The exemplar bank is not built here either: it needs the user's MTL-AQA videos (``aqa bank build``).

Input: what CoRe's test transform does, and what remains (recorded in core_checkpoint.json).

* Spatial. CoRe's frames are JPEGs scaled by ffmpeg to height 256 (455 x 256 for MTL-AQA's 16:9 video);
  its test transform is torchvideotransforms ``Resize((455, 256))`` then ``CenterCrop(224)``.
  ``resize_clip`` swaps the pair before PIL's ``resize((width, height))``, so the frames become 256
  wide and 455 tall, and ``CenterCrop`` offsets the crop by ``round((455 - 224) / 2) = 116`` rows.
  ``stretch_to=(256, 455)`` does exactly that. The resampling filter depends on the library's
  version: ``Resize``'s default ``'nearest'`` meant PIL bilinear in the versions read for this importer
  (hassony2/torch_videovision at 1b46232, and the copy vendored by baiyang4/aqa_tpt), and PIL nearest
  after a later fix; the config says ``"bilinear"`` (edit ``stretch_filter`` for the other).
* Temporal. CoRe reads the 103 consecutive frames ending at the annotated ``end_frame``
  (``sampling="window_end"``); ``training/protocols.py`` gives each MTL-AQA record the frame range that
  makes this window CoRe's. Scoring a trimmed clip reads its last 103 frames.
* Video files are decoded to RGB by FFmpeg rather than read from CoRe's JPEGs, so pixels differ by the
  JPEG round trip unless the frames folders are used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from models.clips import ClipProtocol
from models.core import CoReHead
from models.file_hash import file_sha256
from models.gart import GroupBoundaries
from models.model_dir import HEAD_WEIGHTS, BackboneConfig, LabelConfig, ModelConfig, VotingConfig
from models.weights.i3d_import import (
    INPUT_NOTES,
    WeightImportError,
    backbone_record,
    convert_i3d_state_dict,
    find_state_dict,
    load_checkpoint,
    strip_prefix,
    write_backbone,
)
from video.preprocessing import Preprocessing

CORE_CHECKPOINT_RECORD = "core_checkpoint.json"
CORE_BN_EPS = 1e-5  # CoRe's models/i3d.py builds BatchNorm3d(c)
CORE_LABEL_SCALE = 30.0  # MTL-AQA "score_range" (theta in the pair feature, Max of the groups)
CORE_NUM_EXEMPLARS = 10  # "voter_number"
CORE_PREPROCESSING = Preprocessing(
    num_frames=103, resize=256, crop=224, normalization="imagenet", sampling="window_end", stretch_to=(256, 455)
)
SCALARS = ("epoch", "epoch_best", "rho_best", "L2_min", "RL2_min")

PREPROCESSING_NOTES = {
    "spatial": (
        "CoRe: torchvideotransforms Resize((455, 256)) + CenterCrop(224) on its JPEG frames; resize_clip swaps "
        "the pair, so frames are stretched to 256 wide x 455 tall and cropped at row offset 116. Here: the same "
        "stretch and offsets with Pillow (stretch_filter 'bilinear', the PIL filter that Resize's default "
        "'nearest' selected in the library versions read; a later fix made it PIL nearest)."
    ),
    "temporal": (
        "CoRe: the 103 consecutive frames ending at the annotated end_frame. Here: sampling 'window_end', the 103 "
        "frames ending at the range's last frame (training/protocols.py sets MTL-AQA ranges to CoRe's window)."
    ),
    "normalization": "ImageNet mean/std on [0, 1] RGB, as CoRe's test transform.",
    "decoding": "Video files are decoded by FFmpeg; CoRe read ffmpeg-extracted JPEGs. Frame folders give its pixels.",
}


def _section(checkpoint: Mapping[str, Any], name: str, source: str) -> dict[str, torch.Tensor]:
    if name not in checkpoint:
        raise WeightImportError(
            f"{source}: not a CoRe checkpoint: no {name!r} entry (found {', '.join(map(str, checkpoint))})"
        )
    return strip_prefix(find_state_dict(checkpoint[name], f"{source} [{name}]"), "module.")


def _head_from_regressor(state: dict[str, torch.Tensor], feature_dim: int, source: str) -> CoReHead:
    """A CoReHead holding the RegressTree weights, its sizes read from the tensors."""
    first, leaves = state.get("first_layer.0.weight"), state.get("reg_layer.weight")
    if first is None or leaves is None or first.dim() != 2 or leaves.dim() != 3:
        raise WeightImportError(
            f"{source} [regressor]: not a CoRe RegressTree (first_layer.0 / reg_layer missing)"
        )
    hidden, in_features = first.shape
    num_leaves = leaves.shape[0]
    if in_features != 2 * feature_dim + 1:
        raise WeightImportError(
            f"{source} [regressor]: first layer takes {in_features} inputs; a {feature_dim}-d backbone "
            f"gives pairs of {2 * feature_dim + 1}"
        )
    depth = int(math.log2(num_leaves)) if num_leaves > 1 else 0
    if depth < 1 or 2**depth != num_leaves:
        raise WeightImportError(f"{source} [regressor]: {num_leaves} leaves is not a power of two >= 2")
    head = CoReHead(feature_dim, hidden, depth, CORE_LABEL_SCALE, leaf_activation="identity")
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightImportError(f"{source} [regressor]: does not match a RegressTree ({exc})") from None
    return head


def _plain_number(value: object) -> float | int | None:
    """An int or float from a Python, numpy or one-element tensor number; None for anything else."""
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else None
    elif isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, (int, float)) else None


def import_core_checkpoint(
    file: str | Path,
    out_dir: str | Path,
    boundaries: GroupBoundaries | Sequence[Sequence[float]],
    *,
    model_id: str = "core-mtl-aqa",
    version: str = "imported",
) -> Path:
    """Write a CoRe model directory (without bank) from an official checkpoint; returns ``out_dir``.

    ``boundaries``: the 16 groups ``[[min, max], ...]`` from the training deltas (see module docstring).
    Refuses a non-empty ``out_dir``. Raises :class:`WeightImportError` for anything it cannot use.
    """
    path, out_dir = Path(file), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise WeightImportError(f"{out_dir} exists and is not an empty folder; choose a new model directory")
    groups = boundaries if isinstance(boundaries, GroupBoundaries) else GroupBoundaries.from_list(boundaries)

    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, Mapping):
        raise WeightImportError(
            f"{path.name}: not a CoRe checkpoint (a dict with 'base_model' and 'regressor')"
        )
    base = strip_prefix(_section(checkpoint, "base_model", path.name), "backbone.")
    backbone_config = BackboneConfig(width=1.0, feature_dim=1024, padding="static_same")
    head = _head_from_regressor(
        _section(checkpoint, "regressor", path.name), backbone_config.feature_dim, path.name
    )
    if groups.num_groups != head.num_leaves:
        raise WeightImportError(
            f"{groups.num_groups} group boundaries given; the tree has {head.num_leaves} leaves"
        )
    try:
        backbone = convert_i3d_state_dict(base, "hassony2", CORE_BN_EPS)
    except WeightImportError as exc:
        raise WeightImportError(f"{path.name} [base_model]: {exc}") from None

    sha256 = file_sha256(path)
    input_note = (
        INPUT_NOTES["hassony2"] + " This backbone was fine-tuned by CoRe on ImageNet-normalised input."
    )
    write_backbone(
        out_dir, backbone, backbone_record("hassony2", path, sha256, CORE_BN_EPS, "imagenet", input_note)
    )
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(out_dir / HEAD_WEIGHTS))
    ModelConfig(
        model_id=model_id,
        version=version,
        head="core",
        backbone=backbone_config,
        preprocessing=CORE_PREPROCESSING.to_dict(),
        clips=ClipProtocol.core_mtl().to_dict(),
        labels=LabelConfig(kind="execution", scale=CORE_LABEL_SCALE),
        head_config={
            "hidden": head.hidden,
            "depth": head.depth,
            "leaf_activation": head.leaf_activation,
            "boundaries": groups.to_list(),
        },
        voting=VotingConfig(num_exemplars=CORE_NUM_EXEMPLARS, strategy="random"),
    ).save(out_dir)
    record = {
        "source": {"file": path.name, "sha256": sha256},
        "checkpoint": {name: _plain_number(checkpoint.get(name)) for name in SCALARS},
        "head": {"reference": "RegressTree", "rt_depth": head.depth + 1, "leaf_activation": "identity"},
        "preprocessing_differences": PREPROCESSING_NOTES,
        "bank": "not built: it needs your MTL-AQA videos (aqa bank build)",
    }
    (out_dir / CORE_CHECKPOINT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return out_dir
