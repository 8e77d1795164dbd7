"""From a labelled dataset to a deployable model directory, and evaluation of one.

``train_model`` runs the whole recipe:

1. load the records and split them train / validation / test (stratified by action class, seeded; or, with
   ``protocol``, a reference paper's train / test split with validation dives taken from its training part);
2. prepare the backbone (I3D at the profile's width): fine-tune it by label regression
   (``backbone.epochs > 0``), and re-estimate its BatchNorm statistics on training videos unless the profile
   keeps them (``backbone.recalibrate_batchnorm``);
3. extract per-clip features once per video (feature cache; after fine-tuning, from the frames it decoded);
4. train the head (``core``, ``tpt`` or ``pcln``) on training dives, keeping the epoch with the best
   validation Spearman;
5. build the exemplar bank (train + validation dives), calibrate the 90% interval on validation
   residuals (split conformal) and the familiarity check on the validation dives' distances to the bank
   and the training videos' formats (``exemplar_bank/familiarity.py``), evaluate on the test split;
6. write weights, bank, config, familiarity calibration, run report and model card.

Profiles with ``end_to_end`` (the papers' recipes) train backbone and head together instead of steps 2-4's
regression and cached-feature head: ``training/finetune_pairs.py``, on ``device``, with a checkpoint in
``out/checkpoints`` after every epoch (``resume`` continues from it) and the epoch chosen on validation.

Options: ``init_backbone`` starts step 2 from a ``backbone.safetensors`` (Kinetics weights from
``aqa weights import``, or LAV pretraining, ``training/pretrain_lav.py``; such a model also reports its LAV
alignment path as evidence); ``label_fraction`` keeps only that fraction of the training labels (stratified
by action class, seeded) and drops the other training dives altogether, so the bank holds only labelled dives.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from exemplar_bank.bank import Exemplar, ExemplarBank
from exemplar_bank.familiarity import FamiliarityCalibration, InputRanges, why_not_calibrated
from exemplar_bank.familiarity import calibrate as calibrate_familiarity
from models.core import CoReHead
from models.feature_extractor import FeatureExtractor
from models.file_hash import file_sha256
from models.gart import GroupBoundaries
from models.heads import CoReScoringHead, PCLNScoringHead, ScoringHead, TPTScoringHead
from models.i3d import I3D
from models.model_dir import (
    BACKBONE_WEIGHTS,
    BANK_DIR,
    FAMILIARITY,
    HEAD_WEIGHTS,
    BackboneConfig,
    CalibrationConfig,
    LabelConfig,
    ModelConfig,
    VotingConfig,
)
from models.scorer import Scorer
from models.subnormals import flush_subnormals
from models.tpt import TPTHead
from training.backbone import fine_tuning_frames, inference_frames, recalibrate_batchnorm, train_backbone
from training.datasets.folder_csv import load_folder_csv, split_records
from training.datasets.records import DatasetError, DiveRecord
from training.device import resolve_device
from training.evaluate import Evaluation, add_synthetic_readout, evaluate_scorer
from training.feature_cache import FeatureCache
from training.finetune_pairs import EndToEndResult, finetune_pairs, view_source
from training.loader import InferenceClips
from training.model_card import git_commit, read_card, write_card
from training.pairs import pairing_keys
from training.pretrain_lav import load_backbone_init
from training.profiles import HEAD_TITLES, HeadName, ProfileError, TrainingProfile, check_head
from training.protocols import get_protocol, load_protocol_split
from training.train_core import train_core_head
from training.train_pcln import train_pcln
from training.train_tpt import train_tpt_head
from video.errors import VideoError
from video.probe import probe_video

EXECUTION_SCALE = 30.0  # three judges x 10 points: execution labels lie in [0, 30]
CHECKPOINTS_DIR = "checkpoints"


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


def split_dataset(dataset: Path, profile: TrainingProfile, seed: int, label_fraction: float,
                  protocol: str | None) -> tuple[list[DiveRecord], list[DiveRecord], list[DiveRecord]]:
    """Train, validation and test records (step 1 of the module docstring)."""
    if protocol is not None:
        split = load_protocol_split(get_protocol(protocol), Path(dataset))
        inner = split_records(split.train, profile.validation_fraction, seed=seed + 1)
        return keep_labelled(inner.train, label_fraction, seed=seed + 2), inner.test, split.test
    records = load_dataset(dataset)
    outer = split_records(records, profile.test_fraction, seed=seed)
    inner = split_records(outer.train, profile.validation_fraction / (1 - profile.test_fraction), seed=seed + 1)
    return keep_labelled(inner.train, label_fraction, seed=seed + 2), inner.test, outer.test


def train_model(dataset: Path, out: Path, profile: TrainingProfile, cache_dir: Path,
                model_id: str | None = None, seed: int = 0, progress: bool = True,
                data_description: dict[str, Any] | None = None, head: HeadName = "core",
                init_backbone: Path | None = None, label_fraction: float = 1.0, device: str = "auto",
                resume: bool = False, protocol: str | None = None) -> TrainingRun:
    """Train a model directory on ``dataset`` with ``profile``; see the module docstring."""
    check_head(head, profile)
    if profile.end_to_end is not None and head == "pcln":
        raise ProfileError(f"profile {profile.name!r} trains the backbone with a pairwise head: use --head core or tpt")
    if not profile.backbone.recalibrate_batchnorm and init_backbone is None:
        raise ProfileError(f"profile {profile.name!r} keeps the backbone's BatchNorm statistics, which a randomly "
                           "initialised I3D does not have: pass --init-backbone (Kinetics weights from `aqa weights "
                           "import`)")
    if resume and profile.end_to_end is None:
        raise ProfileError(f"profile {profile.name!r} has no end-to-end training to resume (its steps are cached)")
    started = time.perf_counter()
    timings: dict[str, float] = {}
    torch.manual_seed(seed)
    train, val, test = split_dataset(dataset, profile, seed, label_fraction, protocol)
    labels_config = label_config(train + val + test)
    frames_dir = Path(cache_dir) / "frames"
    run_device = resolve_device(device)

    t = time.perf_counter()
    backbone = I3D(width=profile.backbone_width)
    pretraining = load_backbone_init(backbone, init_backbone) if init_backbone is not None else None
    fine_tuning = None
    if profile.backbone.epochs > 0:
        fine_tuning = train_backbone(backbone, train, val, profile, labels_config, cache_dir=frames_dir,
                                     progress=progress)
    backbone_compute = fine_tuning.compute.to_dict() if fine_tuning else None
    if profile.backbone.recalibrate_batchnorm and not (resume and profile.end_to_end is not None):
        recalibrate_batchnorm(backbone, train, profile, seed=seed, progress=progress)
    backbone.eval()
    timings["backbone"] = time.perf_counter() - t

    backbone_config = BackboneConfig(width=profile.backbone_width, feature_dim=backbone.feature_dim)
    config = ModelConfig(
        model_id=model_id or f"{Path(dataset).stem}-{head}", version=time.strftime("%Y.%m.%d"), head=head,
        backbone=backbone_config, preprocessing=profile.preprocessing.to_dict(), clips=profile.clips.to_dict(),
        labels=labels_config, head_config={}, voting=VotingConfig(num_exemplars=profile.num_exemplars),
        alignment_evidence=pretraining is not None and pretraining.get("method") == "lav",
    )
    end_to_end: EndToEndResult | None = None
    if profile.end_to_end is not None:
        t = time.perf_counter()
        probe_extractor = FeatureExtractor(backbone, backbone_config, profile.preprocessing, profile.clips,
                                           device=run_device)

        def validate_end_to_end(module: torch.nn.Module, boundaries: GroupBoundaries, train_features: torch.Tensor,
                                val_features: torch.Tensor) -> float:
            bank = make_bank(train, train_features, probe_extractor.fingerprint)
            return validation_score(config, probe_extractor, scoring_head_of(module, boundaries), bank, val,
                                    val_features)

        recipe = {"seed": seed, "train": [r.key for r in train], "val": [r.key for r in val],
                  "init_backbone": None if init_backbone is None else file_sha256(_weights_file(init_backbone))}
        end_to_end = finetune_pairs(backbone, head, train, val, profile, labels_config.scale,
                                    labels_config.kind == "execution", out / CHECKPOINTS_DIR, Path(cache_dir),
                                    validate_end_to_end, run_device, resume=resume, progress=progress, recipe=recipe)
        timings["backbone"] += time.perf_counter() - t

    extractor = FeatureExtractor(backbone, backbone_config, profile.preprocessing, profile.clips, device=run_device)
    fingerprint = extractor.fingerprint
    t = time.perf_counter()
    cache = FeatureCache(cache_dir, fingerprint, profile.preprocessing, extractor)
    parts = {"train": train, "val": val, "test": test}
    if profile.backbone.epochs > 0:  # the fine-tuning decoded the frames: reuse them, in batches
        features = {}
        for name, part in parts.items():
            frames = inference_frames(fine_tuning_frames(part, profile, frames_dir, progress), profile)
            features[name] = cache.get_many_from_frames(part, frames, extractor.from_frames, progress=progress)
    elif profile.end_to_end is not None and profile.end_to_end.cache_frames:  # its views hold the frames
        features = {name: _features_from_views(cache, part, profile, Path(cache_dir), extractor, progress)
                    for name, part in parts.items()}
    else:
        features = {name: cache.get_many(part, progress=progress) for name, part in parts.items()}
    timings["features"] = time.perf_counter() - t
    train_bank = make_bank(train, features["train"], fingerprint)

    t = time.perf_counter()
    if end_to_end is not None:
        result = _end_to_end_head(head, profile, end_to_end)
    else:
        result = _train_head(head, profile, train, features["train"], labels_config,
                             lambda h: validation_score(config, extractor, h, train_bank, val, features["val"]),
                             progress)
    timings["head"] = time.perf_counter() - t
    config.head_config = result.config
    scoring_head = result.scoring_head

    # Calibrate the interval on validation dives scored against the training bank (they never voted).
    scorer = Scorer(config, extractor, scoring_head, train_bank)
    validation = evaluate_scorer(scorer, val, features["val"], labels_config.final_score_range)
    config.calibration = calibrate(validation, labels_config)

    bank = make_bank(train + val, torch.cat([features["train"], features["val"]]), fingerprint)
    familiarity = calibrate_familiarity_if_possible(
        bank, [r.key for r in val], train + val,
        source=f"{len(val)} validation dives, left out of the reference statistics")
    scorer = Scorer(config, extractor, scoring_head, bank, familiarity)
    test_evaluation = add_synthetic_readout(
        evaluate_scorer(scorer, test, features["test"], labels_config.final_score_range), dataset)
    timings["total"] = time.perf_counter() - started

    out.mkdir(parents=True, exist_ok=True)
    config.save(out)
    save_file({k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}, str(out / BACKBONE_WEIGHTS))
    save_file(flush_subnormals({k: v.detach().cpu().contiguous() for k, v in result.module.state_dict().items()}),
              str(out / HEAD_WEIGHTS))
    bank.save(out / BANK_DIR)
    if familiarity is not None:
        familiarity.save(out)
    test_evaluation.write(out / "report", f"{config.model_id}: test split")
    (out / "report" / "training.json").write_text(json.dumps(
        {"backbone_history": fine_tuning.history if fine_tuning else [], "backbone_compute": backbone_compute,
         "head_history": result.history,
         "best_head_epoch": result.best_epoch, "timings": timings}, indent=2) + "\n")
    backbone_init = None if init_backbone is None else {"path": str(init_backbone), "pretraining": pretraining}
    training: dict[str, Any] = {
        "profile": profile.to_dict(), "head": head, "head_training": result.training_config,
        "backbone_init": backbone_init, "backbone_compute": backbone_compute, "best_head_epoch": result.best_epoch,
        "epoch_selection": "best validation Spearman (the validation split; the test split is never used)",
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    if end_to_end is not None:
        training["end_to_end"] = {"device": end_to_end.device, "precision": end_to_end.precision,
                                  "epochs_run_here": len(end_to_end.history)}
    card = {
        "model_id": config.model_id, "version": config.version, "head": config.head,
        "summary": f"{HEAD_TITLES[head]} head on I3D features (profile {profile.name}), trained on {len(train)} "
                   "dives." + (f" Its backbone's fine-tuning computed in {fine_tuning.compute.dtype} "
                               f"({fine_tuning.compute.reason})." if fine_tuning else ""),
        "data": {"dataset": str(dataset), **(data_description or {}), "train": len(train),
                 "validation": len(val), "test": len(test), "bank_exemplars": len(bank),
                 "split_seed": seed, "label_fraction": label_fraction, "split": protocol or "random"},
        "training": training,
        "evaluations": {"test split": test_evaluation.summary()},
        "calibration": config.calibration.model_dump() if config.calibration else None,
        "familiarity": familiarity_summary(familiarity) if familiarity else {
            "not_calibrated": why_not_calibrated(bank, [r.key for r in val])},
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_card(out, card)
    return TrainingRun(model_dir=out, test_evaluation=test_evaluation, timings=timings)


def validation_score(config: ModelConfig, extractor: FeatureExtractor, scoring_head: ScoringHead, bank: ExemplarBank,
                     val: list[DiveRecord], val_features: torch.Tensor) -> float:
    """Validation Spearman (execution when known, else final) of ``scoring_head`` voting with ``bank``."""
    scorer = Scorer(config, extractor, scoring_head, bank)
    evaluation = evaluate_scorer(scorer, val, val_features, config.labels.final_score_range)
    metrics = evaluation.execution or evaluation.final
    return metrics["spearman"] if math.isfinite(metrics["spearman"]) else -1.0


def scoring_head_of(module: torch.nn.Module, boundaries: GroupBoundaries) -> ScoringHead:
    """The serving adapter of a trained pairwise head."""
    if isinstance(module, CoReHead):
        return CoReScoringHead(module, boundaries)
    if isinstance(module, TPTHead):
        return TPTScoringHead(module, boundaries)
    raise TypeError(f"no pairwise scoring head for {type(module).__name__}")


def _weights_file(path: Path) -> Path:
    path = Path(path)
    return path / BACKBONE_WEIGHTS if path.is_dir() else path


def _features_from_views(cache: FeatureCache, records: list[DiveRecord], profile: TrainingProfile, cache_dir: Path,
                         extractor: FeatureExtractor, progress: bool, chunk: int = 256) -> torch.Tensor:
    """Per-clip features of records whose training views are cached, from the views' unaugmented frames
    (``chunk`` videos' frames in memory at a time)."""
    clips = InferenceClips(view_source(records, profile, cache_dir))
    parts = []
    for first in range(0, len(records), chunk):
        frames = np.stack([clips[i].numpy() for i in range(first, min(first + chunk, len(records)))])
        parts.append(cache.get_many_from_frames(records[first : first + chunk], frames, extractor.from_frames,
                                                progress=progress))
    return torch.cat(parts)


@dataclass
class TrainedHead:
    """Step 4's result, whatever the head: its serving adapter, weights module and head_config."""

    scoring_head: ScoringHead
    module: torch.nn.Module
    config: dict[str, Any]
    training_config: dict[str, Any]
    history: list[dict[str, float]]
    best_epoch: int


def _end_to_end_head(head: HeadName, profile: TrainingProfile, result: EndToEndResult) -> TrainedHead:
    """Step 4 when the head trained together with the backbone: its weights are final."""
    config = {**result.head.config(), "boundaries": result.boundaries.to_list()}  # type: ignore[operator]
    training = {**(profile.tpt if head == "tpt" else profile.head).to_dict(),
                "end_to_end": asdict(profile.end_to_end), "device": result.device, "precision": result.precision}
    return TrainedHead(scoring_head_of(result.head, result.boundaries), result.head, config, training,
                       result.history, result.best_epoch)


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
    classes, difficulties = [r.action_class for r in train], [r.difficulty for r in train]
    if head == "tpt":
        keys = pairing_keys(classes, difficulties, profile.tpt.pairing)  # type: ignore[arg-type]
        tpt = train_tpt_head(clip_features, labels, keys, labels_config.scale, profile.tpt, progress=progress,
                             validate=lambda h, b: validation_spearman(TPTScoringHead(h, b)))
        config = {**tpt.head.config(), "boundaries": tpt.boundaries.to_list()}
        training = {**profile.tpt.to_dict(), "ranking_margin_used": tpt.ranking_margin}
        return TrainedHead(TPTScoringHead(tpt.head, tpt.boundaries), tpt.head, config, training, tpt.history,
                           tpt.best_epoch)
    keys = pairing_keys(classes, difficulties, profile.head.pairing)  # type: ignore[arg-type]
    core = train_core_head(clip_features.mean(1), labels, keys, labels_config.scale, profile.head, progress=progress,
                           validate=lambda h, b: validation_spearman(CoReScoringHead(h, b)))
    config = {**core.head.config(), "boundaries": core.boundaries.to_list()}
    return TrainedHead(CoReScoringHead(core.head, core.boundaries), core.head, config, profile.head.to_dict(),
                       core.history, core.best_epoch)


def training_input_ranges(records: list[DiveRecord]) -> InputRanges | None:
    """Duration, frame rate, size and aspect ranges of the records' video files (None without any file)."""
    videos = []
    for record in records:
        if record.video is not None and record.video.is_file():
            try:
                videos.append(probe_video(record.video))
            except VideoError:  # the features came from its frames all the same; its format is not known
                continue
    return InputRanges.of(videos) if videos else None


def calibrate_familiarity_if_possible(bank: ExemplarBank, calibration_ids: list[str], records: list[DiveRecord],
                                     source: str) -> FamiliarityCalibration | None:
    """The familiarity calibration on ``calibration_ids`` with ``records``' video formats, or None when the bank
    or the calibration set is too small for one (the model then scores without a familiarity)."""
    if why_not_calibrated(bank, calibration_ids) is not None:
        return None
    return calibrate_familiarity(bank, calibration_ids, training_input_ranges(records), source=source)


def familiarity_summary(familiarity: FamiliarityCalibration) -> dict[str, Any]:
    """The model card's view of ``familiarity.json``: the rule and the training ranges, not the distances."""
    return {"measure": "squared Mahalanobis distance of the clip-averaged feature from the bank's other exemplars",
            "calibration": familiarity.calibration_source,
            "flag_above_percentile": familiarity.threshold_percentile,
            "training_inputs": familiarity.inputs.model_dump() if familiarity.inputs else None,
            "measured": familiarity.measured}


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


def rebuild_bank(model_dir: Path, dataset: Path, cache_dir: Path, progress: bool = True,
                 calibration_fraction: float = 0.1, seed: int = 0) -> ExemplarBank:
    """Replace a model's exemplar bank with the dives of ``dataset``, embedded by the model's backbone, and
    recalibrate its familiarity check on ``calibration_fraction`` of them (stratified, seeded)."""
    extractor = FeatureExtractor.from_model_dir(model_dir)
    records = load_dataset(dataset)
    cache = FeatureCache(cache_dir, extractor.fingerprint, extractor.preprocessing, extractor)
    bank = make_bank(records, cache.get_many(records, progress=progress), extractor.fingerprint)
    bank.save(model_dir / BANK_DIR)
    held_out = [r.key for r in split_records(records, calibration_fraction, seed=seed).test]
    familiarity = calibrate_familiarity_if_possible(
        bank, held_out, records, source=f"{len(held_out)} of the bank's dives (aqa bank build), left out of the "
                                        "reference statistics")
    (model_dir / FAMILIARITY).unlink(missing_ok=True)  # the old one describes the old bank
    if familiarity is not None:
        familiarity.save(model_dir)
    card = read_card(model_dir)
    if card:
        card["familiarity"] = familiarity_summary(familiarity) if familiarity else {
            "not_calibrated": why_not_calibrated(bank, held_out)}
        write_card(model_dir, card)
    return bank


