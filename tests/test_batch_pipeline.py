"""Pipelined scoring (``Scorer.score_stream``, what ``aqa batch`` runs embedded): decoding ahead and several
videos per backbone forward give the scores of scoring each video alone, in order, with failures in place."""

from __future__ import annotations

import ctypes
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from models.scorer import QueryLabels, Scorer, ScoreRequest
from models.stream_threads import DECODES_IN_FLIGHT, DecodeSlots, StreamClosed
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


def _started_within(thread_start: threading.Event, seconds: float = 0.5) -> bool:
    return thread_start.wait(seconds)


def test_decode_slots_keep_order_and_free_the_scorers_core_only_while_it_waits() -> None:
    """Ticket 1 may not pass ticket 0; while the scorer computes one decode runs, while it waits two."""
    slots = DecodeSlots(2)
    started = {ticket: threading.Event() for ticket in range(3)}
    finish = {ticket: threading.Event() for ticket in range(3)}

    def decoder(ticket: int) -> None:
        with slots.decoding(ticket):
            started[ticket].set()
            finish[ticket].wait(5)

    threads = {ticket: threading.Thread(target=decoder, args=(ticket,)) for ticket in range(3)}
    threads[1].start()
    assert not _started_within(started[1], 0.2)  # ticket 0 has not started: 1 waits its turn
    threads[0].start()
    assert _started_within(started[0])
    assert not _started_within(started[1], 0.2)  # the scorer computes: one decode at a time
    with slots.scorer_waiting():
        assert _started_within(started[1])  # the scorer's core is free: a second decode
        threads[2].start()
        assert not _started_within(started[2], 0.2)  # never more than the two workers
        finish[0].set()
        assert _started_within(started[2])
    finish[1].set()
    finish[2].set()
    for thread in threads.values():
        thread.join(5)


def test_closed_slots_release_waiting_decoders() -> None:
    slots = DecodeSlots(2)
    errors: list[BaseException] = []

    def decoder() -> None:
        try:
            with slots.decoding(5):  # tickets 0-4 never come: it would wait for ever
                pass
        except StreamClosed as error:
            errors.append(error)

    thread = threading.Thread(target=decoder)
    thread.start()
    slots.close()
    thread.join(5)
    assert not thread.is_alive() and len(errors) == 1


def test_a_stream_left_early_decodes_no_more_videos(scorer: Scorer, tiny_dataset: Path) -> None:
    """The consumer stops after the first result: the videos queued behind it are not decoded any more."""
    videos = sorted((tiny_dataset / "videos").glob("*.mp4"))
    requests = [ScoreRequest(videos[k % len(videos)]) for k in range(40)]
    decoded: list[Path] = []
    decode = scorer.decode

    def counting_decode(path: Path, *args: object) -> object:
        decoded.append(path)
        time.sleep(0.05)  # a decode slower than the tiny model's forward, as real videos are
        return decode(path, *args)

    scorer.decode = counting_decode  # type: ignore[method-assign]
    try:
        stream = scorer.score_stream(requests, max_batch=4)
        next(stream)
        stream.close()
    finally:
        del scorer.decode
    # the first video, and those in flight at the close; before, all it had queued (10 here) were decoded
    assert len(decoded) <= 5


def _openmp_threads_of_this_thread() -> int:
    """The calling thread's OpenMP pool size, from the runtime torch loaded (torch.get_num_threads reports a
    process-wide value instead)."""
    library = next(line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                   if "libgomp" in line or "libiomp" in line)
    return int(ctypes.CDLL(library).omp_get_max_threads())


def test_each_streams_thread_gets_its_own_pool_back() -> None:
    """Two scoring threads cut their pools; the first to leave must restore its own (it used to be left on one
    thread for the rest of the process, because only the last stream out restored, on its own thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    both_in, first_out = threading.Barrier(2), threading.Event()
    seen: dict[str, tuple[int, int]] = {}

    def stream(name: str) -> None:
        torch.set_num_threads(2)  # this thread's pool as a worker configures it
        DECODES_IN_FLIGHT.enter()
        narrowed = _openmp_threads_of_this_thread()
        both_in.wait(5)
        if name == "second":
            first_out.wait(5)
        DECODES_IN_FLIGHT.leave()
        if name == "first":
            first_out.set()
        seen[name] = (narrowed, _openmp_threads_of_this_thread())

    try:
        threads = [threading.Thread(target=stream, args=(name,)) for name in ("first", "second")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert seen == {"first": (1, 2), "second": (1, 2)}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
