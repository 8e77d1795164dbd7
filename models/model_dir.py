"""A deployable model directory and its configuration.

Layout::

    config.json            ModelConfig (architecture, preprocessing, clip protocol, labels, head, voting)
    backbone.safetensors   backbone weights (I3D, piergiaj key layout)
    head.safetensors       head weights
    bank/                  the exemplar bank made with this backbone (see exemplar_bank.bank)
    familiarity.json       how far from the bank training-style dives lie, and the training videos' formats
                           (see exemplar_bank.familiarity; optional: without it results carry no familiarity)
    model_card.json        data, metrics, config and git commit that produced the weights
    MODEL_CARD.md          the same, for people

The feature fingerprint (backbone weights + preprocessing + clip protocol) is computed when the model is
loaded and must equal the bank's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field, ValidationError

from exemplar_bank.familiarity import FAMILIARITY_FILE
from models.clips import ClipProtocol
from video.preprocessing import Preprocessing

CONFIG = "config.json"
BACKBONE_WEIGHTS = "backbone.safetensors"
HEAD_WEIGHTS = "head.safetensors"
BANK_DIR = "bank"
FAMILIARITY = FAMILIARITY_FILE
MODEL_CARD_JSON = "model_card.json"
MODEL_CARD_MD = "MODEL_CARD.md"


class ModelDirError(Exception):
    """A model directory is missing files or holds an invalid configuration."""


class BackboneConfig(BaseModel):
    arch: Literal["i3d"] = "i3d"
    width: float = Field(1.0, description="Channel multiplier; 1.0 is the standard Kinetics I3D.")
    feature_dim: int = 1024
    padding: Literal["tf_same", "static_same"] = Field(
        "tf_same", description="SAME padding arithmetic: 'static_same' reproduces the hassony2 port (CoRe, TPT)."
    )


class LabelConfig(BaseModel):
    """What the head regresses.

    ``execution``: final score / difficulty (CoRe on MTL-AQA); the query's difficulty multiplies the
    voted result. ``final``: the final score itself. ``scale`` is the normaliser eps of the exemplar
    label appended to the pair feature (label / eps in [0, 1]).
    """

    kind: Literal["execution", "final"] = "execution"
    scale: float = 30.0
    final_score_range: tuple[float, float] = Field(
        (0.0, 104.5), description="Min and max final score, for relative L2 (R-l2)."
    )


class VotingConfig(BaseModel):
    num_exemplars: int = 10
    strategy: Literal["nearest", "random"] = "nearest"


class CalibrationConfig(BaseModel):
    """Split-conformal 90% interval: the ceil((n+1) * 0.9)-th smallest held-out |residual| (label units)."""

    abs_residual_q90: float
    num_residuals: int
    measured_coverage: float | None = None


class ModelConfig(BaseModel):
    format_version: Literal[1] = 1
    model_id: str
    version: str
    head: Literal["core", "tpt", "pcln"] = "core"
    backbone: BackboneConfig
    preprocessing: dict[str, Any]
    clips: dict[str, Any]
    labels: LabelConfig
    head_config: dict[str, Any]
    voting: VotingConfig = VotingConfig()
    calibration: CalibrationConfig | None = None
    alignment_evidence: bool = Field(
        False, description="Report the hard DTW path between the query's clips and the nearest exemplar's (set "
        "for backbones from LAV pretraining)."
    )

    @property
    def preprocessing_obj(self) -> Preprocessing:
        return Preprocessing.from_dict(self.preprocessing)

    @property
    def clip_protocol(self) -> ClipProtocol:
        return ClipProtocol.from_dict(self.clips)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> ModelConfig:
        path = Path(folder) / CONFIG
        if not path.is_file():
            raise ModelDirError(f"{folder} is not a model directory: {CONFIG} is missing")
        try:
            return cls.model_validate_json(path.read_text())
        except ValidationError as exc:
            raise ModelDirError(f"{path} is not a valid model configuration:\n{exc}") from exc


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a ``.partial`` file renamed over it: readers never see half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


def feature_fingerprint(
    backbone_state: dict[str, torch.Tensor], backbone: BackboneConfig, preprocessing: Preprocessing,
    clips: ClipProtocol,
) -> str:
    """sha256 (first 16 hex digits) of the backbone weights, architecture, preprocessing and clips.

    Two models share a fingerprint exactly when they turn the same video into the same features.
    """
    digest = hashlib.sha256()
    recipe = {"backbone": backbone.model_dump(), "preprocessing": preprocessing.to_dict(), "clips": clips.to_dict()}
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    for key in sorted(backbone_state):
        tensor = backbone_state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.float().numpy().tobytes())
    return digest.hexdigest()[:16]
