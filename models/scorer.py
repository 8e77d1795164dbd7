"""The scoring core: ``Scorer.score(video) -> ScoreResult``.

One implementation for every caller (CLI, embedded worker, Celery task, ``aqa batch``, tests)::

    video --decode--> frames --backbone--> per-clip features --bank--> M exemplars --head--> votes

Multi-exemplar voting (CoRe, Yu et al. 2021, Sec. 3.3): s = (1/M) sum_m (R(f, f_m) + s_m). Exemplar
features come from the bank; the M head evaluations run as one batch. Several decoded videos can be
scored together (:meth:`Scorer.score_decoded`): their clips go through the backbone in one forward pass,
then each votes on its own; :meth:`Scorer.score_stream` decodes ahead in other threads meanwhile.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from exemplar_bank.bank import ExemplarBank
from exemplar_bank.familiarity import FamiliarityCalibration, FamiliarityCheck, prior_band
from exemplar_bank.selection import ExemplarIndex, Selection
from models.backbone_runtime import RuntimeSetting
from models.clips import ClipProtocol
from models.feature_extractor import FeatureExtractor
from models.heads import ScoringHead, build_head
from models.lav import alignment_path
from models.model_dir import BANK_DIR, HEAD_WEIGHTS, ModelConfig, ModelDirError
from models.results import ExemplarVote, Interval, ModelRef, ScoreResult, VideoSummary
from models.stream_threads import DECODES_IN_FLIGHT, DecodeSlots
from video.decode import DecodedVideo, VideoLimits, decode_video
from video.probe import DEFAULT_LIMITS

DIFFICULTY_NEIGHBOURS = 10
DECODE_WORKERS = 2
MAX_BATCH = 8


@dataclass(frozen=True)
class QueryLabels:
    """What the caller knows about the dive; unknown fields are None."""

    difficulty: float | None = None
    action_class: str | None = None


@dataclass(frozen=True)
class ScoreRequest:
    """A video to score and what the caller knows about it."""

    path: Path
    labels: QueryLabels = QueryLabels()


@dataclass(frozen=True)
class DecodedQuery:
    """A decoded video waiting for its score, with what the caller knows and how long decoding took."""

    decoded: DecodedVideo
    labels: QueryLabels = QueryLabels()
    decode_seconds: float = 0.0


class Scorer:
    """A loaded model: feature extractor, head and exemplar bank, ready to score videos."""

    def __init__(self, config: ModelConfig, extractor: FeatureExtractor, head: ScoringHead, bank: ExemplarBank,
                 familiarity: FamiliarityCalibration | None = None) -> None:
        bank.check_fingerprint(extractor.fingerprint)
        self.config = config
        self.extractor = extractor
        self.head = head
        self.bank = bank
        self.fingerprint = extractor.fingerprint
        self.preprocessing = extractor.preprocessing
        self.exemplar_index = ExemplarIndex(bank)
        self._bank_labels = torch.tensor([self._label_of(e.final_score, e.difficulty) for e in bank.exemplars])
        self.familiarity = FamiliarityCheck(familiarity, bank) if familiarity is not None else None

    @classmethod
    def from_dir(cls, model_dir: Path, device: str = "cpu", runtime: RuntimeSetting = "auto", onnx_threads: int = 0,
                 ) -> Scorer:
        """Load a model directory; the bank must carry this backbone's feature fingerprint.

        ``runtime``: the backbone's runtime, by default the one measured fastest on this machine
        (``runtime.json``; see :meth:`FeatureExtractor.from_model_dir`); ``onnx_threads``: ONNX Runtime's
        intra-op threads.
        """
        model_dir = Path(model_dir)
        config = ModelConfig.load(model_dir)
        extractor = FeatureExtractor.from_model_dir(model_dir, device=device, config=config, runtime=runtime,
                                                    onnx_threads=onnx_threads)
        if not (model_dir / HEAD_WEIGHTS).is_file():
            raise ModelDirError(f"{model_dir} is missing {HEAD_WEIGHTS}")
        head = build_head(config.head, config.backbone.feature_dim, config.labels.scale, config.head_config,
                          load_file(str(model_dir / HEAD_WEIGHTS)))
        bank = ExemplarBank.load(model_dir / BANK_DIR, expected_fingerprint=extractor.fingerprint)
        return cls(config, extractor, head, bank, FamiliarityCalibration.load(model_dir))

    @property
    def model_ref(self) -> ModelRef:
        return ModelRef(id=self.config.model_id, version=self.config.version, head=self.config.head,
                        fingerprint=self.fingerprint)

    def _label_of(self, final_score: float, difficulty: float | None) -> float:
        if self.config.labels.kind == "execution":
            if not difficulty:
                raise ValueError("an execution-label model needs every exemplar's difficulty")
            return final_score / difficulty
        return final_score

    def extract_features(self, decoded: DecodedVideo) -> torch.Tensor:
        """uint8 frames (T, H, W, 3) -> per-clip features (num_clips, D)."""
        return self.extractor(decoded)

    def decode(self, path: Path, limits: VideoLimits = DEFAULT_LIMITS, codec_threads: bool = True) -> DecodedQuery:
        """Decode a video as this model reads it (raises video.errors.VideoError for unusable files);
        ``codec_threads``: FFmpeg's own decoding threads (see :func:`video.decode.decode_video`)."""
        start = time.perf_counter()
        decoded = decode_video(Path(path), self.preprocessing, limits, codec_threads=codec_threads)
        return DecodedQuery(decoded, decode_seconds=time.perf_counter() - start)

    def score(self, path: Path, labels: QueryLabels = QueryLabels(), limits: VideoLimits = DEFAULT_LIMITS,
              exclude_ids: frozenset[str] = frozenset()) -> ScoreResult:
        """Decode, extract features and vote. Raises video.errors.VideoError for unusable files."""
        query = self.decode(path, limits)
        return self.score_decoded([replace(query, labels=labels)], exclude_ids)[0]

    def score_stream(self, requests: Iterable[ScoreRequest], limits: VideoLimits = DEFAULT_LIMITS,
                     decode_workers: int = DECODE_WORKERS, max_batch: int = MAX_BATCH,
                     ) -> Iterator[tuple[ScoreRequest, ScoreResult | Exception]]:
        """Score many videos, pipelined; yields ``(request, result or the exception it raised)`` in request order.

        ``decode_workers`` threads decode ahead (at most ``2 * max_batch`` videos held decoded) while this thread
        runs the backbone and the votes on those already decoded; whatever is decoded when the backbone is free
        (the next video, waited for, then up to ``max_batch`` in all that are ready) goes through it in one
        forward pass. How the cores are shared (``models.stream_threads``): one decode runs while this thread
        computes and every decoder while it waits for one (:class:`DecodeSlots`); a lone request's decode uses
        FFmpeg's own threads, the others one thread each; on the CPU, while a decode is in flight, the backbone
        runs in its eager form on one torch thread (:data:`DECODES_IN_FLIGHT`; ``sharing_cores`` of
        :meth:`FeatureExtractor.from_frames`), whichever runtime serves lone videos.
        """
        pending: deque[tuple[ScoreRequest, Future[DecodedQuery]]] = deque()
        queue = iter(requests)
        narrow = self.extractor.can_share_cores
        slots = DecodeSlots(decode_workers)
        submitted = 0
        decoding = False

        def decode(ticket: int, path: Path, codec_threads: bool) -> DecodedQuery:
            with slots.decoding(ticket):
                return self.decode(path, limits, codec_threads)

        with ThreadPoolExecutor(decode_workers, thread_name_prefix="decode") as pool:
            def top_up() -> None:
                nonlocal submitted
                batch = list(islice(queue, 2 * max_batch - len(pending)))
                lone = len(batch) == 1 and not pending  # nothing else to decode: FFmpeg's threads may have the cores
                for request in batch:
                    pending.append((request, pool.submit(decode, submitted, request.path, lone)))
                    submitted += 1

            top_up()
            try:
                while pending:
                    ready: list[tuple[ScoreRequest, DecodedQuery]] = []
                    while pending and len(ready) < max_batch and (not ready or pending[0][1].done()):
                        request, future = pending.popleft()
                        if not future.done():
                            with slots.scorer_waiting():
                                wait([future])
                        error = future.exception()
                        if error is not None:
                            yield from self._score_ready(ready, decoding)
                            ready = []
                            yield request, error
                        else:
                            ready.append((request, replace(future.result(), labels=request.labels)))
                    top_up()
                    now_decoding = narrow and any(not future.done() for _, future in pending)
                    if now_decoding and not decoding:
                        DECODES_IN_FLIGHT.enter()
                    elif decoding and not now_decoding:
                        DECODES_IN_FLIGHT.leave()
                    decoding = now_decoding
                    yield from self._score_ready(ready, decoding)
            finally:
                if decoding:
                    DECODES_IN_FLIGHT.leave()
                slots.close()

    def _score_ready(self, ready: list[tuple[ScoreRequest, DecodedQuery]], sharing_cores: bool,
                     ) -> Iterator[tuple[ScoreRequest, ScoreResult | Exception]]:
        """One forward pass for the decoded videos; if it fails, each alone, so every failure has its video."""
        if not ready:
            return
        try:
            results: list[ScoreResult | Exception] = list(
                self.score_decoded([query for _, query in ready], sharing_cores=sharing_cores))
        except Exception:  # noqa: BLE001 - attributed below, video by video
            results = []
            for _, query in ready:
                try:
                    results.append(self.score_decoded([query], sharing_cores=sharing_cores)[0])
                except Exception as exc:  # noqa: BLE001 - handed to the caller with its video
                    results.append(exc)
        yield from zip((request for request, _ in ready), results)

    def score_decoded(self, queries: Sequence[DecodedQuery], exclude_ids: frozenset[str] = frozenset(),
                      sharing_cores: bool = False) -> list[ScoreResult]:
        """Score decoded videos: all their clips through the backbone in one forward pass, then each one's vote.

        A result's ``timings`` give its own decode and voting seconds and an equal share of the forward pass.
        ``sharing_cores``: decodes hold cores meanwhile (see :meth:`FeatureExtractor.from_frames`).
        """
        start = time.perf_counter()
        features = self.extractor.from_frames(np.stack([query.decoded.frames for query in queries]), sharing_cores)
        features_seconds = (time.perf_counter() - start) / len(queries)
        results = []
        for query, clip_features in zip(queries, features):
            start = time.perf_counter()
            result = self.score_features(clip_features, query.labels, exclude_ids=exclude_ids)
            add_clip_seconds(result.evidence, self.extractor.clips, query.decoded.timestamps)
            result.video = video_summary(query.decoded)
            self._check_familiarity(result, clip_features.mean(0), result.video)
            voting_seconds = time.perf_counter() - start
            result.timings = {"decode": query.decode_seconds, "features": features_seconds, "voting": voting_seconds,
                              "total": query.decode_seconds + features_seconds + voting_seconds}
            result.batch_jobs = len(queries)
            results.append(result)
        return results

    def score_features(self, clip_features: torch.Tensor, labels: QueryLabels = QueryLabels(),
                       exclude_ids: frozenset[str] = frozenset()) -> ScoreResult:
        """Vote with precomputed per-clip features (num_clips, D) of the query."""
        pooled = clip_features.mean(0)
        uses_difficulty = self.config.labels.kind == "execution"
        difficulty, source = labels.difficulty, "given"
        distances = self.exemplar_index.distances(pooled) if len(self.bank) else None  # cosine, to every exemplar
        if uses_difficulty and difficulty is None:
            difficulty, source = self.estimate_difficulty(pooled, distances), "estimated"
        if self.head.uses_exemplars:
            selection = self.exemplar_index.select(
                distances, self.config.voting.num_exemplars, difficulty=difficulty,
                action_class=labels.action_class, strategy=self.config.voting.strategy, exclude_ids=exclude_ids,
            )
        else:
            selection = Selection(indices=[], reasons=[])
        index = torch.tensor(selection.indices, dtype=torch.long)
        head_votes = self.head.vote(clip_features, self.bank.clip_features[index], self._bank_labels[index])
        factor = difficulty if uses_difficulty else 1.0
        final_votes = head_votes.votes.double().numpy() * factor
        score_range = self._final_score_range(factor)
        score = float(np.clip(final_votes.mean(), *score_range))
        votes = [
            ExemplarVote(
                id=self.bank.exemplars[i].id, final_score=self.bank.exemplars[i].final_score,
                label=float(self._bank_labels[i]), relative=float(head_votes.relative[k]),
                vote=float(head_votes.votes[k]), difficulty=self.bank.exemplars[i].difficulty,
                action_class=self.bank.exemplars[i].action_class, selected_because=selection.reasons[k],
                evidence=head_votes.per_exemplar_evidence[k] if head_votes.per_exemplar_evidence else {},
            )
            for k, i in enumerate(selection.indices)
        ]
        evidence = dict(head_votes.evidence)
        if self.config.alignment_evidence:
            evidence.update(self._alignment(clip_features, pooled, selection.indices, exclude_ids))
        result = ScoreResult(
            score=score,
            exemplar_free=not self.head.uses_exemplars,
            interval=self._interval(score, final_votes, factor, score_range),
            execution_score=score / difficulty if uses_difficulty else None,
            difficulty=difficulty if uses_difficulty else None,
            difficulty_source=source if uses_difficulty else "not_used",
            action_class=labels.action_class,
            vote_spread=float(final_votes.std(ddof=1)) if len(final_votes) > 1 else 0.0,
            votes=votes,
            evidence=evidence,
            model=self.model_ref,
        )
        self._check_familiarity(result, pooled)
        return result

    def _check_familiarity(self, result: ScoreResult, pooled: torch.Tensor, video: VideoSummary | None = None,
                           ) -> None:
        """Attach the query's familiarity (exemplar_bank.familiarity); the interval of an unfamiliar query
        becomes the hull of its conformal band and the central 90% of the bank's scores (at the given
        difficulty when the head regresses execution, else of final scores): never a narrow band around a
        guess the model cannot vouch for."""
        if self.familiarity is None:
            return
        result.familiarity = self.familiarity.assess(pooled, video)
        if result.familiarity.in_distribution:
            return
        if result.difficulty_source == "given":
            low, high = (result.difficulty * bound for bound in prior_band(self._bank_labels.numpy()))
        else:
            low, high = prior_band(np.array([e.final_score for e in self.bank.exemplars]))
        result.interval = Interval(low=min(result.interval.low, low), high=max(result.interval.high, high),
                                   method="unfamiliar")

    def _alignment(self, clip_features: torch.Tensor, pooled: torch.Tensor, voters: list[int],
                   exclude_ids: frozenset[str]) -> dict[str, dict]:
        """LAV evidence: the hard DTW path from the query's clips to those of the nearest exemplar (cosine of
        clip averages) among the voters, or among the whole bank for exemplar-free heads."""
        candidates = voters or [i for i, e in enumerate(self.bank.exemplars) if e.id not in exclude_ids]
        if not candidates:
            return {}
        similarity = F.normalize(self.bank.pooled_features[candidates], dim=1) @ F.normalize(pooled.float(), dim=0)
        nearest = candidates[int(similarity.argmax())]
        path = alignment_path(clip_features, self.bank.clip_features[nearest])
        return {"alignment": {"exemplar_id": self.bank.exemplars[nearest].id, **path}}

    def estimate_difficulty(self, pooled: torch.Tensor, distances: np.ndarray | None = None) -> float:
        """Most common difficulty among the nearest bank exemplars (cosine distance; ``distances`` to the bank
        when already computed)."""
        if distances is None:
            distances = self.exemplar_index.distances(pooled)
        selection = self.exemplar_index.select(distances, DIFFICULTY_NEIGHBOURS, strategy="nearest")
        counts = Counter(self.bank.exemplars[i].difficulty for i in selection.indices)
        return float(counts.most_common(1)[0][0])

    def _final_score_range(self, factor: float) -> tuple[float, float]:
        """Final scores a panel can give: 0 to the label scale times the difficulty when the head regresses
        execution (three judges' 0-10 marks sum to at most 30), 0 and up for a final-score head."""
        if self.config.labels.kind == "execution":
            return 0.0, self.config.labels.scale * factor
        return 0.0, float("inf")

    def _interval(self, score: float, final_votes: np.ndarray, factor: float,
                  score_range: tuple[float, float]) -> Interval:
        """The 90% band around ``score`` (conformal, else the votes' 5th-95th percentiles), cut to the scores a
        panel can give: a small or unfamiliar model's band would otherwise reach below 0."""
        calibration = self.config.calibration
        if calibration is not None:
            half = calibration.abs_residual_q90 * factor
            low, high, method = score - half, score + half, "conformal"
        else:
            low, high = np.percentile(final_votes, [5, 95]) if len(final_votes) > 1 else (score, score)
            method = "votes"
        low, high = np.clip([low, high], *score_range)
        return Interval(low=float(low), high=float(high), method=method)


def video_summary(decoded: DecodedVideo) -> VideoSummary:
    """The source video as the result reports it, with the frames and seconds the model read."""
    info = decoded.info
    seconds = (round(float(decoded.timestamps[0]), 3), round(float(decoded.timestamps[-1]), 3))
    return VideoSummary(codec=info.codec, width=info.width, height=info.height, fps=info.fps,
                        duration_seconds=info.duration_seconds, frame_count=info.frame_count,
                        frames_read=(int(decoded.frame_indices[0]), int(decoded.frame_indices[-1])),
                        seconds_read=seconds if all(np.isfinite(seconds)) else None)


def add_clip_seconds(evidence: dict, clips: ClipProtocol, timestamps: np.ndarray) -> None:
    """Put seconds of the video beside clip-index evidence (in place): each TPT part's ``span_seconds``
    [first clip's first frame, last clip's last frame] and ``centre_seconds`` (the fractional centre clip
    interpolated between clip mid-times), and the LAV alignment's ``query_clip_seconds`` (each query clip's
    [start, end]). Clip k covers sampled frames ``starts[k] .. starts[k] + length - 1``; None where the
    source has no timing."""
    if "parts" not in evidence and "alignment" not in evidence:
        return
    starts = np.asarray(clips.starts)
    begin, end = timestamps[starts], timestamps[starts + clips.length - 1]

    def seconds(value: float) -> float | None:
        return round(float(value), 3) if np.isfinite(value) else None

    for part in evidence.get("parts", []):
        first, last = part["span_clips"]
        part["span_seconds"] = [seconds(begin[first]), seconds(end[last])]
        part["centre_seconds"] = seconds(np.interp(part["centre_clip"], np.arange(len(starts)), (begin + end) / 2))
    if "alignment" in evidence:
        evidence["alignment"]["query_clip_seconds"] = [[seconds(a), seconds(b)] for a, b in zip(begin, end)]
