"""The command line as a new user meets it: bad arguments get one line (never a traceback), defaults that
make sense, and the help it promises. Each test reproduces an item of issue #19."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from aqa.cli import DEFAULT_PROFILE, build_parser, main
from models.difficulty import check_difficulty
from models.pretrained import DEMO_MODEL_DIR
from service.batch import BatchInputError, list_inputs
from service.schemas import ScoreFields
from service.settings import ServiceSettings
from tests.service_processes import (
    REPO,
    ServiceProcess,
    aqa_executable,
    free_port,
    service_env,
    start_api,
    wait_until,
)
from training.demo import FRESH_SET
from training.profiles import PROFILE_RESULTS, PROFILES

SCORE_KEY = "cli-test-key"


def aqa(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``aqa ARGS`` in a new process, as a user runs it."""
    return subprocess.run([aqa_executable(), *args], capture_output=True, text=True, env=env or service_env(),
                          cwd=cwd, timeout=timeout, check=False)


def one_line_error(stderr: str) -> str:
    """The error line of a refused command: argparse's usage + error, or our `error: ...` line."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ") or ": error: " in line]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.mark.parametrize("value", ["0", "-3", "30", "5.01", "nan", "inf"])
def test_a_difficulty_outside_0_to_5_is_refused_by_the_cli_the_api_and_the_batch_csv(
        value: str, tiny_model_dir: Path, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    video = tiny_dataset / "videos" / "dive_00000.mp4"
    with pytest.raises(SystemExit) as exited:
        main(["score", str(video), "--model", str(tiny_model_dir), "--difficulty", value])
    assert exited.value.code == 2
    assert "difficulty must be above 0 and at most 5" in one_line_error(capsys.readouterr().err)
    with pytest.raises(ValidationError):
        ScoreFields(difficulty=float(value))
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"video,difficulty\n{video},{value}\n")
    with pytest.raises(BatchInputError, match="line 2: difficulty must be above 0 and at most 5"):
        list_inputs(sheet)


def test_the_bounds_of_the_difficulty_rule_are_accepted_everywhere(tiny_model_dir: Path, tiny_dataset: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    assert check_difficulty(5.0) == 5.0 and check_difficulty(0.1) == 0.1
    assert ScoreFields(difficulty=5.0).difficulty == 5.0
    video = tiny_dataset / "videos" / "dive_00000.mp4"
    assert main(["score", str(video), "--model", str(tiny_model_dir), "--difficulty", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["difficulty"] == 5.0 and math.isfinite(result["score"])
    assert result["interval"]["low"] <= result["score"] <= result["interval"]["high"]


def test_a_difficulty_that_is_not_a_number_is_one_line(tiny_model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["score", "x.mp4", "--model", str(tiny_model_dir), "--difficulty", "three"])
    assert "'three' is not a number" in one_line_error(capsys.readouterr().err)


def test_scoring_a_folder_says_it_is_a_folder_and_points_to_batch(tiny_dataset: Path) -> None:
    done = aqa("score", str(tiny_dataset))
    assert done.returncode == 1
    line = one_line_error(done.stderr)
    assert f"{tiny_dataset} is a folder" in line and f"aqa batch {tiny_dataset} --out" in line


def test_an_unknown_action_class_is_refused_with_the_known_ones(tiny_model_dir: Path, tiny_dataset: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    video = tiny_dataset / "videos" / "dive_00000.mp4"
    assert main(["score", str(video), "--model", str(tiny_model_dir), "--action-class", "XYZ"]) == 1
    line = one_line_error(capsys.readouterr().err)
    known = sorted({row["action_class"] for row in csv.DictReader((tiny_dataset / "labels.csv").open())})
    assert "--action-class XYZ is not a dive code this model knows" in line
    assert ", ".join(known) in line
    assert main(["score", str(video), "--model", str(tiny_model_dir), "--action-class", known[0]]) == 0


def test_train_lists_its_profiles_with_what_they_cost_and_reached(capsys: pytest.CaptureFixture) -> None:
    assert "--list-profiles" in build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert main(["train", "--list-profiles"]) == 0
    listing = capsys.readouterr().out
    for name, profile in PROFILES.items():
        assert f"\n{name}" in f"\n{listing}" and profile.description in listing
    assert f"{DEFAULT_PROFILE} (default)" in listing
    # The default profile's numbers are the ones the bundled demo model's card measured.
    card = json.loads((DEMO_MODEL_DIR / "model_card.json").read_text())
    fresh = card["evaluations"][FRESH_SET]
    assert f"{fresh['final']['spearman']:.3f} / {fresh['execution']['spearman']:.3f}" in PROFILE_RESULTS[DEFAULT_PROFILE]
    assert PROFILE_RESULTS[DEFAULT_PROFILE] in listing


def test_the_default_training_profile_is_the_fine_tuned_recipe() -> None:
    args = build_parser().parse_args(["train", "data", "--out", "model"])
    assert args.profile == DEFAULT_PROFILE == "cpu-finetune" and PROFILES[args.profile].backbone.epochs > 0
    assert PROFILES[DEFAULT_PROFILE].backbone.compute_dtype == "auto"


def test_train_without_a_dataset_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["train"]) == 1
    assert "needs a DATASET and --out DIR" in one_line_error(capsys.readouterr().err)


def test_batch_of_a_dataset_folder_uses_its_labels_csv(tiny_dataset: Path, tiny_model_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "meet"
    (folder / "videos").mkdir(parents=True)
    labels = list(csv.DictReader((tiny_dataset / "labels.csv").open()))[:2]
    for row in labels:
        shutil.copy(tiny_dataset / row["video"], folder / row["video"])
    shutil.copy(tiny_dataset / "videos" / "dive_00020.mp4", folder / "videos" / "unlisted.mp4")
    with (folder / "labels.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(labels[0]))
        writer.writeheader()
        writer.writerows(labels)
    out = tmp_path / "results.csv"
    assert main(["batch", str(folder), "--out", str(out), "--model", str(tiny_model_dir), "--no-progress"]) == 0
    assert f"from {folder / 'labels.csv'}" in capsys.readouterr().err
    rows = {r["source"]: r for r in csv.DictReader(out.open())}
    for row in labels:
        scored = rows[row["video"]]
        assert scored["status"] == "done" and scored["difficulty_source"] == "given"
        assert float(scored["difficulty"]) == float(row["difficulty"]) and scored["action_class"] == row["action_class"]
    assert rows["videos/unlisted.mp4"]["difficulty_source"] == "estimated"


@pytest.mark.parametrize("variable", ["AQA_BROKER_URL", "AQA_RESULT_BACKEND"])
def test_an_empty_broker_url_means_embedded(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, "")
    settings = ServiceSettings()
    assert settings.embedded and settings.store_url is None
    monkeypatch.setenv(variable, "amqp://guest@localhost//")
    with pytest.raises(ValidationError, match="only Redis URLs"):
        ServiceSettings()


def test_a_bad_setting_is_one_line(tmp_path: Path) -> None:
    done = aqa("serve", "--port", "99999", cwd=tmp_path)
    assert done.returncode == 1
    assert "AQA_PORT=99999" in one_line_error(done.stderr)


def test_serve_on_a_busy_port_fails_at_once_before_loading_the_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = aqa("serve", env=service_env(model_dir=tiny_model_dir, data_dir=tmp_path, port=port), cwd=tmp_path)
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in one_line_error(done.stderr)
    assert done.stderr.count("\n") == 1 and done.stdout == ""  # nothing started, no model loaded, no "ready"
    assert not (tmp_path / "jobs.sqlite3").exists()


@pytest.fixture(scope="module")
def keyed_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("cli-server")
    env = service_env(model_dir=tiny_model_dir, data_dir=data, port=free_port(),
                      api_keys=f"{SCORE_KEY}:score")
    process, url = start_api(env, data / "api.log")
    try:
        yield url
    finally:
        process.stop()


@pytest.mark.parametrize("variable", ["AQA_KEY", "AQA_CLIENT_API_KEY"])
def test_batch_through_a_service_takes_the_api_key_the_readme_exports(
        variable: str, keyed_server: str, tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    readme = (REPO / "README.md").read_text()
    assert '--api-key "$AQA_KEY"' in readme or "AQA_KEY=" in readme
    monkeypatch.delenv("AQA_KEY", raising=False)
    monkeypatch.delenv("AQA_CLIENT_API_KEY", raising=False)
    sheet = tmp_path / "one.csv"
    sheet.write_text(f"video\n{tiny_dataset / 'videos' / 'dive_00003.mp4'}\n")
    out = tmp_path / "results.csv"
    assert main(["batch", str(sheet), "--out", str(out), "--url", keyed_server, "--no-progress"]) == 1
    assert "1 to retry" in capsys.readouterr().out and "missing_api_key" in out.read_text()
    monkeypatch.setenv(variable, SCORE_KEY)  # AQA_KEY, or its earlier name
    assert main(["batch", str(sheet), "--out", str(out), "--url", keyed_server, "--no-progress"]) == 0
    assert next(iter(csv.DictReader(out.open())))["status"] == "done"


def test_ctrl_c_of_batch_says_that_a_rerun_resumes(tiny_dataset: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "meet"
    folder.mkdir()
    for i in range(60):
        os.link(tiny_dataset / "videos" / f"dive_{i % 24:05d}.mp4", folder / f"dive_{i:03d}.mp4")
    out = tmp_path / "results.csv"
    command = [aqa_executable(), "batch", str(folder), "--out", str(out), "--model", str(tiny_model_dir),
               "--no-progress"]
    log = tmp_path / "batch.log"
    process = ServiceProcess(command, service_env(), log)
    try:
        wait_until(lambda: len(out.read_text().splitlines()) > 1 if out.is_file() else False, 120,
                   "the first result row")
        process.proc.send_signal(signal.SIGINT)
        assert process.proc.wait(timeout=60) == 130
    finally:
        process.stop()
    printed = log.read_text()
    assert "Traceback" not in printed and "KeyboardInterrupt" not in printed
    assert f"interrupted: the results so far are in {out}; run the same command again to resume" in printed
    finished = len(out.read_text().splitlines()) - 1
    assert 0 < finished < 60
    started = time.monotonic()
    rerun = subprocess.run(command, capture_output=True, text=True, env=service_env(), timeout=300,
                           check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert f"60 videos: {60 - finished} scored, 0 failed, 0 to retry, {finished} already done earlier" in rerun.stdout
    assert time.monotonic() - started < 300


BAD_ARGUMENTS = [
    ["score"],
    ["score", "missing.mp4"],
    ["score", "missing.mp4", "--model", "no-such-model"],
    ["score", "x.mp4", "--runtime", "tensorflow"],
    ["train", "no-such-data", "--out", "model"],
    ["train", "data", "--out", "model", "--profile", "gpu"],
    ["train", "data", "--out", "model", "--label-fraction", "0"],
    ["train", "data", "--out", "model", "--head", "pcln"],
    ["synth", "dives", "--n", "0"],
    ["synth", "dives", "--n", "-5"],
    ["eval"],
    ["eval", "no-such-data"],
    ["batch", "no-such-folder", "--out", "r.csv"],
    ["serve", "--port", "-1"],
    ["serve", "--model", "no-such-model"],
    ["bank", "build", "no-such-data", "--model", "no-such-model"],
    ["data", "check", "no-such-data"],
    ["export", "onnx", "no-such-model"],
    ["pretrain", "lav", "no-such-videos", "--out", "x", "--epochs", "0"],
]


@pytest.mark.parametrize("arguments", BAD_ARGUMENTS, ids=[" ".join(a) for a in BAD_ARGUMENTS])
def test_a_bad_argument_never_shows_a_traceback(arguments: list[str], tmp_path: Path, capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: an exception escaping ``main`` is the traceback a user would see."""
    monkeypatch.chdir(tmp_path)
    try:
        code = main(arguments)
    except SystemExit as exited:  # argparse: usage and one error line
        code = exited.code
    assert code in (1, 2)
    one_line_error(capsys.readouterr().err)
    assert not any(tmp_path.iterdir()), "a refused command must not leave files behind"
