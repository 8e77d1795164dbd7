"""The ``aqa`` command line: score, synth, train, pretrain, bank, eval, data, demo, export, serve, worker, batch.

Each command imports what it needs when it runs, so ``aqa score`` never loads the training code.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from models.difficulty import check_difficulty
from models.pretrained import DEMO_MODEL_DIR

if TYPE_CHECKING:
    from service.settings import ServiceSettings
    from training.profiles import TrainingProfile


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if type(exc).__name__ not in USER_ERRORS:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1


class CliError(Exception):
    """An error to print as one line, without a traceback."""


# Errors whose message already tells the user what is wrong (bad files, models, datasets, banks).
USER_ERRORS = frozenset({
    "DatasetError", "UnsafePickleError", "ModelDirError", "BankError", "BankMismatchError", "WeightImportError",
    "RenderError", "ProtocolError", "OnnxBackboneError", "OnnxExportError", "CompiledBackboneError", "CheckpointError",
    "ProfileError",
})
# The names of training.protocols.PROTOCOLS, listed here so `aqa --help` does not import the training code.
_PROTOCOL_NAMES = ("core-mtl", "tpt-mtl", "core-aqa7", "tsa-finediving")
DEFAULT_PROFILE = "cpu-finetune"  # the best recipe measured on two CPU cores (training/profiles.py)
# The API key `aqa batch --url` sends when --api-key is not given; the README's examples use the same name.
API_KEY_ENV = "AQA_KEY"
OLD_API_KEY_ENV = "AQA_CLIENT_API_KEY"  # its earlier name, still read


def _difficulty(text: str) -> float:
    """argparse type of --difficulty: a number with 0 < d <= 5 (the API's rule, models/difficulty.py)."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    try:
        return check_difficulty(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aqa", description="Score dive videos the way a judging panel does.")
    sub = parser.add_subparsers(metavar="COMMAND")

    p = sub.add_parser("score", help="score one dive video")
    p.add_argument("video", type=Path)
    p.add_argument("--model", type=Path, default=DEMO_MODEL_DIR, help="model directory (default: bundled demo)")
    p.add_argument("--difficulty", type=_difficulty,
                   help="difficulty degree of the dive, 0 < D <= 5 (estimated from the exemplars when omitted)")
    p.add_argument("--action-class", help="dive code, e.g. 107B (narrows exemplar choice; must be one the model's "
                   "exemplar bank knows)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runtime", choices=["auto", "torch", "compiled", "onnx"], default="auto",
                   help="backbone runtime; auto: the fastest measured here (MODEL/runtime.json, see `aqa runtime`)")
    p.set_defaults(run=_score)

    p = sub.add_parser("synth", help="render a synthetic dive dataset (videos + labels.csv)")
    p.add_argument("out", type=Path)
    p.add_argument("--n", type=int, required=True, help="number of dives")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--preset", default="veryfast",
                   help="x264 preset: ultrafast encodes about 2 x faster for larger files (benchmarks/bench_render.py)")
    p.add_argument("--style", default="demo",
                   help="how dives are drawn: demo (the training style), or a shifted one the demo model never saw: "
                        "body, camera, look, pool, shifted (all four); the same seed gives the same dives and labels")
    p.add_argument("--non-dives", action="store_true",
                   help="render clips that are not dives (a walking figure, FFmpeg test sources) with clips.csv")
    p.set_defaults(run=_synth)

    p = sub.add_parser("train", help="train a model directory (weights + bank + model card) from a dataset")
    p.add_argument("dataset", type=Path, nargs="?", help="labels CSV (folder + CSV layout) or a dataset folder")
    p.add_argument("--out", type=Path, help="model directory to write (required)")
    p.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"training profile (default {DEFAULT_PROFILE}; see --list-profiles)")
    p.add_argument("--list-profiles", action="store_true",
                   help="list the training profiles, what each costs and what it reached, and exit")
    p.add_argument("--compute-dtype", choices=["auto", "float32", "bfloat16"], default=None,
                   help="dtype of the backbone's fine-tuning steps (default: the profile's, auto: bfloat16 autocast "
                        "only where this CPU runs it faster)")
    p.add_argument("--cache", type=Path, default=Path("runs/feature-cache"))
    p.add_argument("--model-id", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--head", choices=["core", "tpt", "pcln"], default=None,
                   help="scoring head (default: the profile's; tpt and pcln read the clip sequence: use a *-tpt profile)")
    p.add_argument("--init-backbone", type=Path, default=None,
                   help="start from this backbone.safetensors (or a folder holding one, e.g. `aqa pretrain lav`)")
    p.add_argument("--label-fraction", type=float, default=1.0,
                   help="keep only this fraction of the training labels (stratified, seeded); default 1")
    p.add_argument("--protocol", choices=["core-mtl", "tpt-mtl"], default=None,
                   help="DATASET is a reference layout (MTL-AQA): train on the paper's training split, test on its "
                        "test split, frames as the paper reads them")
    p.add_argument("--device", default="auto", help="end-to-end profiles: cuda, cuda:N or cpu (default: a GPU if any)")
    p.add_argument("--workers", type=int, default=None,
                   help="end-to-end profiles: video-decoding processes (default: the profile's)")
    p.add_argument("--resume", action="store_true",
                   help="end-to-end profiles: continue from OUT/checkpoints/last.safetensors")
    p.set_defaults(run=_train)

    pretrain = sub.add_parser("pretrain", help="self-supervised backbone pretraining").add_subparsers(
        metavar="METHOD")
    p = pretrain.add_parser("lav", help="LAV: align unlabelled videos in time; writes backbone.safetensors")
    p.add_argument("videos", type=Path, help="folder of videos (searched recursively; scores are not read)")
    p.add_argument("--out", type=Path, required=True, help="folder for backbone.safetensors and pretrain.json")
    p.add_argument("--profile", default="cpu", help="training profile giving the backbone and clips")
    p.add_argument("--epochs", type=int, default=None, help="passes over the videos (default 10)")
    p.add_argument("--init-backbone", type=Path, default=None, help="start from this backbone.safetensors")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_pretrain_lav)

    p = sub.add_parser("eval", help="evaluate one model, or compare several, on a labelled dataset they never saw")
    p.add_argument("dataset", type=Path, nargs="?", help="labels CSV or dataset folder (not with --protocol)")
    p.add_argument("--model", type=Path, action="append", default=None,
                   help="model directory (default: bundled demo); repeat to compare models (needs --out), or with "
                        "--protocol core-aqa7 one per --action")
    p.add_argument("--out", type=Path, default=None,
                   help="write evaluation.json, scatter.png and report.html here (several models: the comparison table; "
                        "--protocol: protocol_report.json and .md)")
    p.add_argument("--cache", type=Path, default=Path("runs/feature-cache"))
    p.add_argument("--no-difficulty", action="store_true", help="do not give the model the true difficulty")
    p.add_argument("--update-card", action="store_true", help="record the result in the model card")
    p.add_argument("--timed-videos", type=int, default=10, help="videos timed per model when comparing")
    p.add_argument("--protocol", choices=list(_PROTOCOL_NAMES),
                   help="evaluate as a reference paper did (split, frames, exemplars, metrics); needs --data")
    p.add_argument("--data", type=Path, help="--protocol: the dataset root in the reference repository's layout")
    p.add_argument("--media", type=Path, help="--protocol: the frames/videos folder, when not found under --data")
    p.add_argument("--action", action="append", default=None,
                   help="--protocol core-aqa7: the AQA-7 class of each --model, in the same order")
    p.add_argument("--seed", type=int, default=0, help="--protocol: seed of the exemplar draws (default 0)")
    p.add_argument("--reference-input", action="store_true",
                   help="--protocol: also use the reference's resize, crop and normalisation instead of the model's")
    p.add_argument("--device", default="cpu", help="--protocol: device for the backbone (e.g. cuda)")
    p.set_defaults(run=_eval)

    bank = sub.add_parser("bank", help="exemplar bank commands").add_subparsers(metavar="COMMAND")
    p = bank.add_parser("build", help="build a model's exemplar bank from labelled videos")
    p.add_argument("dataset", type=Path)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--cache", type=Path, default=Path("runs/feature-cache"))
    p.set_defaults(run=_bank_build)

    data = sub.add_parser("data", help="dataset commands").add_subparsers(metavar="COMMAND")
    p = data.add_parser("check", help="check that the judges' scores reproduce every final score")
    p.add_argument("dataset", type=Path)
    p.set_defaults(run=_data_check)

    demo = sub.add_parser("demo", help="the bundled demo model").add_subparsers(metavar="COMMAND")
    p = demo.add_parser("build", help="re-create the demo model: synth data, train, evaluate on a fresh set")
    p.add_argument("--out", type=Path, default=DEMO_MODEL_DIR)
    p.add_argument("--work", type=Path, default=Path("runs/demo"))
    p.set_defaults(run=_demo_build)

    weights = sub.add_parser("weights", help="bring your own weights").add_subparsers(metavar="COMMAND")
    p = weights.add_parser("import", help="convert a Kinetics I3D checkpoint to backbone.safetensors")
    p.add_argument("file", type=Path, help="rgb_imagenet.pt (piergiaj) or model_rgb.pth (hassony2)")
    p.add_argument("--layout", choices=["piergiaj", "hassony2"], required=True)
    p.add_argument("--out", type=Path, required=True, help="folder to write backbone.safetensors into")
    p.set_defaults(run=_weights_import)
    p = weights.add_parser("import-core", help="import an official CoRe checkpoint as a model directory")
    p.add_argument("file", type=Path, help="the CoRe checkpoint (.pth)")
    p.add_argument("--mtl-aqa", type=Path, required=True,
                   help="MTL-AQA annotation folder (its training split gives CoRe's group boundaries)")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.set_defaults(run=_core_import)

    export = sub.add_parser("export", help="export a model for other runtimes").add_subparsers(metavar="FORMAT")
    p = export.add_parser("onnx", help="write MODEL_DIR/backbone.onnx for the onnx runtime, checked against torch")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--opset", type=int, default=None, help="ONNX opset, 18 or later (default 18)")
    p.set_defaults(run=_export_onnx)

    p = sub.add_parser("runtime", help="build every backbone runtime (ONNX, compiled), time them, record the fastest")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=_runtime)

    p = sub.add_parser("serve", help="run the scoring API (embedded workers unless AQA_BROKER_URL is set)")
    p.add_argument("--host", help="address to bind (AQA_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (AQA_PORT, default 8000)")
    p.add_argument("--model", type=Path, help="model directory (AQA_MODEL_DIR, default: bundled demo)")
    p.add_argument("--data-dir", type=Path, help="uploads and job database (AQA_DATA_DIR)")
    p.add_argument("--workers", type=int, help="embedded scoring threads (AQA_EMBEDDED_WORKERS)")
    p.set_defaults(run=_serve)

    p = sub.add_parser("worker", help="run a Celery scoring worker (needs AQA_BROKER_URL)")
    p.add_argument("--concurrency", type=int, default=1, help="pool processes, each with its own model copy")
    p.add_argument("--model", type=Path, help="model directory (AQA_MODEL_DIR)")
    p.add_argument("--hostname", help="Celery node name (default: aqa@HOST)")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(run=_worker)

    p = sub.add_parser("batch", help="score a folder of videos, or a CSV listing them, into a results CSV")
    p.add_argument("source", type=Path, help="folder of videos, or a CSV with a 'video' column")
    p.add_argument("--out", type=Path, required=True, help="results CSV (rerunning skips finished items)")
    p.add_argument("--url", help="a running service (default: score here, embedded)")
    p.add_argument("--api-key", help=f"X-API-Key for --url (default: ${API_KEY_ENV})")
    p.add_argument("--concurrency", type=int, default=2, help="uploads in flight with --url")
    p.add_argument("--model", type=Path, help="model directory when embedded (AQA_MODEL_DIR)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_batch)
    return parser


def _service_settings(**overrides: object) -> ServiceSettings:
    """Settings from the environment (AQA_*), with the command line's explicit options on top."""
    from pydantic import ValidationError

    from service.settings import ServiceSettings

    try:
        return ServiceSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = [f"AQA_{'_'.join(map(str, e['loc'])).upper()}={e['input']!r}: {e['msg']}" if e["loc"]
                    else e["msg"] for e in exc.errors()]
        raise CliError(f"invalid settings: {'; '.join(problems)}") from exc


def _serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from service.app import create_app
    from service.settings import ConfigurationError

    settings = _service_settings(host=args.host, port=args.port, model_dir=args.model, data_dir=args.data_dir,
                                 embedded_workers=args.workers)
    if settings.embedded:
        try:
            settings.check_runtime()
            settings.check_model_dir()
        except ConfigurationError as exc:
            raise CliError(str(exc)) from exc
    listening = listening_socket(settings.host, settings.port)  # before the model loads: a busy port fails now
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mode = "embedded workers" if settings.embedded else f"Celery queue {settings.queue_name!r}"
    print(f"aqa serve: http://{settings.host}:{settings.port} ({mode}); API docs at /docs", file=sys.stderr)
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port, log_level="info")
    uvicorn.Server(config).run(sockets=[listening])
    return 0


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (uvicorn listens on it), or a one-line CliError saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart may reuse TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CliError(f"port {port} on {host} is already in use (another aqa serve?); choose another with "
                           "--port or AQA_PORT") from exc
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def _worker(args: argparse.Namespace) -> int:
    import logging
    import os
    import socket

    from service.settings import ConfigurationError

    if args.model is not None:
        os.environ["AQA_MODEL_DIR"] = str(args.model)  # the Celery app reads its settings from the environment
    settings = _service_settings()
    logging.basicConfig(level=args.loglevel.upper(), format="[%(asctime)s: %(levelname)s/%(processName)s] %(message)s")
    try:
        from workers.celery_app import app
        from workers.model_check import check_loads

        check_loads(settings)  # in a throwaway interpreter: this process forks the pool and must stay torch-free
    except ConfigurationError as exc:
        raise CliError(str(exc)) from exc
    app.worker_main([
        "worker", f"--concurrency={args.concurrency}", f"--loglevel={args.loglevel}",
        f"--queues={settings.queue_name}", f"--hostname={args.hostname or 'aqa@' + socket.gethostname()}",
        "--without-mingle", "--without-gossip",
    ])
    return 0


def _batch(args: argparse.Namespace) -> int:
    import os

    from service.batch import LABELS_CSV, BatchInputError, run_batch
    from service.settings import ConfigurationError

    settings = None if args.url else _service_settings(model_dir=args.model)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or os.environ.get(OLD_API_KEY_ENV)
    if args.source.is_dir() and (args.source / LABELS_CSV).is_file():
        print(f"difficulty and action class from {args.source / LABELS_CSV} where it lists a video", file=sys.stderr)
    try:
        summary = run_batch(args.source, args.out, url=args.url, api_key=api_key, settings=settings,
                            concurrency=args.concurrency, progress=not args.no_progress)
    except (BatchInputError, ConfigurationError) as exc:
        raise CliError(str(exc)) from exc
    except KeyboardInterrupt:
        print(f"\ninterrupted: the results so far are in {args.out}; run the same command again to resume "
              "(finished videos are skipped)", file=sys.stderr)
        return 130
    print(f"{summary.total} videos: {summary.done} scored, {summary.failed} failed, {summary.errors} to retry, "
          f"{summary.skipped} already done earlier -> {args.out}")
    return 1 if summary.errors else 0


def _score(args: argparse.Namespace) -> int:
    from models.scorer import QueryLabels, Scorer
    from video.errors import VideoError

    if args.video.is_dir():
        raise CliError(f"{args.video} is a folder; `aqa score` scores one video. To score every video in it: "
                       f"aqa batch {args.video} --out results.csv")
    if not args.video.exists():
        raise CliError(f"there is no file at {args.video}")
    scorer = Scorer.from_dir(args.model, device=args.device, runtime=args.runtime)
    if args.action_class is not None:
        check_action_class(args.action_class, {e.action_class for e in scorer.bank.exemplars} - {None})
    try:
        result = scorer.score(args.video, QueryLabels(difficulty=args.difficulty, action_class=args.action_class))
    except VideoError as exc:
        raise CliError(f"{args.video}: {exc.reason}") from exc
    if args.json:
        print(result.model_dump_json(indent=2))
        return 0
    print(format_result(result))
    return 0


def check_action_class(action_class: str, known: set[str]) -> None:
    """Refuse a dive code the model's exemplar bank does not hold, listing the ones it does."""
    if action_class in known:
        return
    if not known:
        raise CliError(f"--action-class {action_class}: this model's exemplars carry no action class; "
                       "omit --action-class")
    raise CliError(f"--action-class {action_class} is not a dive code this model knows; its exemplar bank holds "
                   f"{len(known)}: {', '.join(sorted(known))} (omit --action-class to choose exemplars by "
                   "difficulty and similarity)")


def format_result(result) -> str:
    lines = [
        (f"score        {result.score:.2f}   (90% interval {result.interval.low:.2f} .. {result.interval.high:.2f}, "
        f"{result.interval.method})"),
    ]
    if result.difficulty is not None:
        lines.append(f"difficulty   {result.difficulty:.1f} ({result.difficulty_source})   "
                     f"execution {result.execution_score:.2f}")
    lines.append(f"vote spread  {result.vote_spread:.2f} (sd of {len(result.votes)} exemplar votes)")
    lines.append(f"model        {result.model.id} {result.model.version} ({result.model.head})")
    if result.video is not None:
        first, last = result.video.frames_read
        span = f" ({result.video.seconds_read[0]:.2f}-{result.video.seconds_read[1]:.2f} s)" if result.video.seconds_read else ""
        lines.append(f"frames read  {first}-{last}{span} of {result.video.frame_count}")
    lines.append("exemplars    id                 score   relative  vote   chosen because")
    for v in result.votes:
        lines.append(f"             {v.id:<18} {v.final_score:6.2f}  {v.relative:+7.2f}  {v.vote:6.2f}  {v.selected_because}")
    familiarity = result.familiarity
    if familiarity is not None and familiarity.in_distribution:
        lines.append(f"familiarity  in distribution (percentile {familiarity.percentile:.0f} of the calibration dives)")
    elif familiarity is not None:
        lines.append(f"WARNING: {familiarity.message}")
        lines += [f"  - {reason}" for reason in familiarity.reasons]
    t = result.timings
    if t:
        lines.append(f"time         decode {t['decode']:.2f}s  features {t['features']:.2f}s  "
                     f"voting {t['voting']:.3f}s  total {t['total']:.2f}s")
    return "\n".join(lines)


def _synth(args: argparse.Namespace) -> int:
    from training.synth.generate import generate_dataset
    from training.synth.nondive import generate_non_dives

    try:
        if args.non_dives:
            if args.style != "demo":
                raise CliError("--style draws dives; it does not go with --non-dives")
            clips = generate_non_dives(args.out, n=args.n, seed=args.seed, width=args.width, height=args.height,
                                       fps=args.fps, workers=args.workers, preset=args.preset)
            print(f"wrote {args.n} non-dive clips and {clips}")
            return 0
        labels = generate_dataset(args.out, n=args.n, seed=args.seed, width=args.width, height=args.height,
                                  fps=args.fps, workers=args.workers, preset=args.preset, style=args.style)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    print(f"wrote {args.n} dives and {labels}")
    return 0


def _profile(name: str) -> TrainingProfile:
    from training.profiles import PROFILES

    if name not in PROFILES:
        raise CliError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)} (aqa train --list-profiles)")
    return PROFILES[name]


def format_profiles() -> str:
    """`aqa train --list-profiles`: each profile, what it is, what it cost and reached where measured."""
    from training.profiles import PROFILE_RESULTS, PROFILES

    blocks = []
    for name, profile in PROFILES.items():
        default = " (default)" if name == DEFAULT_PROFILE else ""
        blocks.append(f"{name}{default}\n  {profile.description}\n  measured: "
                      f"{PROFILE_RESULTS.get(name, 'not measured')}")
    return "\n\n".join(blocks)


def _train(args: argparse.Namespace) -> int:
    from training.device import resolve_device
    from training.pipeline import train_model
    from training.profiles import check_head

    if args.list_profiles:
        print(format_profiles())
        return 0
    if args.dataset is None or args.out is None:
        raise CliError("aqa train needs a DATASET and --out DIR (or --list-profiles)")
    profile = _profile(args.profile)
    head = args.head or profile.default_head
    if args.compute_dtype is not None:
        profile = dataclasses.replace(profile, backbone=dataclasses.replace(profile.backbone, compute_dtype=args.compute_dtype))
    try:
        check_head(head, profile)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if not 0.0 < args.label_fraction <= 1.0:
        raise CliError(f"--label-fraction must be in (0, 1], got {args.label_fraction}")
    if args.workers is not None:
        if args.workers < 0 or profile.end_to_end is None:
            raise CliError("--workers takes a count >= 0, for profiles that train end to end")
        profile = dataclasses.replace(profile, end_to_end=dataclasses.replace(profile.end_to_end, workers=args.workers))
    try:
        resolve_device(args.device)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    train_model(args.dataset, args.out, profile, cache_dir=args.cache, model_id=args.model_id, seed=args.seed,
                head=head, init_backbone=args.init_backbone, label_fraction=args.label_fraction,
                device=args.device, resume=args.resume, protocol=args.protocol)
    return 0


def _pretrain_lav(args: argparse.Namespace) -> int:
    from training.pretrain_lav import LAVPretrainConfig, pretrain_lav

    if args.epochs is not None and args.epochs < 1:
        raise CliError(f"--epochs must be >= 1, got {args.epochs}")
    config = LAVPretrainConfig(seed=args.seed, **({} if args.epochs is None else {"epochs": args.epochs}))
    result = pretrain_lav(args.videos, args.out, _profile(args.profile), config, init_backbone=args.init_backbone)
    last = result.history[-1]["loss_total"] if result.history else float("nan")
    print(f"wrote {result.backbone_path} (final epoch loss {last:.4f}); use it with "
          f"`aqa train --init-backbone {args.out}`")
    return 0


def _eval(args: argparse.Namespace) -> int:
    if args.protocol is not None:
        return _eval_protocol(args)
    if args.dataset is None:
        raise CliError("aqa eval needs a DATASET, or --protocol NAME --data ROOT")
    for flag, value in (("--data", args.data), ("--media", args.media), ("--action", args.action)):
        if value is not None:
            raise CliError(f"{flag} goes with --protocol")
    models = args.model or [DEMO_MODEL_DIR]
    if len(models) > 1:
        from training.compare import COMPARISON_MD, compare_models

        if args.out is None:
            raise CliError("comparing several models needs --out (the folder for the comparison table)")
        if args.update_card:
            raise CliError("--update-card works with one --model at a time")
        if args.timed_videos < 1:
            raise CliError(f"--timed-videos must be >= 1, got {args.timed_videos}")
        compare_models(models, args.dataset, cache_dir=args.cache, out=args.out,
                       use_difficulty=not args.no_difficulty, timed_videos=args.timed_videos)
        print((args.out / COMPARISON_MD).read_text(), end="")
        return 0
    from training.pipeline import evaluate_model_dir

    evaluation = evaluate_model_dir(models[0], args.dataset, cache_dir=args.cache, out=args.out,
                                    use_difficulty=not args.no_difficulty, update_card=args.update_card)
    print(json.dumps(evaluation.summary(), indent=2))
    return 0


def _eval_protocol(args: argparse.Namespace) -> int:
    from training.protocols import REPORT_MD, run_protocol

    if args.dataset is not None:
        raise CliError(f"--protocol reads its dataset from --data; drop the positional {args.dataset}")
    if args.data is None:
        raise CliError(f"--protocol {args.protocol} needs --data (the dataset root)")
    if args.model is None:
        raise CliError(f"--protocol {args.protocol} needs --model (the model directory to evaluate)")
    if args.no_difficulty or args.update_card:
        raise CliError("--no-difficulty and --update-card do not go with --protocol (the protocol fixes both)")
    if args.seed < 0:
        raise CliError(f"--seed must be >= 0, got {args.seed}")
    report = run_protocol(args.protocol, args.data, args.model, args.cache, actions=args.action, media=args.media,
                          seed=args.seed, input_mode="reference" if args.reference_input else "model",
                          device=args.device)
    if args.out is not None:
        report.write(args.out)
        print(f"wrote {args.out / REPORT_MD} and protocol_report.json", file=sys.stderr)
    print(report.markdown())
    return 0


def _bank_build(args: argparse.Namespace) -> int:
    from training.pipeline import rebuild_bank

    bank = rebuild_bank(args.model, args.dataset, cache_dir=args.cache)
    print(f"wrote a bank of {len(bank)} exemplars to {args.model / 'bank'}")
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from training.datasets.label_check import check_dataset, format_report

    print(format_report(check_dataset(args.dataset)))
    return 0


def _weights_import(args: argparse.Namespace) -> int:
    from models.weights.cli_commands import run_weights_import

    print(run_weights_import(args.file, args.layout, args.out))
    return 0


def _core_import(args: argparse.Namespace) -> int:
    from training.core_import import run_core_import

    print(run_core_import(args.file, args.out, args.mtl_aqa))
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from models.onnx_backbone import ONNX_FILE
    from training.export_onnx import DEFAULT_OPSET, export_onnx

    record = export_onnx(args.model_dir, opset=args.opset or DEFAULT_OPSET)
    check = record.validation
    print(f"wrote {args.model_dir / ONNX_FILE} (opset {record.opset}, input {list(record.input_shape)}); "
          f"onnxruntime vs torch: max abs diff {check.max_abs_diff:.2g} at feature scale {check.max_abs_feature:.3g}. "
          f"Use it with `aqa score --runtime onnx` or AQA_RUNTIME=onnx.")
    return 0


def _runtime(args: argparse.Namespace) -> int:
    from training.runtimes import build_and_measure

    record, problems = build_and_measure(args.model_dir, device=args.device)
    for name, timing in record.timings.items():
        print(f"{name:9} {timing.median_s * 1000:9.1f} ms per video (min {timing.min_s * 1000:.1f}, "
              f"{timing.repeats} runs; load {timing.load_s:.2f} s)")
    for problem in problems:
        print(f"not built: {problem}")
    print(f"chosen: {record.chosen} (recorded in {args.model_dir / 'runtime.json'})")
    return 0


def _demo_build(args: argparse.Namespace) -> int:
    from training.demo import build_demo_model

    build_demo_model(args.out, args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
