"""Dataset layouts: the restricted unpickler, folder + CSV, MTL-AQA (real annotations), FineDiving, AQA-7."""

from __future__ import annotations

import os
import pickle
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from tests.paths import MTL_AQA_ANNOTATIONS, MTL_AQA_DIR
from training.datasets import safe_pickle
from training.datasets.aqa7 import AQA7_SCORE_RANGES, load_aqa7
from training.datasets.finediving import load_finediving, read_finediving_annotations
from training.datasets.folder_csv import load_folder_csv, split_records
from training.datasets.mtl_aqa import (
    dive_number_from_parts,
    load_mtl_aqa,
    read_mtl_aqa_annotations,
    reference_frame_window,
)
from training.datasets.records import DatasetError, DiveRecord
from training.datasets.safe_pickle import UnsafePickleError

# --- restricted unpickler ------------------------------------------------------------------------


class _ShellPayload:
    """Unpickling this calls os.system: what a doctored annotation file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_malicious_pickle_is_refused_before_it_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # Hidden inside otherwise valid annotation data, after entries the loader accepts.
    doctored = {(1, 1): {"final_score": 88.0, "judge_scores": np.arange(7.0)}, (1, 2): _ShellPayload(marker)}
    path = tmp_path / "final_annotations_dict.pkl"
    path.write_bytes(pickle.dumps(doctored, protocol=4))

    with pytest.raises(UnsafePickleError, match=r"posix\.system|nt\.system") as info:
        safe_pickle.load(path)
    assert str(path) in str(info.value)
    assert not marker.exists()

    # Control: the payload is live, plain pickle would have run the command.
    pickle.loads(path.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize(
    "module, name",
    [("builtins", "eval"), ("builtins", "getattr"), ("pandas.core.frame", "DataFrame"), ("numpy", "load")],
)
def test_globals_outside_the_allow_list_are_named(module: str, name: str) -> None:
    data = f"c{module}\n{name}\n(tR.".encode()  # protocol 0: call module.name()
    with pytest.raises(UnsafePickleError, match=rf"{module}\.{name}"):
        safe_pickle.loads(data)


def test_codecs_encode_is_admitted_only_for_latin1() -> None:
    assert safe_pickle.loads(pickle.dumps(b"\x00\xffab", protocol=2)) == b"\x00\xffab"
    rot13 = b"c_codecs\nencode\n(Vabc\nVrot13\ntR."
    with pytest.raises(UnsafePickleError, match="rot13"):
        safe_pickle.loads(rot13)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_data_and_numpy_round_trip(protocol: int) -> None:
    data = {
        ("video", 3): {
            "judge_scores": np.array([9.5, 9.0, 8.5]),
            "labels": np.arange(6, dtype=np.int32).reshape(2, 3),
            "difficulty": np.float64(3.2),
            "flag": np.bool_(True),
            "names": np.array(["pike", "tuck"]),
            "tags": {"a", "b"},
            "raw": b"\x01\x02",
            "objects": np.array([{"z": 1}, None], dtype=object),
            "none": None,
        }
    }
    loaded = safe_pickle.loads(pickle.dumps(data, protocol=protocol))
    entry = loaded[("video", 3)]
    np.testing.assert_array_equal(entry["judge_scores"], [9.5, 9.0, 8.5])
    np.testing.assert_array_equal(entry["labels"], np.arange(6).reshape(2, 3))
    assert entry["labels"].dtype == np.int32
    assert entry["difficulty"] == 3.2 and bool(entry["flag"]) is True
    assert list(entry["names"]) == ["pike", "tuck"]
    assert entry["tags"] == {"a", "b"} and entry["raw"] == b"\x01\x02" and entry["none"] is None
    assert entry["objects"][0] == {"z": 1} and entry["objects"][1] is None


def test_numpy_cannot_be_made_to_allocate_more_than_the_file() -> None:
    huge_reconstruct = (
        b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I100000\nI100000\nt" + b"S'b'\ntR."
    )
    with pytest.raises(UnsafePickleError, match="empty numpy.ndarray"):
        safe_pickle.loads(huge_reconstruct)
    direct_ndarray = b"cnumpy\nndarray\n((I100000\nI100000\nttR."
    with pytest.raises(DatasetError, match="not a readable pickle"):
        safe_pickle.loads(direct_ndarray)


def test_numpy1_module_paths_in_the_real_file_are_admitted() -> None:
    # The published file was written by numpy 1: its arrays name numpy.core.multiarray._reconstruct.
    assert b"numpy.core.multiarray" in MTL_AQA_ANNOTATIONS.read_bytes()
    annotations = safe_pickle.load(MTL_AQA_ANNOTATIONS)
    assert isinstance(annotations[(1, 1)]["judge_scores"], np.ndarray)


def test_truncated_pickle_is_a_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"a": list(range(100))})[:20])
    with pytest.raises(DatasetError, match="not a readable pickle") as info:
        safe_pickle.load(path)
    assert not isinstance(info.value, UnsafePickleError)


# --- folder + CSV --------------------------------------------------------------------------------


def _write_csv(folder: Path, text: str, videos: list[str]) -> Path:
    for name in videos:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    path = folder / "labels.csv"
    path.write_text(text)
    return path


def test_folder_csv_reads_labels_judges_and_paths(tmp_path: Path) -> None:
    csv_path = _write_csv(
        tmp_path,
        "video,final_score,difficulty,action_class,judge_1,judge_2,judge_3,judge_4,judge_5,judge_6,judge_7\n"
        "a.mp4,88.0,3.2,407C,9.5,9,9.5,9,8.5,9.5,8.5\n"
        "sub/b.mp4,45.0,3.0,107B,5,5,5,5.5,4.5,,\n"
        "c.mp4,50.5,,,,,,,,,\n",
        ["a.mp4", "sub/b.mp4", "c.mp4"],
    )
    a, b, c = load_folder_csv(csv_path)
    assert a.key == "a.mp4" and a.video == tmp_path / "a.mp4" and a.action_class == "407C"
    assert a.judge_scores == (9.5, 9.0, 9.5, 9.0, 8.5, 9.5, 8.5) and a.difficulty == 3.2
    assert b.video == tmp_path / "sub" / "b.mp4" and b.judge_scores == (5.0, 5.0, 5.0, 5.5, 4.5)
    assert c.difficulty is None and c.action_class is None and c.judge_scores is None


def test_folder_csv_judge_columns_are_optional(tmp_path: Path) -> None:
    csv_path = _write_csv(tmp_path, "final_score,video,difficulty\n70,x.mp4,2.0\n", ["x.mp4"])
    (record,) = load_folder_csv(csv_path)
    assert record.final_score == 70.0 and record.judge_scores is None and record.execution_score == 35.0


@pytest.mark.parametrize(
    "text, message",
    [
        ("video,final_score\na.mp4,1\n", "missing column.*difficulty"),
        ("video,final_score,difficulty\na.mp4,1,2\na.mp4,3,4\n", "line 3.*already listed on line 2"),
        (
            "video,final_score,difficulty\na.mp4,1,2\na.mp4x,high,2\n",
            "line 3: final_score 'high' is not a number",
        ),
        ("video,final_score,difficulty\na.mp4,1,3..2\n", "line 2: difficulty '3..2' is not a number"),
        ("video,final_score,difficulty,judge_1,judge_2\na.mp4,1,2,,7\n", "line 2: judge_1 is empty"),
        ("video,final_score,difficulty\n", "no rows"),
    ],
)
def test_folder_csv_errors_say_what_and_where(tmp_path: Path, text: str, message: str) -> None:
    csv_path = _write_csv(tmp_path, text, ["a.mp4", "a.mp4x"])
    with pytest.raises(DatasetError, match=message):
        load_folder_csv(csv_path)


def test_folder_csv_lists_the_first_missing_videos(tmp_path: Path) -> None:
    rows = "".join(f"v{i}.mp4,{i},2.0\n" for i in range(9))
    csv_path = _write_csv(tmp_path, "video,final_score,difficulty\n" + rows, ["v0.mp4"])
    with pytest.raises(
        DatasetError, match=r"8 of 9 videos not found.*v1\.mp4, v2\.mp4, v3\.mp4, v4\.mp4, v5\.mp4, \.\.\.$"
    ):
        load_folder_csv(csv_path)
    assert len(load_folder_csv(csv_path, check_files=False)) == 9


def _records(n_per_class: dict[str, int]) -> list[DiveRecord]:
    return [
        DiveRecord(key=f"{cls}_{i:03d}", final_score=float(i), action_class=cls)
        for cls, n in n_per_class.items()
        for i in range(n)
    ]


def test_split_records_is_deterministic_and_stratified() -> None:
    records = _records({"107B": 40, "407C": 20, "5253B": 12})
    split = split_records(records, test_fraction=0.25, seed=3)
    assert len(split.test) == 18 and len(split.train) == 54
    assert Counter(r.action_class for r in split.test) == {"107B": 10, "407C": 5, "5253B": 3}
    assert not {r.key for r in split.train} & {r.key for r in split.test}

    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    again = split_records(shuffled, test_fraction=0.25, seed=3)
    assert [r.key for r in again.test] == [r.key for r in split.test]
    other_seed = split_records(records, test_fraction=0.25, seed=4)
    assert [r.key for r in other_seed.test] != [r.key for r in split.test]


def test_split_records_without_strata_and_bad_arguments() -> None:
    records = _records({"a": 7, "b": 3})
    assert len(split_records(records, 0.3, stratify_by=None).test) == 3
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_records(records, 1.0)
    with pytest.raises(ValueError, match="cannot stratify by 'colour'"):
        split_records(records, 0.2, stratify_by="colour")
    with pytest.raises(DatasetError, match="not unique"):
        split_records(records + records[:1], 0.2)


# --- MTL-AQA -------------------------------------------------------------------------------------


def test_mtl_aqa_real_annotations_annotations_only() -> None:
    split = load_mtl_aqa(MTL_AQA_DIR)
    everything = split.train + split.test
    assert (len(split.train), len(split.test), len(everything)) == (1059, 353, 1412)
    assert len({r.key for r in everything}) == 1412
    assert len({r.difficulty for r in everything}) == 23
    assert min(r.difficulty for r in everything) == 1.5 and max(r.difficulty for r in everything) == 4.1
    assert all(len(r.judge_scores) == 7 for r in everything)
    assert all(r.video is None and r.frames_dir is None for r in everything)

    first = next(r for r in everything if r.key == "01_01")
    assert first.final_score == 88.0 and first.difficulty == 3.2 and first.action_class == "407C"
    assert first.judge_scores == (9.5, 9.0, 9.5, 9.0, 8.5, 9.5, 8.5)
    assert (first.start_frame, first.end_frame) == (7377, 7462)
    assert split.train[0].key == "18_67"  # the split file's order is kept


def test_mtl_aqa_dive_number_is_rebuilt_from_parts_for_the_original_file(tmp_path: Path) -> None:
    # The original release, final_annotations_dict.pkl, has the dive parts but no dive_number.
    real = safe_pickle.load(MTL_AQA_ANNOTATIONS)
    stripped = {k: {f: v for f, v in entry.items() if f != "dive_number"} for k, entry in real.items()}
    with open(tmp_path / "final_annotations_dict.pkl", "wb") as handle:
        pickle.dump(stripped, handle)
    rebuilt = read_mtl_aqa_annotations(tmp_path / "final_annotations_dict.pkl")
    assert {dive_key: r.action_class for dive_key, r in rebuilt.items()} == {
        k: entry["dive_number"] for k, entry in real.items()
    }
    assert dive_number_from_parts(armstand=1, rotation_type=0, ss_no=4, tw_no=3, position=0) == "6243D"


def test_mtl_aqa_source_videos_and_missing_sources(tmp_path: Path) -> None:
    sources = sorted({int(r.key[:2]) for r in read_mtl_aqa_annotations(MTL_AQA_ANNOTATIONS).values()})
    for video in sources[1:]:
        (tmp_path / f"{video:02d}.mp4").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"no frames folder or video for source\(s\) 01 "):
        load_mtl_aqa(MTL_AQA_DIR, data_root=tmp_path)

    (tmp_path / "01.mkv").write_bytes(b"")
    split = load_mtl_aqa(MTL_AQA_DIR, data_root=tmp_path)
    first = next(r for r in split.train + split.test if r.key == "01_01")
    assert first.video == tmp_path / "01.mkv" and first.frames_dir is None
    assert (first.start_frame, first.end_frame) == (7377, 7462)


def _write_mtl_fixture(info: Path) -> None:
    info.mkdir()
    entry = {
        "primary_view": 0, "position": 2, "armstand": 0, "rotation_type": 2, "ss_no": 7, "tw_no": 0,
        "difficulty": 3.2, "final_score": 88.0, "judge_scores": np.array([9.5, 9, 9.5, 9, 8.5, 9.5, 8.5]),
        "dive_number": "407C",
    }  # fmt: skip
    annotations = {
        (1, 1): {**entry, "start_frame": 10, "end_frame": 110},
        (1, 2): {**entry, "start_frame": 200, "end_frame": 310},
        (2, 1): {**entry, "start_frame": 0, "end_frame": 105},
    }
    for name, data in [
        ("final_annotations_dict_with_dive_number.pkl", annotations),
        ("train_split_0.pkl", [(1, 1), (2, 1)]),
        ("test_split_0.pkl", [(1, 2)]),
    ]:
        with open(info / name, "wb") as handle:
            pickle.dump(data, handle)


def test_mtl_aqa_frames_folders_and_short_folders(tmp_path: Path) -> None:
    _write_mtl_fixture(tmp_path / "info")
    frames = tmp_path / "new_total_frames_256s"
    for video, count in ((1, 300), (2, 105)):
        (frames / f"{video:02d}").mkdir(parents=True)
        for i in range(1, count + 1):
            (frames / f"{video:02d}" / f"{i:08d}.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"1 dives end past.*01_02 \(end_frame 310 > 300 frames\)"):
        load_mtl_aqa(tmp_path / "info", data_root=frames)

    (frames / "01" / "00000301.jpg").write_bytes(b"")
    for i in range(302, 311):
        (frames / "01" / f"{i:08d}.jpg").write_bytes(b"")
    split = load_mtl_aqa(tmp_path / "info", data_root=frames)
    assert [r.frames_dir for r in split.train] == [frames / "01", frames / "02"]
    assert reference_frame_window(split.train[0]) == range(7, 110)
    assert reference_frame_window(split.train[1]) == range(2, 105)


def test_mtl_aqa_split_naming_unknown_dives(tmp_path: Path) -> None:
    _write_mtl_fixture(tmp_path / "info")
    with open(tmp_path / "info" / "test_split_0.pkl", "wb") as handle:
        pickle.dump([(1, 2), (9, 9)], handle)
    with pytest.raises(DatasetError, match="1 dives are not in the annotations: 09_09"):
        load_mtl_aqa(tmp_path / "info")


# --- FineDiving ----------------------------------------------------------------------------------

FD_VIDEO = "FINADivingWorldCup2021_Men3m_final_r1"
FD_SYNC = "FullMenSynchronised10mPlatform_Tokyo2020Replays_2"


def write_finediving_fixture(root: Path) -> None:
    """FineDiving's published layout: annotation pickles keyed (video_name, idx), split lists."""
    (root / "Annotations").mkdir(parents=True)
    (root / "train_test_split").mkdir()
    dives = {
        (FD_VIDEO, 0): ("407C", 3.2, [8.0, 8.5, 8.0, 7.5, 8.0, 8.5, 8.0], 489, 592, [530, 560]),
        (FD_VIDEO, 1): ("107B", 3.1, [7.0, 7.0, 6.5, 7.0, 7.5, 7.0, 6.5], 1200, 1290, [1240, 1270]),
        (FD_VIDEO, 11): ("5253B", 3.3, [6.0, 6.5, 6.0, 6.0, 5.5], 14425, 14542, [14470, 14510]),
        (FD_SYNC, 16): ("626C", 3.3, [8.0, 8.5, 8.0, 7.5, 8.0, 8.5, 8.0, 8.0, 8.5], 100, 190, [140, 170]),
    }
    coarse, fine = {}, {}
    for key, (action, dd, judges, start, end, steps) in dives.items():
        middle = sorted(judges)[2:5] if len(judges) == 7 else sorted(judges)[1:4]
        score = round(sum(middle) * dd, 2)
        coarse[key] = {"action_type": action, "dive_score": score, "difficulty": dd}
        coarse[key].update(start_frame=start, end_frame=end)
        labels = np.repeat(np.array([1, 5, 12]), [steps[0] - start, steps[1] - steps[0], end - steps[1] + 1])
        fine[key] = {
            **coarse[key],
            "judge_scores": judges,
            "steps_transit_frames": np.array(steps, dtype=float),
            "frames_labels": labels,
            "sub-action_types": {1: "Inward", 5: "3.5 Soms.Tuck", 12: "Entry"},
        }
    for path, data in [
        (root / "Annotations" / "FineDiving_coarse_annotation.pkl", coarse),
        (root / "Annotations" / "FineDiving_fine-grained_annotation.pkl", fine),
        (root / "train_test_split" / "train_split.pkl", [(FD_VIDEO, 0), (FD_VIDEO, 11), (FD_SYNC, 16)]),
        (root / "train_test_split" / "test_split.pkl", [(FD_VIDEO, 1)]),
    ]:
        with open(path, "wb") as handle:
            pickle.dump(data, handle)


def test_finediving_published_layout(tmp_path: Path) -> None:
    write_finediving_fixture(tmp_path)
    split = load_finediving(tmp_path)
    assert [r.key for r in split.train] == [f"{FD_VIDEO}_0", f"{FD_VIDEO}_11", f"{FD_SYNC}_16"]
    assert [r.key for r in split.test] == [f"{FD_VIDEO}_1"]
    first = split.train[0]
    assert first.action_class == "407C" and first.difficulty == 3.2 and first.final_score == 76.8
    assert first.judge_scores == (8.0, 8.5, 8.0, 7.5, 8.0, 8.5, 8.0)
    assert first.start_frame is None and first.frames_dir is None
    assert first.extra["source_start_frame"] == 489 and first.extra["source_end_frame"] == 592
    assert first.extra["steps_transit_frames"] == (530, 560)
    assert len(first.extra["frames_labels"]) == 592 - 489 + 1
    assert first.extra["sub_action_types"][12] == "Entry"


def test_finediving_coarse_only_and_frames_folders(tmp_path: Path) -> None:
    write_finediving_fixture(tmp_path)
    (tmp_path / "Annotations" / "FineDiving_fine-grained_annotation.pkl").unlink()
    coarse_only = read_finediving_annotations(tmp_path)
    assert coarse_only[(FD_VIDEO, 0)].judge_scores is None
    assert "steps_transit_frames" not in coarse_only[(FD_VIDEO, 0)].extra

    frames = tmp_path / "FINADiving_MTL_256s"
    for video, idx in [(FD_VIDEO, 0), (FD_VIDEO, 1), (FD_VIDEO, 11)]:
        (frames / video / str(idx)).mkdir(parents=True)
    with pytest.raises(DatasetError, match=rf"1 dives have no frames folder.*{FD_SYNC}_16"):
        load_finediving(tmp_path, frames_root=frames)
    (frames / FD_SYNC / "16").mkdir(parents=True)
    split = load_finediving(tmp_path, frames_root=frames)
    assert split.test[0].frames_dir == frames / FD_VIDEO / "1"


def test_finediving_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no FineDiving annotation file"):
        load_finediving(tmp_path)
    write_finediving_fixture(tmp_path)
    (tmp_path / "train_test_split" / "test_split.pkl").unlink()
    with pytest.raises(DatasetError, match="split file test_split.pkl not found"):
        load_finediving(tmp_path)


# --- AQA-7 ---------------------------------------------------------------------------------------


def write_aqa7_fixture(root: Path, frames_under: str = "frames") -> None:
    (root / "Split_4").mkdir(parents=True)
    train = np.array([[1, 1, 21.6], [1, 3, 102.6], [2, 1, 15.0], [1, 7, 62.1], [7, 2, 40.0]], dtype=float)
    test = np.array([[2, 4, 14.0], [1, 12, 80.0], [7, 5, 50.0]], dtype=float)
    scipy.io.savemat(root / "Split_4" / "split_4_train_list.mat", {"consolidated_train_list": train})
    scipy.io.savemat(root / "Split_4" / "split_4_test_list.mat", {"consolidated_test_list": test})
    base = root / frames_under if frames_under else root
    for name, samples in [("diving", (1, 3, 7, 12)), ("gym_vault", (1, 4)), ("trampoline", (2, 5))]:
        for sample in samples:
            (base / f"{name}-out" / f"{sample:03d}").mkdir(parents=True)


@pytest.mark.parametrize("frames_under", ["frames", ""])
def test_aqa7_one_class_scaled_like_core(tmp_path: Path, frames_under: str) -> None:
    write_aqa7_fixture(tmp_path, frames_under)
    split = load_aqa7(tmp_path, "diving")
    assert [r.key for r in split.train] == ["diving_001", "diving_003", "diving_007"]
    assert [r.key for r in split.test] == ["diving_012"]
    low, high = AQA7_SCORE_RANGES[1]
    assert [r.final_score for r in split.train] == pytest.approx(
        [0.0, 100.0, (62.1 - low) / (high - low) * 100]
    )
    assert split.train[2].extra["raw_score"] == 62.1 and split.train[2].action_class == "diving"
    frames_base = tmp_path / frames_under if frames_under else tmp_path
    assert split.test[0].frames_dir == frames_base / "diving-out" / "012"

    vault = load_aqa7(tmp_path, 2)
    assert [r.key for r in vault.test] == ["gym_vault_004"]
    assert vault.test[0].final_score == pytest.approx((14.0 - 12.3) / (16.87 - 12.3) * 100)


def test_aqa7_trampoline_has_no_core_range_and_missing_frames_are_listed(tmp_path: Path) -> None:
    write_aqa7_fixture(tmp_path)
    with pytest.raises(DatasetError, match="no CoRe score range for AQA-7 class trampoline"):
        load_aqa7(tmp_path, "trampoline")
    raw = load_aqa7(tmp_path, "trampoline", scaled=False)
    assert [r.final_score for r in raw.train + raw.test] == [40.0, 50.0]

    (tmp_path / "frames" / "diving-out" / "007").rmdir()
    with pytest.raises(DatasetError, match="1 samples have no frames folder: diving_007"):
        load_aqa7(tmp_path, "diving")
    with pytest.raises(DatasetError, match="unknown AQA-7 class 'surfing'"):
        load_aqa7(tmp_path, "surfing")
