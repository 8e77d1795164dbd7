"""TPT and PCLN models served end to end: a real `aqa serve` (uvicorn, embedded workers) per head.

The served result must equal the scoring core's for the same file, evidence included: TPT's temporal
parts (spans in clips and seconds) and PCLN's exemplar-free regression (no votes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from models.scorer import QueryLabels, Scorer
from service.client import ScoringClient
from tests.service_processes import free_port, service_env, start_api

pytestmark = pytest.mark.slow

KEY = "heads-score-key"


@pytest.fixture(params=["tpt", "pcln"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(URL, model directory) of a running server for the parametrised head."""
    model_dir = request.getfixturevalue(f"{request.param}_model_dir")
    env = service_env(model_dir=model_dir, data_dir=tmp_path, port=free_port(),
                      api_keys=f"{KEY}:score")
    process, url = start_api(env, tmp_path / "api.log")
    try:
        yield url, model_dir
    finally:
        process.stop()


def test_a_served_head_returns_the_scoring_cores_result_and_evidence(served: tuple[str, Path],
                                                                     tiny_dataset: Path) -> None:
    url, model_dir = served
    video = tiny_dataset / "videos" / "dive_00003.mp4"
    with ScoringClient(url, api_key=KEY) as client:
        job = client.score(video, difficulty=3.1, timeout=120)
        models = client.models()
    expected = Scorer.from_dir(model_dir).score(video, QueryLabels(difficulty=3.1))
    assert job.status.value == "done"
    result = job.result
    assert result.model == expected.model and result.model.head in ("tpt", "pcln")
    assert result.score == pytest.approx(expected.score, rel=1e-6)
    if result.model.head == "tpt":
        assert not result.exemplar_free and [v.id for v in result.votes] == [v.id for v in expected.votes]
        parts = result.evidence["parts"]
        assert len(parts) == len(expected.evidence["parts"]) > 0
        for served_part, core_part in zip(parts, expected.evidence["parts"]):
            assert served_part["span_clips"] == core_part["span_clips"]
            assert served_part["span_seconds"] == pytest.approx(core_part["span_seconds"], abs=1e-6)
    else:
        assert result.exemplar_free and result.votes == [] and result.evidence == {"exemplar_free": True}
    assert [m.model for m in models] == [expected.model]
