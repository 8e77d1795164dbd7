"""The bundled demo model: it loads with its bank, scores a dive it never saw, and the README quotes its card."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from models.pretrained import DEMO_MODEL_DIR
from models.scorer import QueryLabels, Scorer
from training.demo import FRESH_SET
from training.synth.generate import generate_dataset

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def demo_scorer() -> Scorer:
    return Scorer.from_dir(DEMO_MODEL_DIR)


def test_the_demo_model_scores_an_unseen_synthetic_dive(demo_scorer: Scorer, tmp_path: Path) -> None:
    card = json.loads((DEMO_MODEL_DIR / "model_card.json").read_text())
    generate_dataset(tmp_path, n=1, seed=4242, progress=False)
    result = demo_scorer.score(tmp_path / "videos" / "dive_00000.mp4", QueryLabels(difficulty=3.0))
    assert math.isfinite(result.score) and result.interval.low <= result.score <= result.interval.high
    assert len(result.votes) == demo_scorer.config.voting.num_exemplars
    assert result.difficulty_source == "given" and result.model.id == "synth-dive-core"
    assert len(demo_scorer.bank) == card["data"]["bank_exemplars"] == card["data"]["train"] + card["data"]["validation"]


def test_the_readme_quotes_the_model_cards_fresh_set_numbers() -> None:
    card = json.loads((DEMO_MODEL_DIR / "model_card.json").read_text())
    fresh = card["evaluations"][FRESH_SET]
    assert fresh["num_dives"] == 300
    row = next(line for line in README.read_text().splitlines() if line.startswith("| fresh set (seed 7), difficulty given"))
    quoted = [f"{fresh['final']['spearman']:.3f}", f"{fresh['final']['relative_l2_x100']:.2f}",
              f"{fresh['execution']['spearman']:.3f}", f"{fresh['execution']['relative_l2_x100']:.2f}",
              f"{fresh['difficulty_only_spearman']:.3f}"]
    assert [cell.strip() for cell in row.strip("|").split("|")][1:6] == quoted
