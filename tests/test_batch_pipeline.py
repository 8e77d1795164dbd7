"""Pipelined scoring (``Scorer.score_stream``, what ``aqa batch`` runs embedded): decoding ahead and several
videos per backbone forward give the scores of scoring each video alone, in order, with failures in place."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from models.scorer import QueryLabels, Scorer, ScoreRequest
from video.errors import NotAVideoError


@pytest.fixture(scope="module")
def scorer(tiny_model_dir: Path) -> Scorer:
    return Scorer.from_dir(tiny_model_dir)


def test_pipelined_scores_equal_the_serial_ones(scorer: Scorer, tiny_dataset: Path, tmp_path: Path) -> None:
    videos = sorted((tiny_dataset / "videos").glob("*.mp4"))[:11]
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video\n")
    paths = videos[:5] + [broken] + videos[5:]
    requests = [ScoreRequest(path, QueryLabels(difficulty=2.0 + 0.2 * (k % 5) if k % 3 else None))
                for k, path in enumerate(paths)]
    outcomes = list(scorer.score_stream(requests, max_batch=4))
    assert [request for request, _ in outcomes] == requests  # in request order
    assert isinstance(outcomes[5][1], NotAVideoError)
    for request, outcome in outcomes[:5] + outcomes[6:]:
        alone = scorer.score(request.path, request.labels)
        assert [v.id for v in outcome.votes] == [v.id for v in alone.votes]
        assert outcome.score == pytest.approx(alone.score, abs=1e-5)
        assert outcome.difficulty == alone.difficulty and outcome.difficulty_source == alone.difficulty_source
        np.testing.assert_allclose([v.vote for v in outcome.votes], [v.vote for v in alone.votes], atol=1e-5)
        assert outcome.video == alone.video
        assert set(outcome.timings) == {"decode", "features", "voting", "total"}


def test_a_batch_of_decoded_videos_gets_each_ones_features(scorer: Scorer, tiny_dataset: Path) -> None:
    videos = sorted((tiny_dataset / "videos").glob("*.mp4"))[:3]
    queries = [scorer.decode(path) for path in videos]
    together = scorer.extractor.from_frames(np.stack([q.decoded.frames for q in queries]))
    for query, features in zip(queries, together):
        np.testing.assert_allclose(features.numpy(), scorer.extract_features(query.decoded).numpy(), atol=1e-5)


def test_duplicate_listings_each_get_a_result(scorer: Scorer, tiny_dataset: Path, tmp_path: Path) -> None:
    video = min((tiny_dataset / "videos").glob("*.mp4"))
    copy = tmp_path / "again.mp4"
    shutil.copy(video, copy)
    requests = [ScoreRequest(video), ScoreRequest(copy), ScoreRequest(video)]
    scores = [outcome.score for _, outcome in scorer.score_stream(requests, max_batch=2)]
    assert scores == pytest.approx([scores[0]] * 3, abs=1e-5)


def test_torch_gets_its_thread_count_back(scorer: Scorer, tiny_dataset: Path) -> None:
    """One intra-op thread while decodes are in flight (eager torch); the count it had after the stream, also one
    left early."""
    assert scorer.extractor.runtime == "torch"
    requests = [ScoreRequest(path) for path in sorted((tiny_dataset / "videos").glob("*.mp4"))[:6]]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert len(list(scorer.score_stream(requests, max_batch=2))) == len(requests)
        assert torch.get_num_threads() == 2
        stream = scorer.score_stream(requests, max_batch=2)
        next(stream)
        stream.close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_concurrent_streams_give_torch_its_thread_count_back(scorer: Scorer, tiny_dataset: Path) -> None:
    """Two scoring threads, as an embedded pool with AQA_EMBEDDED_WORKERS=2 runs them: whichever finishes
    last restores the count (a stream that saved the other's one thread would leave it there)."""
    requests = [ScoreRequest(path) for path in sorted((tiny_dataset / "videos").glob("*.mp4"))[:6]]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with ThreadPoolExecutor(2) as threads:
            outcomes = list(threads.map(lambda _: list(scorer.score_stream(requests, max_batch=2)), range(2)))
        assert [len(o) for o in outcomes] == [len(requests)] * 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
