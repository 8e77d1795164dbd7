"""The reference papers' test protocols, so a model is evaluated the way its published numbers were.

A :class:`Protocol` fixes what the reference test loop fixes: the dataset and split, which frames of a
dive are read (relative to its annotation), which training dives vote as exemplars and how many, the
labels, the metrics and the published numbers to compare with.

=================  ====================================================================================
``core-mtl``       CoRe (Yu et al., ICCV 2021) on MTL-AQA split 0 (``datasets/MTLPair.py``,
                   ``tools/runner.py`` ``test``): the 103 consecutive frames ending at the annotated
                   ``end_frame``; 10 training dives with the query's difficulty, chosen at random (all of
                   them when fewer than 10 exist); labels final / difficulty, prediction
                   ``mean_m(relative_m + label_m) x difficulty``.
``tpt-mtl``        TPT (Bai et al., ECCV 2022; ``dataloader_pair_MLT.py``): as ``core-mtl``, but a query
                   with fewer than 10 same-difficulty training dives is topped up from the nearest other
                   difficulties, in training-split order; the top-ups get weight 0 in the vote (the test
                   loop's ``get_mask``: 1 / t_len for the t_len same-difficulty exemplars, 0 after them).
``core-aqa7``      CoRe on one AQA-7 class, split 4 (``datasets/SevenPair.py``): the first 103 frames of
                   each sample; 10 random training samples of the class; scores scaled to 0-100 per class
                   (``utils/misc.py``). Several classes (one model each) are averaged with Fisher's z.
``tsa-finediving`` FineDiving-TSA (Xu et al., CVPR 2022; ``datasets/FineDiving_Pair.py``): 96 frames at
                   ``np.linspace(first, last, 96).astype(int)`` over the dive's frames; 10 random training
                   dives of the query's action type (dive number); raw final scores.
=================  ====================================================================================

Metrics, as all three reference test loops compute them: Spearman's rho of predicted and true final
scores, ``L2 = mean((pred - true)^2)`` and ``R-l2 = mean(((pred - true) / (max(true) - min(true)))^2)``
over the test dives, reported x 100. The range is the TEST SET's own (0-104.5 on MTL-AQA split 0, where
it equals the label range; for an AQA-7 class, the range of its scaled test scores).

What the protocol overrides: which frames are read (``num_frames`` and ``sampling`` of the reference
input). The spatial preprocessing and the clip protocol are the model's own, since its weights were
trained on them; ``input="reference"`` also replaces the spatial preprocessing and normalisation by the
reference's. Every setting that differs from the reference is listed in the report.

Exemplar draws are seeded per query (``seed`` and the dive's key), so a run is reproducible and a dive's
exemplars do not depend on which other dives are evaluated. The reference draws with Python's ``random``
inside PyTorch DataLoader workers, which reseed from PyTorch's generator, so its exact draw cannot be
replayed; the rule (pool, count, fallback) is the same.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file

from models.clips import ClipProtocol
from models.feature_extractor import FeatureExtractor
from models.heads import build_head
from models.model_dir import HEAD_WEIGHTS, ModelConfig, ModelDirError
from models.weights.core_import import CORE_PREPROCESSING
from training.datasets.aqa7 import AQA7_CLASSES, load_aqa7
from training.datasets.finediving import load_finediving
from training.datasets.mtl_aqa import find_annotation_file, load_mtl_aqa
from training.datasets.records import DatasetError, DiveRecord, Split
from training.feature_cache import FeatureCache
from training.metrics import fisher_z_average, relative_l2_test_range, spearman
from video.preprocessing import Preprocessing

DatasetName = Literal["mtl-aqa", "aqa-7", "finediving"]
ExemplarRule = Literal["same_difficulty", "same_difficulty_then_nearest", "same_action", "any"]
InputMode = Literal["model", "reference"]
REPORT_JSON = "protocol_report.json"
REPORT_MD = "protocol_report.md"
_MAX_LISTED = 5

# Where the reference repositories keep the media, relative to the data root, first match wins.
_MEDIA_DIRS: dict[str, tuple[str, ...]] = {
    "mtl-aqa": ("new/new_total_frames_256s", "new_total_frames_256s", "frames", "videos", "."),
    "finediving": ("FineDiving", "FINADiving_MTL_256s", "Trimmed_Video_Frames/FINADiving_MTL_256s", "frames"),
}


class ProtocolError(DatasetError):
    """A protocol cannot run on this data or model; the message says why."""


@dataclass(frozen=True)
class PublishedResult:
    """A number from a paper's table: Spearman rho and R-l2 x 100 (None where the table gives none)."""

    method: str
    spearman: float
    relative_l2_x100: float | None
    source: str


@dataclass(frozen=True)
class Protocol:
    """One reference test protocol (see the module docstring)."""

    name: str
    title: str
    dataset: DatasetName
    exemplar_rule: ExemplarRule
    num_exemplars: int
    reference_labels: Literal["execution", "final"]
    reference_label_scale: float | None
    reference_input: Preprocessing
    reference_clips: ClipProtocol
    frames: str
    published: tuple[PublishedResult, ...]
    notes: tuple[str, ...] = ()

    def input_for(self, model_preprocessing: Preprocessing, mode: InputMode = "model") -> Preprocessing:
        """The preprocessing a run uses: the model's with the reference's frame choice, or the reference's."""
        if mode == "reference":
            return self.reference_input
        if mode != "model":
            raise ValueError(f"input mode must be 'model' or 'reference', got {mode!r}")
        return replace(model_preprocessing, num_frames=self.reference_input.num_frames,
                       sampling=self.reference_input.sampling)


_EXEMPLAR_DRAW_NOTE = (
    "Exemplars are drawn with a generator seeded by --seed and the dive's key; the reference draws inside "
    "DataLoader workers reseeded by PyTorch, so its exact draw cannot be replayed (same pool and count)."
)
_BEST_EPOCH_NOTE = (
    "The published number is the best test-split result over the training epochs (CoRe tools/runner.py validate() "
    "keeps rho_best across epochs evaluated on the test split; TPT's ResultsHandler does the same), an optimistic "
    "selection; `aqa train` selects its epoch on a validation split carved from the training dives and never "
    "looks at the test split."
)
_GPU_NOTE = (
    "Features computed on another device or library version differ in the last bits (cuDNN kernels are not "
    "deterministic), which can move a vote across a tree leaf boundary."
)
TSA_INPUT = Preprocessing(num_frames=96, resize=112, crop=112, normalization="imagenet", sampling="uniform_floor",
                          stretch_to=(112, 200))
AQA7_INPUT = replace(CORE_PREPROCESSING, sampling="window_end")
TSA_CLIPS = ClipProtocol(length=16, starts=tuple(range(0, 90, 10)))

PROTOCOLS: dict[str, Protocol] = {
    "core-mtl": Protocol(
        name="core-mtl",
        title="CoRe test protocol on MTL-AQA (with difficulty)",
        dataset="mtl-aqa",
        exemplar_rule="same_difficulty",
        num_exemplars=10,
        reference_labels="execution",
        reference_label_scale=30.0,
        reference_input=CORE_PREPROCESSING,
        reference_clips=ClipProtocol.core_mtl(),
        frames="the 103 consecutive frames ending at the annotated end_frame (positions end_frame - 103 .. "
               "end_frame - 1 of the source's frames, as CoRe's loader indexes its frames folder)",
        published=(PublishedResult("CoRe", 0.9512, 0.260, "Yu et al., ICCV 2021"),),
        notes=(_BEST_EPOCH_NOTE, _EXEMPLAR_DRAW_NOTE, _GPU_NOTE),
    ),
    "tpt-mtl": Protocol(
        name="tpt-mtl",
        title="TPT test protocol on MTL-AQA (with difficulty)",
        dataset="mtl-aqa",
        exemplar_rule="same_difficulty_then_nearest",
        num_exemplars=10,
        reference_labels="execution",
        reference_label_scale=30.0,
        reference_input=CORE_PREPROCESSING,
        reference_clips=ClipProtocol.tpt(),
        frames="the 103 consecutive frames ending at the annotated end_frame, as core-mtl",
        published=(PublishedResult("TPT", 0.9607, 0.238, "Bai et al., ECCV 2022"),),
        notes=(
            ("TPT reads per-dive 'frames_long' folders from their 4th frame; that these 103 frames are CoRe's "
            "window was not checked against TPT's data."),
            _BEST_EPOCH_NOTE, _EXEMPLAR_DRAW_NOTE, _GPU_NOTE,
        ),
    ),
    "core-aqa7": Protocol(
        name="core-aqa7",
        title="CoRe test protocol on AQA-7 (split 4, one model per class)",
        dataset="aqa-7",
        exemplar_rule="any",
        num_exemplars=10,
        reference_labels="final",
        reference_label_scale=100.0,
        reference_input=AQA7_INPUT,
        reference_clips=ClipProtocol.core_mtl(),
        frames="the first 103 frames of each sample (img_00001.jpg .. img_00103.jpg)",
        published=(PublishedResult("CoRe (average of 6 classes, Fisher z)", 0.8401, None, "Yu et al., ICCV 2021"),),
        notes=(_BEST_EPOCH_NOTE, _EXEMPLAR_DRAW_NOTE, _GPU_NOTE),
    ),
    "tsa-finediving": Protocol(
        name="tsa-finediving",
        title="FineDiving-TSA test protocol on FineDiving",
        dataset="finediving",
        exemplar_rule="same_action",
        num_exemplars=10,
        reference_labels="final",
        reference_label_scale=None,
        reference_input=TSA_INPUT,
        reference_clips=TSA_CLIPS,
        frames="96 frames at np.linspace(first, last, 96).astype(int) over the dive's frames folder",
        published=(
            PublishedResult("TSA", 0.9203, 0.3420, "Xu et al., CVPR 2022"),
            PublishedResult("CoRe", 0.9061, 0.3615, "Xu et al., CVPR 2022 (their run of CoRe)"),
        ),
        notes=(
            ("There is no TSA head here: this runs TSA's data protocol (frames, exemplars, metrics) with the "
            "model's own head, to compare with the published FineDiving numbers."),
            ("TSA takes np.linspace over the source frame numbers in the file names; here over positions in the "
            "folder. For contiguous numbering the rounding differs only when floating point lands on either side "
            "of an integer (1.4% of 20,000 random (start, length) draws had one of 96 frames one apart)."),
            _EXEMPLAR_DRAW_NOTE, _GPU_NOTE,
        ),
    ),
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


# --------------------------------------------------------------------------------------------------
# Data: the reference layouts, with each record's frame range set to what the reference reads.


def locate_media(protocol: Protocol, root: Path) -> Path:
    """The media folder under ``root`` for ``protocol``'s dataset (the first of the reference layouts found)."""
    for sub in _MEDIA_DIRS[protocol.dataset]:
        if (root / sub).is_dir():
            return root / sub
    raise ProtocolError(f"{root}: no media folder; expected one of {', '.join(_MEDIA_DIRS[protocol.dataset])} "
                        "(or pass --media)")


def load_protocol_split(protocol: Protocol, root: Path, *, action: str | None = None,
                        media: Path | None = None) -> Split:
    """The train/test records of ``protocol``'s dataset under ``root``, with the reference's frame ranges."""
    root = Path(root)
    if not root.is_dir():
        raise ProtocolError(f"data root {root} is not a folder")
    if protocol.dataset == "mtl-aqa":
        info = root / "info" if (root / "info").is_dir() else root
        find_annotation_file(info)  # a clear error before the media search
        split = load_mtl_aqa(info, media if media is not None else locate_media(protocol, root))
        return Split(train=core_mtl_window(split.train), test=core_mtl_window(split.test))
    if protocol.dataset == "aqa-7":
        if action is None:
            raise ProtocolError(f"{protocol.name} needs the AQA-7 class (--action), one of {', '.join(AQA7_CLASSES[:6])}")
        if media is not None:
            raise ProtocolError("AQA-7 keeps its frames beside Split_4/ under the data root; --media does not apply")
        split = load_aqa7(root, action, scaled=True)
        last = protocol.reference_input.num_frames - 1
        return Split(train=[replace(r, start_frame=0, end_frame=last) for r in split.train],
                     test=[replace(r, start_frame=0, end_frame=last) for r in split.test])
    return load_finediving(root, media if media is not None else locate_media(protocol, root))


def core_mtl_window(records: Sequence[DiveRecord], num_frames: int = 103) -> list[DiveRecord]:
    """MTL-AQA records whose range ends where CoRe's window does: position ``end_frame - 1``.

    CoRe's loader reads positions ``end_frame - 103 .. end_frame - 1`` of the source's sorted frames
    (``image_list[end_frame - 103 + i]``); with ``sampling="window_end"`` that is the range
    ``[.., end_frame - 1]``. The annotated start is not used. Raises :class:`ProtocolError` for dives whose
    window would start before the first frame.
    """
    early = [r.key for r in records if r.end_frame is None or r.end_frame < num_frames]
    if early:
        raise ProtocolError(f"{len(early)} dives end before frame {num_frames}, so CoRe's window does not fit: "
                            f"{_listing(early)}")
    return [replace(r, start_frame=None, end_frame=r.end_frame - 1) for r in records]


# --------------------------------------------------------------------------------------------------
# Exemplars.


def exemplar_generator(seed: int, key: str) -> np.random.Generator:
    """The generator that draws the exemplars of the dive ``key``: seeded by ``seed`` and crc32(key)."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def choose_exemplars(query: DiveRecord, train: Sequence[DiveRecord], rule: ExemplarRule, count: int,
                     seed: int = 0) -> list[int]:
    """Indices into ``train`` of the exemplars that vote for ``query`` under the reference ``rule``.

    - ``same_difficulty`` (CoRe): a random ``count`` of the training dives with the query's difficulty,
      all of them when there are fewer.
    - ``same_difficulty_then_nearest`` (TPT): as above; when fewer than ``count``, the missing ones are the
      first training dives (in split order) of the nearest other difficulty, then the next nearest
      (ties: the difficulty met first in the split).
    - ``same_action`` (TSA): a random ``count`` of the training dives with the query's action class.
    - ``any`` (CoRe on AQA-7): a random ``count`` of all training dives.

    Raises :class:`ProtocolError` when the pool is empty (the reference would fail on a missing key).
    """
    if rule in ("same_difficulty", "same_difficulty_then_nearest"):
        if query.difficulty is None:
            raise ProtocolError(f"dive {query.key} has no difficulty; rule {rule} needs it")
        pool = [i for i, r in enumerate(train) if r.difficulty == query.difficulty]
    elif rule == "same_action":
        pool = [i for i, r in enumerate(train) if query.action_class is not None and r.action_class == query.action_class]
    elif rule == "any":
        pool = list(range(len(train)))
    else:
        raise ValueError(f"unknown exemplar rule {rule!r}")
    if not pool:
        wanted = f"difficulty {query.difficulty}" if rule != "same_action" else f"action {query.action_class!r}"
        raise ProtocolError(f"dive {query.key}: no training dive with {wanted} to serve as exemplar")
    order = exemplar_generator(seed, query.key).permutation(len(pool))
    chosen = [pool[i] for i in order[:count]]
    if rule == "same_difficulty_then_nearest" and len(chosen) < count:
        chosen += _nearest_difficulty_top_up(query.difficulty, train, count - len(chosen))
    return chosen


def voting_weights(query: DiveRecord, train: Sequence[DiveRecord], chosen: Sequence[int],
                   rule: ExemplarRule) -> np.ndarray:
    """Each chosen exemplar's weight in the query's vote (they sum to 1).

    Equal weights, except under ``same_difficulty_then_nearest`` (TPT), whose test loop averages only the
    same-difficulty exemplars (``get_mask``: 1 / t_len for the first t_len, 0 for the top-ups).
    """
    if not chosen:
        return np.zeros(0)
    if rule != "same_difficulty_then_nearest":
        return np.full(len(chosen), 1.0 / len(chosen))
    same = np.array([train[i].difficulty == query.difficulty for i in chosen], dtype=float)
    return same / same.sum()


def _nearest_difficulty_top_up(difficulty: float, train: Sequence[DiveRecord], need: int) -> list[int]:
    by_difficulty: dict[float, list[int]] = {}
    for i, record in enumerate(train):
        if record.difficulty is not None and record.difficulty != difficulty:
            by_difficulty.setdefault(record.difficulty, []).append(i)
    extra: list[int] = []
    for other in sorted(by_difficulty, key=lambda d: abs(d - difficulty)):  # stable: split order breaks ties
        extra += by_difficulty[other][: need - len(extra)]
        if len(extra) == need:
            break
    return extra


# --------------------------------------------------------------------------------------------------
# Metrics.


def reference_metrics(predicted: Sequence[float], true: Sequence[float]) -> dict[str, float]:
    """Spearman rho, L2 and R-l2 x 100 as the reference test loops compute them (test-set score range)."""
    predicted, true = np.asarray(predicted, float), np.asarray(true, float)
    low, high = float(true.min()), float(true.max())
    if high <= low:
        raise ProtocolError("every test dive has the same score: R-l2 is undefined")
    return {
        "spearman": spearman(predicted, true),
        "l2": float(np.mean((predicted - true) ** 2)),
        "relative_l2_x100": 100.0 * relative_l2_test_range(predicted, true),
        "score_min": low,
        "score_max": high,
    }


# --------------------------------------------------------------------------------------------------
# Running a protocol.


@dataclass
class PartResult:
    """One model on one test set (AQA-7: one class)."""

    model_dir: str
    model_id: str
    head: str
    action: str | None
    num_test: int
    num_exemplar_videos: int
    metrics: dict[str, float]
    input: dict[str, Any]
    differences: list[str]
    predictions: list[dict[str, Any]] = field(repr=False)


@dataclass
class ProtocolReport:
    protocol: str
    title: str
    data_root: str
    seed: int
    input_mode: str
    frames: str
    exemplar_rule: str
    num_exemplars: int
    summary: dict[str, float]
    published: list[dict[str, Any]]
    notes: list[str]
    parts: list[PartResult]

    def write(self, folder: Path) -> None:
        """``protocol_report.json`` (everything, with per-dive predictions) and ``protocol_report.md``."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / REPORT_JSON).write_text(json.dumps(asdict(self), indent=2) + "\n")
        (folder / REPORT_MD).write_text(self.markdown() + "\n")

    def markdown(self) -> str:
        def number(value: float | None, digits: int) -> str:
            return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"

        lines = [f"# {self.title} (`{self.protocol}`)", "",
                 (f"Data: `{self.data_root}`; frames: {self.frames}; exemplars: {self.num_exemplars}, rule "
                 f"`{self.exemplar_rule}`, seed {self.seed}; input: {self.input_mode}."), "",
                 "| model | class | test dives | Spearman | R-l2 x 100 | L2 |", "|---|---|---|---|---|---|"]
        for part in self.parts:
            m = part.metrics
            lines.append(f"| {part.model_id} ({part.head}) | {part.action or '-'} | {part.num_test} | "
                         f"{number(m['spearman'], 4)} | {number(m['relative_l2_x100'], 3)} | {number(m['l2'], 2)} |")
        if len(self.parts) > 1:
            lines.append(f"| **average** | Fisher z | | {number(self.summary['spearman'], 4)} | "
                         f"{number(self.summary['relative_l2_x100'], 3)} | |")
        lines += ["", "Published:", ""]
        lines += [f"- {p['method']}: Spearman {p['spearman']:.4f}"
                  + (f", R-l2 x 100 {p['relative_l2_x100']:.3f}" if p["relative_l2_x100"] is not None else "")
                  + f" ({p['source']})" for p in self.published]
        differences = sorted({d for part in self.parts for d in part.differences})
        lines += ["", "Differences from the reference setting:", ""]
        lines += [f"- {d}" for d in differences] or ["- none in preprocessing, clips, labels or voting"]
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines)


def run_protocol(protocol: Protocol | str, data_root: Path, model_dirs: Sequence[Path], cache_dir: Path, *,
                 actions: Sequence[str] | None = None, media: Path | None = None, seed: int = 0,
                 input_mode: InputMode = "model", device: str = "cpu", progress: bool = True) -> ProtocolReport:
    """Evaluate ``model_dirs`` under ``protocol``; AQA-7 pairs the i-th model with the i-th action class.

    The summary is the single model's metrics, or for several classes the Fisher-z average of rho and the
    mean R-l2 (CoRe's AQA-7 average).
    """
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    model_dirs = [Path(m) for m in model_dirs]
    if not model_dirs:
        raise ProtocolError("a protocol run needs a model directory (--model)")
    if protocol.dataset == "aqa-7":
        if actions is None or len(actions) != len(model_dirs):
            raise ProtocolError(f"{protocol.name}: give one --action per --model (CoRe trains one model per AQA-7 "
                                f"class); got {len(model_dirs)} model(s) and {len(actions or [])} class(es)")
    else:
        if len(model_dirs) != 1:
            raise ProtocolError(f"{protocol.name} evaluates one model; got {len(model_dirs)}")
        if actions:
            raise ProtocolError(f"--action is for core-aqa7 only, not {protocol.name}")
    pairs = zip(model_dirs, actions if actions else [None] * len(model_dirs))
    parts = [_run_part(protocol, Path(data_root), model_dir, action, Path(cache_dir), media, seed, input_mode,
                       device, progress) for model_dir, action in pairs]
    if len(parts) == 1:
        summary = dict(parts[0].metrics)
    else:
        summary = {"spearman": fisher_z_average([p.metrics["spearman"] for p in parts]),
                   "relative_l2_x100": float(np.mean([p.metrics["relative_l2_x100"] for p in parts]))}
    return ProtocolReport(
        protocol=protocol.name, title=protocol.title, data_root=str(data_root), seed=seed, input_mode=input_mode,
        frames=protocol.frames, exemplar_rule=protocol.exemplar_rule, num_exemplars=protocol.num_exemplars,
        summary=summary, published=[asdict(p) for p in protocol.published], notes=list(protocol.notes), parts=parts,
    )


def _run_part(protocol: Protocol, data_root: Path, model_dir: Path, action: str | None, cache_dir: Path,
              media: Path | None, seed: int, input_mode: InputMode, device: str, progress: bool) -> PartResult:
    config = ModelConfig.load(model_dir)
    if not (model_dir / HEAD_WEIGHTS).is_file():
        raise ModelDirError(f"{model_dir} is missing {HEAD_WEIGHTS}")
    model_extractor = FeatureExtractor.from_model_dir(model_dir, device=device, config=config)
    preprocessing = protocol.input_for(config.preprocessing_obj, input_mode)
    clips = config.clip_protocol
    if clips.frames_needed > preprocessing.num_frames:
        raise ProtocolError(f"{model_dir}: its clips need {clips.frames_needed} frames; {protocol.name} reads "
                            f"{preprocessing.num_frames}")
    extractor = FeatureExtractor(model_extractor.backbone, config.backbone, preprocessing, clips, device=device)
    head = build_head(config.head, config.backbone.feature_dim, config.labels.scale, config.head_config,
                      load_file(str(model_dir / HEAD_WEIGHTS)))

    split = load_protocol_split(protocol, data_root, action=action, media=media)
    execution = config.labels.kind == "execution"
    if execution and any(not r.difficulty for r in split.train + split.test):
        raise ProtocolError(f"{model_dir} regresses execution scores (final / difficulty), but {protocol.name}'s "
                            "dives do not all have a difficulty")
    voters = [choose_exemplars(q, split.train, protocol.exemplar_rule, protocol.num_exemplars, seed)
              if head.uses_exemplars else [] for q in split.test]
    needed = sorted({i for chosen in voters for i in chosen})

    cache = FeatureCache(cache_dir, extractor.fingerprint, preprocessing, extractor)
    test_features = cache.get_many(split.test, progress=progress)
    exemplar_features = dict(zip(needed, cache.get_many([split.train[i] for i in needed], progress=progress)))

    def label(record: DiveRecord) -> float:
        return record.final_score / record.difficulty if execution else record.final_score

    rows = []
    for record, features, chosen in zip(split.test, test_features, voters):
        if chosen:
            exemplars = torch.stack([exemplar_features[i] for i in chosen])
            labels = torch.tensor([label(split.train[i]) for i in chosen], dtype=torch.float32)
        else:
            exemplars, labels = features.new_zeros((0, *features.shape)), torch.zeros(0)
        votes = head.vote(features, exemplars, labels).votes.double()
        if chosen:
            weights = voting_weights(record, split.train, chosen, protocol.exemplar_rule)
            voted = float((votes * torch.as_tensor(weights)).sum())
        else:
            weights, voted = np.zeros(0), float(votes.mean())
        predicted = voted * (record.difficulty if execution else 1.0)
        rows.append({"key": record.key, "true": record.final_score, "predicted": predicted,
                     "difficulty": record.difficulty, "action_class": record.action_class,
                     "exemplars": [split.train[i].key for i in chosen], "exemplar_weights": weights.tolist()})
    metrics = reference_metrics([r["predicted"] for r in rows], [r["true"] for r in rows])
    return PartResult(
        model_dir=str(model_dir), model_id=config.model_id, head=config.head, action=action, num_test=len(rows),
        num_exemplar_videos=len(needed), metrics=metrics, input=preprocessing.to_dict(),
        differences=setting_differences(protocol, config, preprocessing, input_mode), predictions=rows,
    )


def setting_differences(protocol: Protocol, config: ModelConfig, preprocessing: Preprocessing,
                        input_mode: InputMode) -> list[str]:
    """Human-readable settings of this run that differ from the reference's."""
    found = []
    reference = protocol.reference_input.to_dict()
    used = preprocessing.to_dict()
    for name in sorted(set(reference) | set(used)):
        if name == "resize" and "stretch_to" in reference and "stretch_to" in used:
            continue  # not used when stretching
        if reference.get(name) != used.get(name):
            found.append(f"input {name}: {used.get(name, 'default')} (reference {reference.get(name, 'default')})")
    if config.clip_protocol != protocol.reference_clips:
        found.append(f"clips: {config.clip_protocol.num_clips} of {config.clip_protocol.length} frames "
                     f"(reference {protocol.reference_clips.num_clips} of {protocol.reference_clips.length})")
    if config.labels.kind != protocol.reference_labels:
        found.append(f"labels: the model regresses {config.labels.kind} scores (reference {protocol.reference_labels})")
    elif protocol.reference_label_scale not in (None, config.labels.scale):
        found.append(f"label scale: {config.labels.scale:g} (reference {protocol.reference_label_scale:g})")
    return found


def _listing(items: list[str]) -> str:
    return ", ".join(items[:_MAX_LISTED]) + (f", ... ({len(items)} in all)" if len(items) > _MAX_LISTED else "")
