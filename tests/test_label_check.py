"""The judge-rule label check on the real MTL-AQA annotations, a CSV and a FineDiving folder."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.paths import MTL_AQA_DIR
from training.datasets.label_check import (
    TOLERANCE,
    check_dataset,
    check_records,
    format_report,
    panel_score,
)
from training.datasets.records import DatasetError, DiveRecord


def test_panel_score_trims_seven_and_five_judge_panels() -> None:
    # 7 judges: drop 9.5, 9.5 (highest two) and 8.5, 8.5 (lowest two); 9 + 9 + 9.5 = 27.5.
    assert panel_score([9.5, 9.0, 9.5, 9.0, 8.5, 9.5, 8.5], 3.2) == pytest.approx(88.0)
    # 5 judges: drop 7.5 and 5.0; 6 + 6.5 + 7 = 19.5.
    assert panel_score([6.0, 7.5, 5.0, 6.5, 7.0], 2.0) == pytest.approx(39.0)
    with pytest.raises(ValueError, match="panel of 9 judges"):
        panel_score([7.0] * 9, 3.0)


def test_real_mtl_aqa_annotations() -> None:
    report = check_dataset(MTL_AQA_DIR)
    assert (report.total, report.checked, len(report.skipped)) == (1412, 1412, 0)
    assert report.exact == 1382  # the rule reproduces these to 1e-6
    assert report.matched == 1385  # plus three one-decimal roundings (34.7 for 34.65, ...)
    assert len(report.mismatches) == 27
    worst = report.mismatches[0]
    assert worst.key == "01_70" and worst.final_score == 18.15
    assert worst.expected == pytest.approx(37.95) and worst.difference == pytest.approx(-19.8)
    sizes = [abs(m.difference) for m in report.mismatches]
    assert sizes == sorted(sizes, reverse=True) and min(sizes) == pytest.approx(0.1)

    strict = check_dataset(MTL_AQA_DIR / "final_annotations_dict_with_dive_number.pkl", tolerance=1e-6)
    assert strict.matched == 1382 and len(strict.mismatches) == 30


def test_csv_with_both_panel_sizes_skips_and_a_mismatch(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text(
        "video,final_score,difficulty," + ",".join(f"judge_{i}" for i in range(1, 10)) + "\n"
        "seven.mp4,88.0,3.2,9.5,9,9.5,9,8.5,9.5,8.5,,\n"
        "five.mp4,39.0,2.0,6,7.5,5,6.5,7,,,,\n"
        "rounded.mp4,34.7,3.3,3.5,3.5,3,3.5,2,3.5,4,,\n"
        "typo.mp4,60.2,3.0,7.5,7,7,7,7.5,7.5,7,,\n"
        "no_judges.mp4,50.0,2.0,,,,,,,,,\n"
        "no_dd.mp4,50.0,,5,5,5,5,5,,,,\n"
        "sync.mp4,50.0,3.0,7,7,7,7,7,7,7,7,7\n"
    )  # no video files: the label check does not need them
    report = check_dataset(tmp_path / "labels.csv")
    assert (report.total, report.checked, report.matched, report.exact) == (7, 4, 3, 2)
    assert [m.key for m in report.mismatches] == ["typo.mp4"]
    assert report.mismatches[0].difference == pytest.approx(-4.3)
    assert dict(report.skipped) == {
        "no_judges.mp4": "no judge scores",
        "no_dd.mp4": "no difficulty",
        "sync.mp4": "9 judges: no rule for this panel size",
    }

    text = format_report(report)
    assert "4 of 7 dives checked: 3 match (2 exactly), 1 do not; 3 skipped" in text
    assert f"match within {TOLERANCE:g}" in text
    typo_line = next(line for line in text.splitlines() if line.strip().startswith("typo.mp4"))
    assert typo_line.split()[1:6] == ["60.20", "64.50", "-4.30", "3.0", "-1.43"]
    assert "sync.mp4: 9 judges" in text


def test_finediving_folder_is_detected(tmp_path: Path) -> None:
    annotations = tmp_path / "Annotations"
    annotations.mkdir()
    fine = {
        ("FINADivingWorldCup2021_Men3m_final_r1", 0): {
            "action_type": "407C", "dive_score": 76.8, "difficulty": 3.2,
            "judge_scores": [8.0, 8.5, 8.0, 7.5, 8.0, 8.5, 8.0],
            "steps_transit_frames": np.array([530.0, 560.0]),
        },
        ("FINADivingWorldCup2021_Men3m_final_r1", 1): {
            "action_type": "107B", "dive_score": 70.0, "difficulty": 3.1,
            "judge_scores": [7.0, 7.0, 6.5, 7.0, 7.5, 7.0, 6.5],
            "steps_transit_frames": np.array([1240.0, 1270.0]),
        },
    }  # fmt: skip
    with open(annotations / "FineDiving_fine-grained_annotation.pkl", "wb") as handle:
        pickle.dump(fine, handle)
    report = check_dataset(tmp_path)
    assert (report.checked, report.matched) == (2, 1)
    assert report.mismatches[0].key == "FINADivingWorldCup2021_Men3m_final_r1_1"
    assert report.mismatches[0].expected == pytest.approx(21.0 * 3.1)
    assert "FineDiving" in report.source


def test_records_and_unknown_layouts() -> None:
    records = [
        DiveRecord(key="a", final_score=88.0, difficulty=3.2, judge_scores=(9.5, 9, 9.5, 9, 8.5, 9.5, 8.5))
    ]
    assert check_records(records).matched == 1
    assert check_dataset(records).exact == 1
    with pytest.raises(DatasetError, match="does not exist"):
        check_dataset("/nonexistent/dataset")
    with pytest.raises(DatasetError, match="not a dataset layout the label check knows"):
        check_dataset(Path(__file__).parent)
