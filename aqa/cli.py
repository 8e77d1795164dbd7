"""The ``aqa`` command line: score, synth, train, bank, eval, data, demo, serve, worker, batch.

Each command imports what it needs when it runs, so ``aqa score`` never loads the training code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from models.pretrained import DEMO_MODEL_DIR


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


class CliError(Exception):
    """An error to print as one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aqa", description="Score dive videos the way a judging panel does.")
    sub = parser.add_subparsers(metavar="COMMAND")

    p = sub.add_parser("score", help="score one dive video")
    p.add_argument("video", type=Path)
    p.add_argument("--model", type=Path, default=DEMO_MODEL_DIR, help="model directory (default: bundled demo)")
    p.add_argument("--difficulty", type=float, help="difficulty degree of the dive (estimated when omitted)")
    p.add_argument("--action-class", help="dive code, e.g. 107B (narrows exemplar choice)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=_score)

    p = sub.add_parser("synth", help="render a synthetic dive dataset (videos + labels.csv)")
    p.add_argument("out", type=Path)
    p.add_argument("--n", type=int, required=True, help="number of dives")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(run=_synth)

    p = sub.add_parser("train", help="train a model directory (weights + bank + model card) from a dataset")
    p.add_argument("dataset", type=Path, help="labels CSV (folder + CSV layout) or a dataset folder")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--profile", default="cpu", help="training profile (see `aqa train --list-profiles`)")
    p.add_argument("--cache", type=Path, default=Path("runs/feature-cache"))
    p.add_argument("--model-id", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_train)

    p = sub.add_parser("eval", help="evaluate a model on a labelled dataset it never saw")
    p.add_argument("dataset", type=Path)
    p.add_argument("--model", type=Path, default=DEMO_MODEL_DIR)
    p.add_argument("--out", type=Path, default=None, help="write evaluation.json and scatter.png here")
    p.add_argument("--cache", type=Path, default=Path("runs/feature-cache"))
    p.add_argument("--no-difficulty", action="store_true", help="do not give the model the true difficulty")
    p.add_argument("--update-card", action="store_true", help="record the result in the model card")
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
    return parser


def _score(args: argparse.Namespace) -> int:
    from models.scorer import QueryLabels, Scorer
    from video.errors import VideoError

    scorer = Scorer.from_dir(args.model, device=args.device)
    try:
        result = scorer.score(args.video, QueryLabels(difficulty=args.difficulty, action_class=args.action_class))
    except VideoError as exc:
        raise CliError(f"{args.video}: {exc.reason}") from exc
    if args.json:
        print(result.model_dump_json(indent=2))
        return 0
    print(format_result(result))
    return 0


def format_result(result) -> str:  # noqa: ANN001 - ScoreResult, imported lazily
    lines = [
        f"score        {result.score:.2f}   (90% interval {result.interval.low:.2f} .. {result.interval.high:.2f}, "
        f"{result.interval.method})",
    ]
    if result.difficulty is not None:
        lines.append(f"difficulty   {result.difficulty:.1f} ({result.difficulty_source})   "
                     f"execution {result.execution_score:.2f}")
    lines.append(f"vote spread  {result.vote_spread:.2f} (sd of {len(result.votes)} exemplar votes)")
    lines.append(f"model        {result.model.id} {result.model.version} ({result.model.head})")
    lines.append("exemplars    id                 score   relative  vote   chosen because")
    for v in result.votes:
        lines.append(f"             {v.id:<18} {v.final_score:6.2f}  {v.relative:+7.2f}  {v.vote:6.2f}  {v.selected_because}")
    t = result.timings
    if t:
        lines.append(f"time         decode {t['decode']:.2f}s  features {t['features']:.2f}s  "
                     f"voting {t['voting']:.3f}s  total {t['total']:.2f}s")
    return "\n".join(lines)


def _synth(args: argparse.Namespace) -> int:
    from training.synth.generate import generate_dataset

    labels = generate_dataset(args.out, n=args.n, seed=args.seed, width=args.width, height=args.height,
                              fps=args.fps, workers=args.workers)
    print(f"wrote {args.n} dives and {labels}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from training.pipeline import PROFILES, train_model

    if args.profile not in PROFILES:
        raise CliError(f"unknown profile {args.profile!r}; choose from {', '.join(PROFILES)}")
    train_model(args.dataset, args.out, PROFILES[args.profile], cache_dir=args.cache,
                model_id=args.model_id, seed=args.seed)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from training.pipeline import evaluate_model_dir

    evaluation = evaluate_model_dir(args.model, args.dataset, cache_dir=args.cache, out=args.out,
                                    use_difficulty=not args.no_difficulty, update_card=args.update_card)
    print(json.dumps(evaluation.summary(), indent=2))
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


def _demo_build(args: argparse.Namespace) -> int:
    from training.demo import build_demo_model

    build_demo_model(args.out, args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
