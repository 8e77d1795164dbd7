"""The model and exemplar bank, loaded once per worker process and shared by every job it runs.

Device: ``AQA_DEVICE=auto`` takes CUDA when torch sees a GPU, else the CPU. Runtime: ``torch``, or
``onnx`` (the backbone in onnxruntime from the model directory's ``backbone.onnx``; a directory without
one, or with one made from other weights, is a configuration error). Threads: ``AQA_TORCH_THREADS``, or
else an equal share of this machine's CPUs for each of a worker's processes.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import torch

from exemplar_bank.bank import BankError
from models.model_dir import ModelDirError
from models.scorer import Scorer
from service.schemas import ExemplarInfo, ModelDescription, ModelInfo
from service.settings import ConfigurationError, ServiceSettings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_scorers: dict[tuple[str, str, str], Scorer] = {}


def select_device(requested: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; an explicit 'cuda' without a GPU is an error."""
    cuda = torch.cuda.is_available()
    if requested == "auto":
        return "cuda" if cuda else "cpu"
    if requested == "cuda" and not cuda:
        raise ConfigurationError("AQA_DEVICE=cuda, but torch sees no CUDA device here. Use AQA_DEVICE=auto or cpu.")
    return requested


def threads_per_process(settings: ServiceSettings, processes: int) -> int:
    """Intra-op threads of one of ``processes`` worker processes sharing this machine (0: the runtime's default).

    ``AQA_TORCH_THREADS`` when set; else each process gets an equal share of the CPUs it may run on, so
    that N pool processes do not start N full-size thread pools on the same cores.
    """
    if settings.torch_threads or processes <= 1:
        return settings.torch_threads
    return max(1, len(os.sched_getaffinity(0)) // processes)


def get_scorer(settings: ServiceSettings, threads: int | None = None) -> Scorer:
    """This process's scorer for the configured model, loaded on first use (thread-safe).

    ``threads``: intra-op threads of torch and onnxruntime (default ``AQA_TORCH_THREADS``; 0: their default).
    """
    settings.check_runtime()
    threads = settings.torch_threads if threads is None else threads
    device = select_device(settings.device)
    key = (str(settings.model_dir.resolve()), device, settings.runtime)
    if threads:  # the calling thread's OpenMP pool: torch.get_num_threads reports another thread's setting
        torch.set_num_threads(threads)
    with _lock:
        scorer = _scorers.get(key)
        if scorer is None:
            scorer = _scorers[key] = _load(settings, device, threads)
    return scorer


def _load(settings: ServiceSettings, device: str, threads: int) -> Scorer:
    settings.check_model_dir()
    start = time.perf_counter()
    try:
        scorer = Scorer.from_dir(settings.model_dir, device=device, runtime=settings.runtime, onnx_threads=threads)
    except (ModelDirError, BankError, OSError, ValueError) as exc:
        raise ConfigurationError(f"The model in {settings.model_dir} could not be loaded: {exc}") from exc
    ref = scorer.model_ref
    log.info("loaded model %s %s (%s, %d exemplars) on %s with %s in %.1f s", ref.id, ref.version,
             ref.fingerprint, len(scorer.bank), device, settings.runtime, time.perf_counter() - start)
    return scorer


def describe(scorer: Scorer, settings: ServiceSettings) -> ModelDescription:
    """What a worker announces about its loaded model (for GET /v1/models and /v1/exemplars)."""
    config = scorer.config
    info = ModelInfo(
        model=scorer.model_ref,
        label_kind=config.labels.kind,
        num_exemplars=len(scorer.bank),
        votes_per_score=config.voting.num_exemplars,
        selection=config.voting.strategy,
        interval_method="conformal" if config.calibration is not None else "votes",
        device=select_device(settings.device),
        runtime=scorer.extractor.runtime,
    )
    exemplars = [
        ExemplarInfo(id=e.id, final_score=e.final_score, difficulty=e.difficulty, action_class=e.action_class)
        for e in scorer.bank.exemplars
    ]
    return ModelDescription(info=info, exemplars=exemplars)
