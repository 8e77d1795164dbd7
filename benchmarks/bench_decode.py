"""Time ``decode_video`` on a generated 4 s 854x480 H.264 clip (30 fps, 120 frames).

Run from the repository root:  .venv/bin/python benchmarks/bench_decode.py [--repeats 5]

Prints the median wall time of ``decode_video`` for the CoRe-sized input (103 x 224 x 224, short side
256) and a small one (103 x 112 x 112, short side 128). It also times, for the same clip in Matroska
(which declares no frame count; 4 s and 12 s), the two strategies for uniform sampling when the count is unknown:
two passes (count packets without decoding, then decode and convert only the sampled frames: what
``decode_video`` does) against one pass (decode and convert every frame to the small size, keep them
all, sample at the end). Last, it times converting the 103 sampled frames of the 4 s clip with one swscale
context for the whole video (a shared ``VideoReformatter``, as ``decode_video`` does) against a new context
for every frame (what ``VideoFrame.reformat`` does), alternating the two.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.media import write_video
from video.decode import decode_video
from video.preprocessing import Preprocessing
from video.probe import probe_video
from video.sampling import uniform_frame_indices
from video.spatial import resize_and_crop

SMALL = Preprocessing(num_frames=103, resize=128, crop=112)
CORE = Preprocessing()


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def decode_one_pass(path: Path, preprocessing: Preprocessing) -> np.ndarray:
    """Baseline: convert every frame while decoding, sample afterwards (memory grows with length)."""
    kept = []
    reformatter = VideoReformatter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        for frame in container.decode(stream):
            kept.append(resize_and_crop(frame, preprocessing.resize, preprocessing.crop, reformatter=reformatter))
    indices = uniform_frame_indices(0, len(kept) - 1, preprocessing.num_frames)
    return np.stack([kept[i] for i in indices])


def convert_sampled(path: Path, preprocessing: Preprocessing, shared_context: bool) -> np.ndarray:
    """Decode the clip and convert its sampled frames, with one swscale context or a new one per frame."""
    wanted = set(uniform_frame_indices(0, probe_video(path, count_frames=True).frame_count - 1,
                                       preprocessing.num_frames).tolist())
    reformatter = VideoReformatter() if shared_context else None
    kept = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                kept.append(resize_and_crop(frame, preprocessing.resize, preprocessing.crop, reformatter=reformatter))
    return np.stack(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = {
            "frames": 120,
            "width": 854,
            "height": 480,
            "fps": 30,
            "pattern": "texture",
            "codec_options": {"crf": "18"},
        }
        mp4 = write_video(Path(tmp) / "clip.mp4", **clip)
        print(f"clip: 4 s, 854x480, 30 fps, 120 frames, H.264 CRF 18 ({mp4.stat().st_size / 1e6:.2f} MB)")
        print(f"median of {args.repeats} runs:")
        for name, preprocessing in [("103x224x224 (resize 256)", CORE), ("103x112x112 (resize 128)", SMALL)]:
            seconds = median_seconds(lambda p=preprocessing: decode_video(mp4, p), args.repeats)
            print(f"  decode_video mp4 {name}: {seconds:.3f} s")
        print(
            f"  probe_video mp4 (headers only): {median_seconds(lambda: probe_video(mp4), args.repeats):.4f} s"
        )
        print("unknown frame count (Matroska), two-pass decode_video vs one-pass keep-all:")
        for clip_seconds in (4, 12):
            mkv = write_video(Path(tmp) / f"clip{clip_seconds}.mkv", **{**clip, "frames": 30 * clip_seconds})
            count = median_seconds(lambda m=mkv: probe_video(m, count_frames=True), args.repeats)
            print(f"  {clip_seconds} s mkv: counting packets {count:.4f} s")
            for name, preprocessing in [("224", CORE), ("112", SMALL)]:
                two = median_seconds(lambda p=preprocessing, m=mkv: decode_video(m, p), args.repeats)
                one = median_seconds(lambda p=preprocessing, m=mkv: decode_one_pass(m, p), args.repeats)
                print(f"  {clip_seconds} s mkv crop {name}: two-pass {two:.3f} s, one-pass {one:.3f} s")
        print("swscale context per video (shared) vs per frame, 4 s mp4, sampled frames converted, alternating:")
        for name, preprocessing in [("224", CORE), ("112", SMALL)]:
            times: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.repeats):
                for shared in (True, False):
                    times[shared].append(median_seconds(lambda p=preprocessing, s=shared: convert_sampled(mp4, p, s), 1))
            shared, per_frame = statistics.median(times[True]), statistics.median(times[False])
            print(f"  crop {name}: shared {shared:.3f} s, per frame {per_frame:.3f} s ({per_frame / shared:.2f} x)")


if __name__ == "__main__":
    main()
