"""``make bench``: the fast-path table in one run, written to benchmarks/RESULTS.md and benchmarks/results.json.

Every row times its contenders side by side (``common.side_by_side``: rotating turns, a pause before each
timed call) and reports min and median of the repeats with the ratios the issue's goals are stated in. The
machine, library versions, load averages and the other processes using the CPU are recorded with them: on a
shared machine, read the ratios, not the seconds. Media (a 30 s 720p dive, 50 synthetic dives) and the built
runtimes are cached under runs/bench-media/.

    .venv/bin/python benchmarks/run_all.py [--repeats 7] [--repeats-full 3] [--compiled] [--rows ...]
    .venv/bin/python benchmarks/run_all.py --everything   # then every older benchmark script as well
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench_fastpath as rows
from common import MEDIA_DIR, machine, other_load

from models.allocator import keep_freed_memory

HERE = Path(__file__).resolve().parent
OLDER = ("bench_decode.py", "bench_backbone.py", "bench_channels_last.py", "bench_bfloat16.py", "bench_core_head.py",
         "bench_render.py", "bench_localise.py", "bench_score.py", "bench_runtime.py",
         "bench_familiarity.py", "bench_wait.py", "bench_worker_batching.py", "bench_subnormals.py")
ROWS = ("selection", "decode", "demo_backbone", "batch", "full_i3d", "wait")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="rounds of the fast rows")
    parser.add_argument("--repeats-full", type=int, default=3, help="rounds of the full-size I3D row (seconds each)")
    parser.add_argument("--compiled", action="store_true",
                        help="also build (minutes, cached) and time the AOTInductor packages")
    parser.add_argument("--no-full-onnx", action="store_true", help="skip exporting the full I3D to ONNX")
    parser.add_argument("--wait-requests", type=int, default=100, help="requests per mode of the ?wait row")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--everything", action="store_true", help="then run the older benchmark scripts too")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    MEDIA_DIR.mkdir(parents=True, exist_ok=True)
    keep_freed_memory()  # as a serving process does; process-wide, so the baselines in this run get it too
    results: dict[str, Any] = {"started": rows.timestamp(), "machine": machine(), "other_load_at_start": other_load(),
                               "settings": {"repeats": args.repeats, "repeats_full": args.repeats_full,
                                            "compiled": args.compiled, "pause_s": 0.3}}
    for name in args.rows:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        if name == "full_i3d":
            results[name] = rows.full_i3d(args.repeats_full, not args.no_full_onnx, args.compiled, MEDIA_DIR)
        elif name == "demo_backbone":
            results[name] = rows.demo_backbone(args.repeats, args.compiled, MEDIA_DIR)
        elif name == "decode":
            results[name] = rows.decode(args.repeats)
        elif name == "batch":
            results[name] = rows.batch(max(3, args.repeats // 2), MEDIA_DIR)
        elif name == "wait":
            results[name] = wait_row(args.wait_requests)
        else:
            results[name] = rows.selection(args.repeats)
        results[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps(results[name], indent=1, default=str)[:2000], flush=True)
    if "full_i3d" in results:
        frames = results.get("decode", {}).get("frames", 30 * 25)  # the 30 s 25 fps video
        results["gpu_on_paper"] = rows.gpu_on_paper(results["full_i3d"]["gflop_per_video"], frames)
    results["finished"] = rows.timestamp()
    results["load_average_at_end"] = machine()["load_average"]
    results["other_load_at_end"] = other_load()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / "RESULTS.md").write_text(render(results))
    print(f"wrote {args.out / 'RESULTS.md'} and {args.out / 'results.json'}")
    if args.everything:
        failed = [name for name in OLDER
                  if subprocess.run([sys.executable, str(HERE / name)], cwd=HERE.parent, check=False).returncode]
        if failed:
            print(f"failed: {', '.join(failed)}", file=sys.stderr)
            return 1
    return 0


def wait_row(requests: int) -> dict[str, Any]:
    """``bench_wait.py`` in its own process (it starts a real embedded ``aqa serve``): p50 / p99 in ms."""
    out = MEDIA_DIR / "wait.json"
    subprocess.run([sys.executable, str(HERE / "bench_wait.py"), "--requests", str(requests), "--json", str(out)],
                   cwd=HERE.parent, check=True)
    return json.loads(out.read_text())


def _s(timing: dict[str, float], scale: float = 1.0, unit: str = "s", digits: int = 3) -> str:
    return f"{timing['min_s'] * scale:.{digits}f} / {timing['median_s'] * scale:.{digits}f} {unit}"


def _x(pair: dict[str, float]) -> str:
    return f"{pair['min']:.2f} / {pair['median']:.2f}"


def _met(by_min: bool, by_median: bool) -> str:
    """The goal judged on the least disturbed run and on the typical one."""
    word = {True: "met", False: "**missed**"}
    return f"min: {word[by_min]}, median: {word[by_median]}"


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# Fast-path benchmark results",
        "",
        (f"Written by `benchmarks/run_all.py` ({r['started']} to {r['finished']}). Every cell is **min / median** of "
        f"the repeats, measured side by side in this one run (contenders in rotating turns, {r['settings']['pause_s']} s "
        "pause before each timed call); ratios are min/min and median/median. The process keeps freed "
        "memory in its heap (`models/allocator.py`) as serving processes do; the baselines run in the same "
        "process, so they get it too."),
        "",
        (f"- Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, flags {', '.join(m['cpu_flags'])}; torch intra-op "
        f"threads {m['torch_threads']}; ONEDNN_MAX_CPU_ISA={m['onednn_max_cpu_isa'] or 'unset'}."),
        f"- Versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}.",
        f"- Load average at start {m['load_average']}, at end {r['load_average_at_end']} (the machine is shared).",
        f"- Other processes at start: {r['other_load_at_start']}.",
        f"- Other processes at end: {r['other_load_at_end']}.",
        "",
        "| stage | baseline, same run | now | goal | |",
        "|---|---|---|---|---|",
    ]
    if "full_i3d" in r:
        f = r["full_i3d"]
        t, share = f["timings"], f["fraction_of_conv3d_peak"]["served_torch_eager"]
        speed = f["speedup_vs_reference"]["served_torch_eager"]
        own = f["served_vs_reference_in_own_process"]
        others = "; ".join(f"{n} {_s(t[n])}" for n in ("onnxruntime", "compiled_aotinductor") if n in t)
        lines.append(
            f"| full I3D per video ({f['gflop_per_video']} GFLOP) | reference piergiaj eager "
            f"{_s(t['reference_piergiaj_eager'])} in this process, "
            f"{_s(f['reference_in_own_process_default_allocator'])} in its own with the default allocator; training "
            f"form {_s(t['training_form_before'])}; one Conv3d {f['conv3d_peak_gflops']['min']:.0f} / "
            f"{f['conv3d_peak_gflops']['median']:.0f} GFLOP/s | served (torch eager) {_s(t['served_torch_eager'])} = "
            f"{_x(speed)} x the reference in this process, {_x(own)} x in its own; "
            f"{f['gflops']['served_torch_eager']['min']:.0f} / {f['gflops']['served_torch_eager']['median']:.0f} "
            f"GFLOP/s = {share['min']:.0%} / {share['median']:.0%} of the Conv3d; {others} | >= 2.0 x, >= 75 % | "
            f"in this process {_met(speed['min'] >= 2.0 and share['min'] >= 0.75, speed['median'] >= 2.0 and share['median'] >= 0.75)}; "
            f"against the reference as published {_met(own['min'] >= 2.0 and share['min'] >= 0.75, own['median'] >= 2.0 and share['median'] >= 0.75)} |")
    if "demo_backbone" in r:
        d = r["demo_backbone"]
        t = d["timings"]
        others = "; ".join(f"{n} {_s(v, 1e3, 'ms', 1)}" for n, v in t.items() if n != "training_form_before")
        product = d["product_measurement"]
        recorded = "" if product is None else (
            "; `aqa runtime` timed (median / min) " + ", ".join(
                f"{n} {v['median_s'] * 1e3:.1f} / {v['min_s'] * 1e3:.1f} ms" for n, v in product["timings"].items())
            + f" and recorded **{product['chosen']}**")
        by_min = min((n for n in t if n != "training_form_before"), key=lambda n: t[n]["min_s"])
        lines.append(
            f"| demo backbone per video | training form {_s(t['training_form_before'], 1e3, 'ms', 1)} | {others}"
            f"{recorded}; fastest in these rounds: {d['fastest_in_this_run']} by median, {by_min} by min | faster "
            f"runtime chosen by measurement | {'met (chosen by its measurement)' if product else 'not measured'}"
            f"{'' if not product or product['chosen'] == d['fastest_in_this_run'] else '; **this run ranks them differently**'} |")
    if "decode" in r:
        d = r["decode"]
        fps = d["fps"]
        cli = fps.get("ffmpeg_cli_decode_scale_rgb")
        vs_cli = d.get("one_pass_vs_ffmpeg_cli")
        lines.append(
            f"| demo decode, 30 s 720p H.264 | two passes {fps['two_passes_before']['best']:.0f} / "
            f"{fps['two_passes_before']['median']:.0f} fps"
            + (f"; ffmpeg CLI decode+scale+rgb {cli['best']:.0f} / {cli['median']:.0f} fps" if cli else "")
            + f" | one pass {fps['one_pass']['best']:.0f} / {fps['one_pass']['median']:.0f} fps = "
            f"{_x(d['one_pass_vs_two_passes'])} x two passes"
            + (f", {_x(vs_cli)} x the ffmpeg CLI" if vs_cli else "")
            + " | one pass, >= 1.0 x the ffmpeg CLI | "
            + (_met(vs_cli["min"] >= 1.0, vs_cli["median"] >= 1.0) if vs_cli else "not measured: no ffmpeg CLI here")
            + " |")
    if "batch" in r:
        b = r["batch"]
        t = b["timings"]
        over = b["pipelined_over_max_decode_compute"]
        lines.append(
            f"| `aqa batch`, 50 dives ({b['runtime']}) | serial {_s(t['serial_before'])}; decode alone "
            f"{_s(t['decode_alone'])}; compute alone {_s(t['compute_alone'])} | pipelined {_s(t['pipelined'])} = "
            f"{_x(over)} x max(decode, compute), {_x(b['serial_over_pipelined'])} x faster than serial; cores kept "
            f"busy (CPU / wall, one more call each): "
            + ", ".join(f"{n} {v:.2f}" for n, v in b["cores_used_once_after"].items())
            + f" | <= 1.15 x | {_met(over['min'] <= 1.15, over['median'] <= 1.15)} |")
    if "selection" in r:
        s = r["selection"]
        q = s["per_query_ms"]
        lines.append(
            f"| exemplar selection (bank of {s['bank']:,}) | per-row loop {q['loop_difficulty_given']['min']:.2f} / "
            f"{q['loop_difficulty_given']['median']:.2f} ms; difficulty estimated "
            f"{q['loop_difficulty_estimated']['min']:.2f} / {q['loop_difficulty_estimated']['median']:.2f} ms | index "
            f"{q['index_difficulty_given']['min']:.3f} / {q['index_difficulty_given']['median']:.3f} ms; estimated "
            f"{q['index_difficulty_estimated']['min']:.3f} / {q['index_difficulty_estimated']['median']:.3f} ms | "
            f"< 0.5 ms | {_met(q['index_difficulty_given']['min'] < 0.5, q['index_difficulty_given']['median'] < 0.5)} |")
    if "wait" in r:
        w, n = r["wait"]["ms"], r["wait"]["requests"]

        def cell(mode: str, name: str) -> str:
            return f"{w[mode][name]['p50']:.1f} / {w[mode][name]['p99']:.1f} ms"
        lines.append(
            f"| `POST /v1/scores?wait=60` overhead over the job's own scoring time (**p50 / p99**, {n} requests per "
            f"mode, alternating, embedded `aqa serve`) | POST then polling on the former schedule: overhead "
            f"{cell('poll', 'overhead')} | signalled completion: overhead {cell('wait', 'overhead')} (latency "
            f"{cell('wait', 'latency')}, scoring {cell('wait', 'scoring')}) | p99 < 30 ms | "
            f"{'met' if w['wait']['overhead']['p99'] < 30 else '**missed**'} |")
    if "gpu_on_paper" in r:
        lines += ["", "## GPU column, on paper", "",
                  ("Lower bounds, not measurements: the full I3D's FLOPs per video over a GPU's published peak "
                  "(real kernels reach a fraction of it), and NVDEC's published decode rate scaled from 1080p to "
                  "720p by pixel rate."), "",
                  "| device | ms per video at peak | NVDEC 720p fps (by pixel rate) | source |", "|---|---|---|---|"]
        for name, g in r["gpu_on_paper"].items():
            peaks = ", ".join(f"{k.replace('_ms_per_video_at_peak', '')} {v:.1f}" for k, v in g.items()
                              if k.endswith("_at_peak"))
            nvdec = f"{g['nvdec_720p_fps_by_pixel_rate']:.0f}" if "nvdec_720p_fps_by_pixel_rate" in g else "n/a"
            lines.append(f"| {name} | {peaks} | {nvdec} | {g['source']} |")
    lines += ["", "All numbers, with every contender's timings: `benchmarks/results.json`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
