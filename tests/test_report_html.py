"""The HTML evaluation report: written by `aqa train` and `aqa eval --out`, self-contained, with every plot."""

from __future__ import annotations

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from models.pretrained import DEMO_MODEL_DIR
from training.pipeline import evaluate_model_dir
from training.report_html import REPORT_HTML, main, write_html_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ReportParser(HTMLParser):
    """Collects what a self-contained page must not have (outside references, scripts) and its images."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[bytes] = []
        self.external: list[str] = []
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                if value.startswith("data:image/png;base64,"):
                    self.images.append(base64.b64decode(value.split(",", 1)[1]))
                else:
                    self.external.append(value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    assert not parser.external, f"{path} refers to outside resources: {parser.external}"
    assert not parser.tags & {"script", "link", "iframe"}
    assert parser.images and all(image.startswith(PNG_SIGNATURE) for image in parser.images)
    return parser


def test_training_writes_a_self_contained_report_with_every_plot(tiny_model_dir: Path) -> None:
    report = parse(tiny_model_dir / "report" / REPORT_HTML)
    text = " ".join(report.text)
    evaluation = json.loads((tiny_model_dir / "report" / "evaluation.json").read_text())
    assert len(report.images) == 4  # scatter, error by difficulty, coverage per difficulty, vote spread
    for heading in ("Error by difficulty degree", "Interval coverage", "Vote spread and error"):
        assert heading in text
    assert f"{evaluation['final']['spearman']:.3f}" in text
    assert f"{evaluation['interval_coverage']:.1%}" in text
    assert "TPT" not in text  # a CoRe model has no temporal parts


def test_a_tpt_report_shows_the_parts_of_a_few_dives(tpt_model_dir: Path) -> None:
    evaluation = json.loads((tpt_model_dir / "report" / "evaluation.json").read_text())
    parts = [row["tpt_parts"] for row in evaluation["predictions"]]
    assert all(len(p) == len(parts[0]) > 1 for p in parts)
    for part in (p for dive in parts for p in dive):
        low, high = part["span"]
        assert 0.0 <= low <= high <= 1.0 and 0.0 <= part["centre"] <= 1.0
    report = parse(tpt_model_dir / "report" / REPORT_HTML)
    assert "TPT's temporal parts" in " ".join(report.text) and len(report.images) == 5


def test_aqa_eval_out_writes_the_report_and_it_can_be_rebuilt_from_its_json(tiny_model_dir: Path, tiny_dataset: Path,
                                                                           tmp_path: Path) -> None:
    subset = tmp_path / "eight-dives"  # the first 8 dives of the tiny set: enough for every plot, quick to embed
    subset.mkdir()
    (subset / "videos").symlink_to(tiny_dataset / "videos")
    (subset / "labels.csv").write_text("".join((tiny_dataset / "labels.csv").read_text().splitlines(True)[:9]))
    out = tmp_path / "eval"
    evaluation = evaluate_model_dir(tiny_model_dir, subset / "labels.csv", cache_dir=tmp_path / "cache", out=out,
                                    progress=False)
    assert evaluation.num_dives == 8
    report = parse(out / REPORT_HTML)
    assert f"{evaluation.final['relative_l2_x100']:.2f}" in " ".join(report.text)
    copy = tmp_path / "copy" / "evaluation.json"
    copy.parent.mkdir()
    shutil.copy(out / "evaluation.json", copy)
    assert main([str(copy), "--title", "rebuilt"]) == 0
    rebuilt = parse(copy.with_name(REPORT_HTML))
    assert "rebuilt" in rebuilt.text and len(rebuilt.images) == len(report.images)


def test_the_demo_models_report_is_committed_beside_its_card() -> None:
    evaluation = json.loads((DEMO_MODEL_DIR / "report" / "evaluation.json").read_text())
    report = parse(DEMO_MODEL_DIR / "report" / REPORT_HTML)
    text = " ".join(report.text)
    assert f"{evaluation['num_dives']} dives the model never saw" in text
    for value in (evaluation["final"]["spearman"], evaluation["execution"]["spearman"],
                  evaluation["difficulty_only_spearman"]):
        assert f"{value:.3f}" in text
    assert f"{evaluation['interval_coverage']:.1%}" in text
    assert "What it reads of the synthetic faults" in text


def test_an_evaluation_without_predictions_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no predictions"):
        write_html_report({"predictions": []}, tmp_path / REPORT_HTML, "empty")
