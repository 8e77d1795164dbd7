"""Fuzz the HTTP API with Schemathesis against a real ``aqa serve``: ``make fuzz-api``.

``python -m tests.fuzz_api [--model DIR] [--max-examples N] [--seed S]`` starts the embedded service (real
uvicorn, the given model, API keys, an archive root holding one dive and a labels CSV, so every route
can be reached), then runs ``schemathesis run`` on its OpenAPI document with every check (server errors,
response schema, documented status codes and content types, negative data rejected, auth enforced,
...; tests/schemathesis.toml holds the two exceptions and why), bounded by ``--max-examples`` per
operation. A real finished job and a batch of it are made first, so their routes answer 200 as well
as 404. Exits with Schemathesis' exit code: 0 only if no check failed (or 1 if the server logged a
traceback).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from models.pretrained import DEMO_MODEL_DIR
from service.client import ScoringClient
from tests.service_processes import free_port, service_env, start_api

CONFIG = Path(__file__).with_name("schemathesis.toml")
SCORE_KEY, READ_KEY = "fuzz-score-key", "fuzz-read-key"


def archive_with_one_dive(folder: Path, video: Path) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(video, folder / "dive.mp4")
    (folder / "labels.csv").write_text("video,difficulty,action_class\ndive.mp4,3.0,107B\n")
    return folder


def run(model_dir: Path, video: Path, max_examples: int, seed: int, report_dir: Path | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="aqa-fuzz-") as tmp:
        work = Path(tmp)
        archive = archive_with_one_dive(work / "archive", video)
        env = service_env(model_dir=model_dir, data_dir=work / "data", port=free_port(), archive_roots=archive,
                          api_keys=f"{SCORE_KEY}:score,{READ_KEY}:read")
        server, url = start_api(env, work / "serve.log")
        with ScoringClient(url, api_key=SCORE_KEY) as client:  # a real job and batch for the id parameters
            job = client.score(video, difficulty=3.0)
            batch = client.create_batch(job_ids=[job.id])
        ids = {"AQA_FUZZ_JOB_ID": job.id, "AQA_FUZZ_BATCH_ID": batch.id}
        command = [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(CONFIG), "run",
                   f"{url}/openapi.json", "--checks", "all", "--header", f"X-API-Key: {SCORE_KEY}",
                   "--max-examples", str(max_examples), "--seed", str(seed), "--workers", "1",
                   "--generation-database", "none", "--request-timeout", "30", "--no-color"]
        if report_dir is not None:
            command += ["--report", "junit", "--report-dir", str(report_dir)]
        try:
            # run from the scratch folder: Schemathesis keeps its cache of findings in the working directory
            done = subprocess.run(command, cwd=work, env={**os.environ, **ids, "NO_COLOR": "1"}, check=False)
        finally:
            server.stop()
        if "Traceback" in server.log():
            print(f"the server logged a traceback during the run:\n{server.log()[-4000:]}", file=sys.stderr)
            return 1
        return done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL_DIR)
    parser.add_argument("--video", type=Path, help="a dive for the archive (default: one rendered now)")
    parser.add_argument("--max-examples", type=int, default=50, help="test cases per API operation and phase")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-dir", type=Path, help="also write a JUnit report there")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video
        if video is None:
            from training.synth.generate import render_dive_video

            video = render_dive_video(Path(tmp) / "dive.mp4", seconds=4.0, width=320, height=240, seed=11)
        return run(args.model, video, args.max_examples, args.seed, args.report_dir)


if __name__ == "__main__":
    sys.exit(main())
