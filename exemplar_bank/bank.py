"""The exemplar bank's versioned on-disk format.

A bank is a folder::

    manifest.json        format version, feature fingerprint, feature shape, creation info
    exemplars.jsonl      one JSON row of metadata per exemplar, in feature-row order
    features.safetensors "clip_features": float16 (N, num_clips, D)

Features are stored per clip so heads that attend over time (TPT) and heads that pool (CoRe) share one
bank. ``fingerprint`` names the backbone weights + preprocessing + clip protocol that made the
features; loading a bank for a model with another fingerprint raises :class:`BankMismatchError`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ROWS = "exemplars.jsonl"
FEATURES = "features.safetensors"


class BankError(Exception):
    """A bank cannot be read or used; the message says why."""


class BankMismatchError(BankError):
    """The bank's features were made by another backbone or preprocessing than the model's."""


@dataclass(frozen=True)
class Exemplar:
    """Metadata of one exemplar: a labelled dive whose features are in the bank."""

    id: str
    final_score: float
    difficulty: float | None = None
    action_class: str | None = None
    judge_scores: list[float] | None = None
    video_sha256: str | None = None
    source: str | None = None

    @property
    def execution_score(self) -> float | None:
        return self.final_score / self.difficulty if self.difficulty else None

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Exemplar:
        known = {k: row[k] for k in cls.__dataclass_fields__ if k in row}
        return cls(**known)


@dataclass
class ExemplarBank:
    """Exemplar metadata with their per-clip features, row-aligned."""

    exemplars: list[Exemplar]
    clip_features: torch.Tensor  # float32 (N, num_clips, D)
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)
    _pooled: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.clip_features.dim() != 3:
            raise BankError(f"clip_features must be (N, clips, D), got {tuple(self.clip_features.shape)}")
        if len(self.exemplars) != self.clip_features.shape[0]:
            raise BankError(
                f"{len(self.exemplars)} metadata rows but {self.clip_features.shape[0]} feature rows"
            )
        ids = [e.id for e in self.exemplars]
        if len(set(ids)) != len(ids):
            raise BankError("exemplar ids must be unique")
        self.clip_features = self.clip_features.float()

    def __len__(self) -> int:
        return len(self.exemplars)

    @property
    def pooled_features(self) -> torch.Tensor:
        """(N, D) clip-averaged features, as CoRe uses them; computed once."""
        if self._pooled is None:
            self._pooled = self.clip_features.mean(dim=1)
        return self._pooled

    def check_fingerprint(self, expected: str) -> None:
        if self.fingerprint != expected:
            raise BankMismatchError(
                f"this exemplar bank was made by another model (bank features fingerprint "
                f"{self.fingerprint}, model fingerprint {expected}); rebuild it with `aqa bank build` "
                "using this model's backbone and preprocessing"
            )

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "num_exemplars": len(self),
            "num_clips": int(self.clip_features.shape[1]),
            "feature_dim": int(self.clip_features.shape[2]),
            "feature_dtype": "float16",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **{k: v for k, v in self.info.items() if k not in ("format_version", "fingerprint")},
        }
        save_file({"clip_features": self.clip_features.half().contiguous()}, str(folder / FEATURES))
        with open(folder / ROWS, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(asdict(e), sort_keys=True) + "\n" for e in self.exemplars)
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: Path, expected_fingerprint: str | None = None) -> ExemplarBank:
        folder = Path(folder)
        missing = [n for n in (MANIFEST, ROWS, FEATURES) if not (folder / n).is_file()]
        if missing:
            raise BankError(f"{folder} is not an exemplar bank: missing {', '.join(missing)}")
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            with open(folder / ROWS, encoding="utf-8") as f:
                exemplars = [Exemplar.from_dict(json.loads(line)) for line in f if line.strip()]
        except (json.JSONDecodeError, TypeError) as exc:
            raise BankError(f"{folder}: unreadable bank metadata ({exc})") from exc
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise BankError(f"{folder}: bank format version {version}, this code reads {FORMAT_VERSION}")
        features = load_file(str(folder / FEATURES))["clip_features"]
        info = {k: v for k, v in manifest.items() if k not in ("format_version", "fingerprint")}
        bank = cls(exemplars=exemplars, clip_features=features, fingerprint=manifest["fingerprint"], info=info)
        if expected_fingerprint is not None:
            bank.check_fingerprint(expected_fingerprint)
        return bank
