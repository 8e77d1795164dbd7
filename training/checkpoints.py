"""Training checkpoints: everything a run needs to continue where it stopped, in safetensors.

``last.safetensors`` (written after every epoch) holds the modules' weights and the optimiser's state
tensors; its metadata holds, as JSON, the epoch, the optimiser's scalar state and parameter groups, the loss
scaler's state, the history and the best validation so far. ``best.safetensors`` holds the modules' weights
at the best validated epoch. Files are written to a temporary name and renamed, so a run killed while
writing leaves the previous checkpoint whole. Resuming loads both and continues with the next epoch;
the epoch's pairs, augmentations and dropout are seeded by the epoch number, so a resumed run computes what
an uninterrupted one does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

LAST = "last.safetensors"
BEST = "best.safetensors"
_STATE_KEY = "training_state"


class CheckpointError(ValueError):
    """A checkpoint folder cannot be resumed from; the message says why."""


@dataclass
class TrainingState:
    """The scalars of a checkpoint: the last finished epoch, per-epoch history and the best validation."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float | None = None
    best_epoch: int = 0
    recipe: dict[str, Any] = field(default_factory=dict)


def _module_tensors(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": value.detach().cpu().contiguous()
            for name, module in modules.items() for key, value in module.state_dict().items()}


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser's state dict into its tensors and a JSON-ready rest."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(folder: Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None, state: TrainingState) -> Path:
    """Write ``folder/last.safetensors`` for the epoch ``state.epoch`` just finished."""
    folder.mkdir(parents=True, exist_ok=True)
    optimizer_tensors, optimizer_rest = _optimizer_tensors(optimizer)
    metadata = {
        "epoch": state.epoch, "history": state.history, "best_score": state.best_score,
        "best_epoch": state.best_epoch, "recipe": state.recipe, "optimizer": optimizer_rest,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
    }
    return _write(folder / LAST, {**_module_tensors(modules), **optimizer_tensors}, metadata)


def save_best(folder: Path, modules: dict[str, nn.Module], epoch: int, score: float) -> Path:
    """Write ``folder/best.safetensors``: the modules' weights at the best validated epoch."""
    folder.mkdir(parents=True, exist_ok=True)
    return _write(folder / BEST, _module_tensors(modules), {"epoch": epoch, "score": score})


def _write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    partial = path.with_suffix(".partial")
    save_file(tensors, str(partial), metadata={_STATE_KEY: json.dumps(metadata)})
    partial.replace(path)
    return path


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = json.loads((handle.metadata() or {})[_STATE_KEY])
        return load_file(str(path)), metadata
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a training checkpoint written by this code: {exc}") from exc


def _load_modules(tensors: dict[str, torch.Tensor], modules: dict[str, nn.Module], path: Path) -> None:
    for name, module in modules.items():
        prefix = f"{name}."
        weights = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
        try:
            module.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: the {name} weights do not fit this run's model: {exc}") from exc


def load_checkpoint(folder: Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None, recipe: dict[str, Any]) -> TrainingState:
    """Restore the modules, optimiser and scaler from ``folder/last.safetensors``; return its state.

    ``recipe`` is the run's training recipe (profile and data identity): a checkpoint made with another recipe
    is refused, since continuing it would mix two trainings.
    """
    path = folder / LAST
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} does not exist (train without --resume to start)")
    tensors, metadata = _read(path)
    recipe = json.loads(json.dumps(recipe))  # as stored: tuples become lists
    if metadata["recipe"] != recipe:
        changed = sorted(k for k in set(recipe) | set(metadata["recipe"]) if recipe.get(k) != metadata["recipe"].get(k))
        raise CheckpointError(f"{path} was made by another recipe (differs in: {', '.join(changed)}); "
                              "resume with the same profile, data and seed, or train into a new --out")
    _load_modules(tensors, modules, path)
    optimizer_state: dict[str, Any] = {"state": {}, "param_groups": metadata["optimizer"]["param_groups"]}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, param_id, name = key.split(".", 2)
            optimizer_state["state"].setdefault(int(param_id), {})[name] = value
    for param_id, values in metadata["optimizer"]["scalars"].items():
        optimizer_state["state"].setdefault(int(param_id), {}).update(values)
    optimizer.load_state_dict(optimizer_state)
    if scaler is not None and metadata["scaler"] is not None:
        scaler.load_state_dict(metadata["scaler"])
    return TrainingState(epoch=metadata["epoch"], history=metadata["history"], best_score=metadata["best_score"],
                         best_epoch=metadata["best_epoch"], recipe=metadata["recipe"])


def load_best(folder: Path, modules: dict[str, nn.Module]) -> int:
    """Load ``folder/best.safetensors`` into the modules; return its epoch (0 when there is none)."""
    path = folder / BEST
    if not path.is_file():
        return 0
    tensors, metadata = _read(path)
    _load_modules(tensors, modules, path)
    return int(metadata["epoch"])
