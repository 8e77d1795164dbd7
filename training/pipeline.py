"""From a labelled dataset to a deployable model directory, and evaluation of one.

``train_model`` runs the whole recipe:

1. load the records and split them train / validation / test (stratified by action class, seeded);
2. prepare the backbone (I3D at the profile's width): train it end to end (``backbone_epochs > 0``) or
   keep its initial weights and re-estimate its BatchNorm statistics on training videos;
3. extract per-clip features once per video (feature cache; after fine-tuning, from the frames it decoded);
4. train the head (``core``, ``tpt`` or ``pcln``) on training dives, keeping the epoch with the best
   validation Spearman;
5. build the exemplar bank (train + validation dives), calibrate the 90% interval on validation
   residuals (split conformal), evaluate on the test split;
6. write weights, bank, config, run report and model card.

Options: ``init_backbone`` starts step 2 from a ``backbone.safetensors`` (e.g. written by LAV
pretraining, ``training/pretrain_lav.py``; such a model also reports its LAV alignment path as
evidence); ``label_fraction`` keeps only that fraction of the training labels (stratified by action
class, seeded) and drops the other training dives altogether, so the bank holds only labelled dives.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import save_file

from exemplar_bank.bank import Exemplar, ExemplarBank
from models.clips import ClipProtocol
from models.feature_extractor import FeatureExtractor
from models.file_hash import file_sha256
from models.heads import CoReScoringHead, PCLNScoringHead, ScoringHead, TPTScoringHead
from models.i3d import I3D
from models.model_dir import (
    BACKBONE_WEIGHTS,
    BANK_DIR,
    HEAD_WEIGHTS,
    BackboneConfig,
    CalibrationConfig,
    LabelConfig,
    ModelConfig,
    VotingConfig,
)
from models.pcln import MIN_FRAMES
from models.scorer import Scorer
from training.backbone import (
    BackboneTrainConfig,
    fine_tuning_frames,
    inference_frames,
    recalibrate_batchnorm,
    train_backbone,
)
from training.datasets.folder_csv import load_folder_csv, split_records
from training.datasets.records import DatasetError, DiveRecord
from training.evaluate import Evaluation, add_synthetic_readout, evaluate_scorer
from training.feature_cache import FeatureCache
from training.model_card import git_commit, read_card, write_card
from training.pairs import pairing_keys
from training.pretrain_lav import load_backbone_init
from training.train_core import CoReTrainConfig, train_core_head
from training.train_pcln import PCLNTrainConfig, train_pcln
from training.train_tpt import TPTTrainConfig, train_tpt_head
from video.localise import MotionWindow
from video.preprocessing import Preprocessing

EXECUTION_SCALE = 30.0  # three judges x 10 points: execution labels lie in [0, 30]

HeadName = Literal["core", "tpt", "pcln"]
HEADS: tuple[str, ...] = ("core", "tpt", "pcln")
HEAD_TITLES = {"core": "CoRe", "tpt": "TPT", "pcln": "PCLN"}


@dataclass(frozen=True)
class TrainingProfile:
    """Everything that decides a model's architecture and training recipe."""

    name: str
    description: str
    preprocessing: Preprocessing
    clips: ClipProtocol
    backbone_width: float
    backbone: BackboneTrainConfig
    head: CoReTrainConfig
    num_exemplars: int = 10
    validation_fraction: float = 0.1
    test_fraction: float = 0.2
    tpt: TPTTrainConfig = field(default_factory=TPTTrainConfig)
    pcln: PCLNTrainConfig = field(default_factory=PCLNTrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description,
            "preprocessing": self.preprocessing.to_dict(), "clips": self.clips.to_dict(),
            "backbone_width": self.backbone_width, "backbone": asdict(self.backbone), "head": self.head.to_dict(),
            "num_exemplars": self.num_exemplars, "validation_fraction": self.validation_fraction,
            "test_fraction": self.test_fraction, "tpt": self.tpt.to_dict(), "pcln": self.pcln.to_dict(),
        }


PROFILES: dict[str, TrainingProfile] = {
    "cpu": TrainingProfile(
        name="cpu",
        description="CPU demo profile: I3D at width 0.25 (D=256) on 112x112 crops, CoRe's 10 x 16-frame clips "
        "over 103 frames.",
        preprocessing=Preprocessing(num_frames=103, resize=128, crop=112, normalization="kinetics"),
        clips=ClipProtocol.core_mtl(),
        backbone_width=0.25,
        backbone=BackboneTrainConfig(epochs=0),
        head=CoReTrainConfig(),
    ),
    "kinetics": TrainingProfile(
        name="kinetics",
        description="Reference profile: full I3D (D=1024) on 224x224 crops, CoRe's clips; start from Kinetics "
        "weights (`--backbone-weights`) on a GPU.",
        preprocessing=Preprocessing(num_frames=103, resize=256, crop=224, normalization="kinetics"),
        clips=ClipProtocol.core_mtl(),
        backbone_width=1.0,
        backbone=BackboneTrainConfig(epochs=0),
        head=CoReTrainConfig(epochs=200),
    ),
    "tiny": TrainingProfile(
        name="tiny",
        description="Test profile: a very small I3D on 32x32 crops, 2 clips of 8 frames; seconds to train.",
        preprocessing=Preprocessing(num_frames=16, resize=40, crop=32, normalization="kinetics"),
        clips=ClipProtocol.strided(16, 8, 8),
        backbone_width=0.125,
        backbone=BackboneTrainConfig(epochs=0, batchnorm_videos=8),
        head=CoReTrainConfig(hidden=32, depth=2, epochs=10, batch_size=8, eval_every=5),
        num_exemplars=3,
        validation_fraction=0.2,
        test_fraction=0.2,
        tpt=TPTTrainConfig(d_model=32, ffn_dim=32, head_hidden=16, self_attention_heads=4, epochs=6, batch_size=8,
                           eval_every=3),
        pcln=PCLNTrainConfig(temporal_channels=16, regression_hidden=(32, 16), pair_channels=8, conv_channels=(4, 8),
                             epochs=6, batch_size=8, lr=1e-3, eval_every=3),
    ),
}

# The demo's profile. The backbone at 64 px is cheap enough to fine-tune end to end on the CPU, and it
# reads the whole dive at once: 32 frames sampled uniformly over the video as one clip, so every training
# step sees take-off, flight, entry and splash together. (Averaging 10 x 16-frame clips, CoRe's protocol,
# asks each clip to predict the whole dive's execution from a part of it: three random clips of 103 frames
# reached a validation probe of 0.39 in 30 epochs, 1,900 s; one 32-frame clip reached 0.46 in 10 epochs,
# 200 s, on the same 1,050 dives.) Over-fitting then limits it, so the demo renders more dives: the probe
# plateaued at 0.45-0.56 on 1,050 training dives (epochs 23-33 of 50, stopped there while the training
# loss kept falling), ended at 0.63 on 2,800 (30 epochs) and at 0.68 on 5,600 (16 epochs). Averaging each
# feature with its mirror image's (the fine-tuning flips clips at random) raised the 5,600-dive model's
# fresh-set execution Spearman from 0.620 to 0.640 with the same weights and head, for twice the backbone work.
# At about the same compute, 48 frames (probe 0.50) or 80 px crops (0.46) lost to these 32 frames at 64 px (0.56).
# The 64 px crop is the centre half of the frame (short side resized to 128), where the tracking camera keeps
# the diver, at the scale of the renderer's 112 px view: at the same compute it reached a probe of 0.576
# against 0.551 for the centre two thirds (resize 96) and 0.520 for the whole framing (resize 72), reading
# rotation, splash and height better (README), on 2,800 dives in 12 epochs; on the demo's 5,600 in 16 epochs the
# probe ended where the whole framing's had (0.701 against 0.702). Fine-tuning steps run in bfloat16 (1.3 x
# cheaper, same probe). The clip is cut to the span that moves first (``MotionWindow``, video/localise.py):
# uniform sampling over the whole video put 10 of the 32 frames in the flight, the localised span puts 18.
# With it the demo trains on 8,000 dives for 7 epochs (a 43-minute build) and beat the previous demo (9,600
# dives, 10 epochs, no localiser) on every set: fresh-set final / execution Spearman 0.853 / 0.720 against
# 0.826 / 0.671, validation probe 0.798 against 0.726 (README).
PROFILES["cpu-finetune"] = replace(
    PROFILES["cpu"], name="cpu-finetune",
    description="CPU demo profile: I3D at width 0.25 (D=256) on 64x64 centre crops of frames resized to 128 "
    "reading the dive as one clip of 32 frames sampled over the span of the video that moves (its feature averaged "
    "with its mirror image's), fine-tuned end to end by execution regression in bfloat16, then CoRe.",
    preprocessing=Preprocessing(num_frames=32, resize=128, crop=64, normalization="kinetics",
                                motion_window=MotionWindow()),
    clips=ClipProtocol.strided(32, 32, 32, mirror=True),
    backbone=BackboneTrainConfig(epochs=7, batch_size=16, clips_per_step=1, lr=1e-3, autocast_bfloat16=True),
    test_fraction=0.1,
)

PROFILES["tiny-finetune"] = replace(
    PROFILES["tiny"], name="tiny-finetune",
    description="Test profile for backbone fine-tuning: the tiny I3D, 2 epochs, resampled frames, mirror-averaged "
    "clips.",
    clips=ClipProtocol.strided(16, 8, 8, mirror=True),
    backbone=BackboneTrainConfig(epochs=2, batch_size=4, clips_per_step=1, batchnorm_videos=8, resample_jitter=2.0),
)

# The same profiles with TPT's clip protocol, for the heads that read the clip sequence: TPT (reference:
# 20 clips of 8 frames) and PCLN (needs >= 16 time steps). The tiny variant reads 19 frames as 16 clips
# of 4 frames.
for _name in ("cpu", "kinetics"):
    PROFILES[f"{_name}-tpt"] = replace(
        PROFILES[_name], name=f"{_name}-tpt", clips=ClipProtocol.tpt(),
        description=f"The {_name} profile with TPT's clip protocol (20 clips of 8 frames, stride 5, over 103 "
        "frames), for the TPT and PCLN heads.",
    )
PROFILES["tiny-tpt"] = replace(
    PROFILES["tiny"], name="tiny-tpt", description="Test profile for TPT and PCLN: the tiny I3D, 16 clips of 4 frames.",
    preprocessing=replace(PROFILES["tiny"].preprocessing, num_frames=19), clips=ClipProtocol.strided(19, 4, 1),
)


def check_head(head: str, profile: TrainingProfile) -> None:
    """Raise ValueError when ``head`` is unknown or cannot read ``profile``'s clips."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
    if head == "pcln" and profile.clips.num_clips < MIN_FRAMES:
        raise ValueError(f"PCLN needs at least {MIN_FRAMES} clips per video and profile {profile.name!r} gives "
                         f"{profile.clips.num_clips}; use a profile with TPT's clip protocol "
                         f"({', '.join(n for n in PROFILES if n.endswith('-tpt'))})")


def load_dataset(path: Path) -> list[DiveRecord]:
    """Records of a labelled dataset: a labels CSV, or a folder holding ``labels.csv``."""
    path = Path(path)
    if path.is_dir() and (path / "labels.csv").is_file():
        path = path / "labels.csv"
    if path.is_file() and path.suffix.lower() == ".csv":
        return load_folder_csv(path)
    raise DatasetError(f"{path}: expected a labels CSV (video,final_score,difficulty,...) or a folder holding "
                       "labels.csv")


def label_config(records: list[DiveRecord]) -> LabelConfig:
    """Execution labels (final score / difficulty) when every record has a difficulty, else final scores."""
    finals = [r.final_score for r in records]
    span = (0.0, max(finals))
    if all(r.difficulty for r in records):
        return LabelConfig(kind="execution", scale=EXECUTION_SCALE, final_score_range=span)
    return LabelConfig(kind="final", scale=max(finals), final_score_range=span)


def _labels(records: list[DiveRecord], config: LabelConfig) -> torch.Tensor:
    values = [r.execution_score if config.kind == "execution" else r.final_score for r in records]
    return torch.tensor(values, dtype=torch.float32)


def make_bank(records: list[DiveRecord], clip_features: torch.Tensor, fingerprint: str) -> ExemplarBank:
    exemplars = [
        Exemplar(id=r.key, final_score=r.final_score, difficulty=r.difficulty, action_class=r.action_class,
                 judge_scores=list(r.judge_scores) if r.judge_scores else None,
                 video_sha256=file_sha256(r.video) if r.video is not None and r.video.is_file() else None,
                 source=str(r.video.name) if r.video is not None else None)
        for r in records
    ]
    return ExemplarBank(exemplars=exemplars, clip_features=clip_features, fingerprint=fingerprint)


@dataclass
class TrainingRun:
    """What ``train_model`` produced, for callers that continue (the demo build, tests)."""

    model_dir: Path
    test_evaluation: Evaluation
    timings: dict[str, float] = field(default_factory=dict)


def train_model(dataset: Path, out: Path, profile: TrainingProfile, cache_dir: Path,
                model_id: str | None = None, seed: int = 0, progress: bool = True,
                data_description: dict[str, Any] | None = None, head: HeadName = "core",
                init_backbone: Path | None = None, label_fraction: float = 1.0) -> TrainingRun:
    """Train a model directory on ``dataset`` with ``profile``; see the module docstring."""
    check_head(head, profile)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    torch.manual_seed(seed)
    records = load_dataset(dataset)
    outer = split_records(records, profile.test_fraction, seed=seed)
    inner = split_records(outer.train, profile.validation_fraction / (1 - profile.test_fraction), seed=seed + 1)
    train, val, test = keep_labelled(inner.train, label_fraction, seed=seed + 2), inner.test, outer.test
    labels_config = label_config(records)
    frames_dir = Path(cache_dir) / "frames"

    t = time.perf_counter()
    backbone = I3D(width=profile.backbone_width)
    pretraining = load_backbone_init(backbone, init_backbone) if init_backbone is not None else None
    backbone_history = []
    if profile.backbone.epochs > 0:
        backbone_history = train_backbone(backbone, train, val, profile, labels_config,
                                          cache_dir=frames_dir, progress=progress)
    recalibrate_batchnorm(backbone, train, profile, seed=seed, progress=progress)
    backbone.eval()
    timings["backbone"] = time.perf_counter() - t

    backbone_config = BackboneConfig(width=profile.backbone_width, feature_dim=backbone.feature_dim)
    extractor = FeatureExtractor(backbone, backbone_config, profile.preprocessing, profile.clips)
    fingerprint = extractor.fingerprint
    t = time.perf_counter()
    cache = FeatureCache(cache_dir, fingerprint, profile.preprocessing, extractor)
    parts = {"train": train, "val": val, "test": test}
    if profile.backbone.epochs > 0:  # the fine-tuning decoded the frames: reuse them, in batches
        features = {}
        for name, part in parts.items():
            frames = inference_frames(fine_tuning_frames(part, profile, frames_dir, progress), profile)
            features[name] = cache.get_many_from_frames(part, frames, extractor.from_frames, progress=progress)
    else:
        features = {name: cache.get_many(part, progress=progress) for name, part in parts.items()}
    timings["features"] = time.perf_counter() - t

    config = ModelConfig(
        model_id=model_id or f"{Path(dataset).stem}-{head}", version=time.strftime("%Y.%m.%d"), head=head,
        backbone=backbone_config, preprocessing=profile.preprocessing.to_dict(), clips=profile.clips.to_dict(),
        labels=labels_config, head_config={}, voting=VotingConfig(num_exemplars=profile.num_exemplars),
        alignment_evidence=pretraining is not None and pretraining.get("method") == "lav",
    )
    train_bank = make_bank(train, features["train"], fingerprint)

    def validation_spearman(scoring_head: ScoringHead) -> float:
        scorer = Scorer(config, extractor, scoring_head, train_bank)
        evaluation = evaluate_scorer(scorer, val, features["val"], labels_config.final_score_range)
        metrics = evaluation.execution or evaluation.final
        return metrics["spearman"] if math.isfinite(metrics["spearman"]) else -1.0

    t = time.perf_counter()
    result = _train_head(head, profile, train, features["train"], labels_config, validation_spearman, progress)
    timings["head"] = time.perf_counter() - t
    config.head_config = result.config
    scoring_head = result.scoring_head

    # Calibrate the interval on validation dives scored against the training bank (they never voted).
    scorer = Scorer(config, extractor, scoring_head, train_bank)
    validation = evaluate_scorer(scorer, val, features["val"], labels_config.final_score_range)
    config.calibration = calibrate(validation, labels_config)

    bank = make_bank(train + val, torch.cat([features["train"], features["val"]]), fingerprint)
    scorer = Scorer(config, extractor, scoring_head, bank)
    test_evaluation = add_synthetic_readout(
        evaluate_scorer(scorer, test, features["test"], labels_config.final_score_range), dataset)
    timings["total"] = time.perf_counter() - started

    out.mkdir(parents=True, exist_ok=True)
    config.save(out)
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(out / BACKBONE_WEIGHTS))
    save_file({k: v.contiguous() for k, v in result.module.state_dict().items()}, str(out / HEAD_WEIGHTS))
    bank.save(out / BANK_DIR)
    test_evaluation.write(out / "report", f"{config.model_id}: test split")
    (out / "report" / "training.json").write_text(json.dumps(
        {"backbone_history": backbone_history, "head_history": result.history,
         "best_head_epoch": result.best_epoch, "timings": timings}, indent=2) + "\n")
    backbone_init = None if init_backbone is None else {"path": str(init_backbone), "pretraining": pretraining}
    card = {
        "model_id": config.model_id, "version": config.version, "head": config.head,
        "summary": f"{HEAD_TITLES[head]} head on I3D features (profile {profile.name}), trained on {len(train)} "
                   "dives.",
        "data": {"dataset": str(dataset), **(data_description or {}), "train": len(train),
                 "validation": len(val), "test": len(test), "bank_exemplars": len(bank),
                 "split_seed": seed, "label_fraction": label_fraction},
        "training": {"profile": profile.to_dict(), "head": head, "head_training": result.training_config,
                     "backbone_init": backbone_init, "best_head_epoch": result.best_epoch,
                     "seconds": {k: round(v, 1) for k, v in timings.items()}},
        "evaluations": {"test split": test_evaluation.summary()},
        "calibration": config.calibration.model_dump() if config.calibration else None,
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_card(out, card)
    return TrainingRun(model_dir=out, test_evaluation=test_evaluation, timings=timings)


@dataclass
class TrainedHead:
    """Step 4's result, whatever the head: its serving adapter, weights module and head_config."""

    scoring_head: ScoringHead
    module: torch.nn.Module
    config: dict[str, Any]
    training_config: dict[str, Any]
    history: list[dict[str, float]]
    best_epoch: int


def _train_head(head: HeadName, profile: TrainingProfile, train: list[DiveRecord], clip_features: torch.Tensor,
                labels_config: LabelConfig, validation_spearman: Callable[[ScoringHead], float],
                progress: bool) -> TrainedHead:
    """Train ``head`` on the training dives' per-clip features (N, C, D), selecting epochs on validation."""
    labels = _labels(train, labels_config)
    if head == "pcln":
        pcln = train_pcln(clip_features, labels, profile.pcln, progress=progress,
                          validate=lambda model: validation_spearman(PCLNScoringHead(model)))
        return TrainedHead(PCLNScoringHead(pcln.model), pcln.model, pcln.model.config(), profile.pcln.to_dict(),
                           pcln.history, pcln.best_epoch)
    keys = pairing_keys([r.action_class for r in train], [r.difficulty for r in train])
    if head == "tpt":
        tpt = train_tpt_head(clip_features, labels, keys, labels_config.scale, profile.tpt, progress=progress,
                             validate=lambda h, b: validation_spearman(TPTScoringHead(h, b)))
        config = {**tpt.head.config(), "boundaries": tpt.boundaries.to_list()}
        training = {**profile.tpt.to_dict(), "ranking_margin": tpt.ranking_margin}
        return TrainedHead(TPTScoringHead(tpt.head, tpt.boundaries), tpt.head, config, training, tpt.history,
                           tpt.best_epoch)
    core = train_core_head(clip_features.mean(1), labels, keys, labels_config.scale, profile.head, progress=progress,
                           validate=lambda h, b: validation_spearman(CoReScoringHead(h, b)))
    config = {**core.head.config(), "boundaries": core.boundaries.to_list()}
    return TrainedHead(CoReScoringHead(core.head, core.boundaries), core.head, config, profile.head.to_dict(),
                       core.history, core.best_epoch)


def keep_labelled(train: list[DiveRecord], fraction: float, seed: int) -> list[DiveRecord]:
    """The training dives whose labels the scarce-label experiment keeps: ``fraction`` of them, stratified
    by action class and seeded (``split_records``); all of them when ``fraction`` is 1."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return train
    kept = split_records(train, 1.0 - fraction, seed=seed).train
    if len(kept) < 2:
        raise DatasetError(f"label_fraction {fraction} keeps {len(kept)} of {len(train)} training dives; need >= 2")
    return kept


def calibrate(validation: Evaluation, labels: LabelConfig, level: float = 0.9) -> CalibrationConfig:
    """Split-conformal radius in label units from validation residuals (Vovk et al. 2005)."""
    rows = validation.predictions
    if labels.kind == "execution":
        residuals = [abs(r["true_final"] - r["pred_final"]) / r["difficulty"] for r in rows]
    else:
        residuals = [abs(r["true_final"] - r["pred_final"]) for r in rows]
    ordered = np.sort(residuals)
    rank = min(math.ceil((len(ordered) + 1) * level), len(ordered))
    return CalibrationConfig(abs_residual_q90=float(ordered[rank - 1]), num_residuals=len(ordered))


def evaluate_model_dir(model_dir: Path, dataset: Path, cache_dir: Path, out: Path | None = None,
                       use_difficulty: bool = True, update_card: bool = False, name: str | None = None,
                       progress: bool = True) -> Evaluation:
    """Score every dive of ``dataset`` with a saved model; optionally record the result in its card."""
    scorer = Scorer.from_dir(model_dir)
    records = load_dataset(dataset)
    cache = FeatureCache(cache_dir, scorer.fingerprint, scorer.preprocessing, scorer.extract_features)
    features = cache.get_many(records, progress=progress)
    evaluation = add_synthetic_readout(evaluate_scorer(
        scorer, records, features, scorer.config.labels.final_score_range, use_difficulty=use_difficulty), dataset)
    name = name or f"{Path(dataset).name}{'' if use_difficulty else ' (difficulty estimated)'}"
    if out is not None:
        evaluation.write(out, f"{scorer.config.model_id} on {name}")
    if update_card:
        card = read_card(model_dir)
        card.setdefault("evaluations", {})[name] = evaluation.summary()
        write_card(model_dir, card)
    return evaluation


def rebuild_bank(model_dir: Path, dataset: Path, cache_dir: Path, progress: bool = True) -> ExemplarBank:
    """Replace a model's exemplar bank with the dives of ``dataset``, embedded by the model's backbone."""
    extractor = FeatureExtractor.from_model_dir(model_dir)
    records = load_dataset(dataset)
    cache = FeatureCache(cache_dir, extractor.fingerprint, extractor.preprocessing, extractor)
    bank = make_bank(records, cache.get_many(records, progress=progress), extractor.fingerprint)
    bank.save(model_dir / BANK_DIR)
    return bank


