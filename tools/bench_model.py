"""Benchmark the model core on this machine (random weights; timings only).

(a) ``mammut-video-B-16`` encoder: sparse tubes (one ViT pass per clip) vs. encoding every frame
    separately through the same ViT, at 8 / 16 / 32 frames of 224x224.
(b) caption generation with vs. without the key/value cache, ms per generated token (per step of
    the whole batch), for 8 / 32 / 64 new tokens, batches of 1 and 4 clips (greedy, EOS disabled so
    every run produces exactly that many tokens).

Usage: ``python tools/bench_model.py [--repeats 3] [--frames 8 16 32] [--new-tokens 8 32 64]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

import mammut_video  # noqa: F401  (torchvision guard before timm)
from mammut_video.model import create_model
from mammut_video.model.generation import generate


def median_ms(fns: list[Callable[[], object]], repeats: int) -> list[tuple[float, float]]:
    """(median, fastest) wall time in ms of each function; runs are interleaved so that load from
    other processes on a shared machine hits all of them alike (the fastest run is the least disturbed)."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000)
    return [(statistics.median(t), min(t)) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--gen-batch", type=int, nargs="+", default=[1, 4], help="clips decoded together")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = create_model("mammut-video-B-16").eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model mammut-video-B-16, "
          f"float32, median of {args.repeats} interleaved runs")

    print("\n(a) encoder, one 224x224 clip")
    print(f"{'frames':>6} | {'tube tokens':>11} | {'tube ms':>8} | {'per-frame tokens':>16} | {'per-frame ms':>12} "
          f"| {'speed-up':>8} | {'fastest-run speed-up':>20}")
    with torch.inference_mode():
        for t in args.frames:
            clip = torch.randn(1, 3, t, 224, 224)
            n_tube = model.visual.forward_tokens(clip).shape[1]
            n_frame = model.visual.forward_per_frame(clip).shape[1]
            (tube_ms, tube_min), (frame_ms, frame_min) = median_ms(
                [lambda: model.visual.forward_tokens(clip), lambda: model.visual.forward_per_frame(clip)], args.repeats)
            print(f"{t:>6} | {n_tube:>11} | {tube_ms:>8.1f} | {n_frame:>16} | {frame_ms:>12.1f} "
                  f"| {frame_ms / tube_ms:>7.1f}x | {frame_min / tube_min:>19.1f}x")

        print("\n(b) generation (greedy, 32-frame clips' 540 visual tokens each, 12-layer width-768 decoder)")
        print(f"{'batch':>5} | {'new tokens':>10} | {'cache ms/token':>14} | {'no-cache ms/token':>17} | {'speed-up':>8} "
              f"| {'fastest-run speed-up':>20}")
        for batch in args.gen_batch:
            video = torch.randn(batch, 3, 32, 224, 224)
            kv = model.cross_kv(model.visual.forward_tokens(video))
            sot = [[49406] for _ in range(batch)]
            for n in args.new_tokens:
                def run(use_cache: bool) -> list[list[int]]:
                    out = generate(model.text, kv, sot, eos_id=-1, max_new_tokens=n, use_cache=use_cache)
                    assert all(len(row) == n for row in out)
                    return out

                (cached, cached_min), (uncached, uncached_min) = median_ms(
                    [lambda: run(True), lambda: run(False)], args.repeats)
                print(f"{batch:>5} | {n:>10} | {cached / n:>14.2f} | {uncached / n:>17.2f} | {uncached / cached:>7.1f}x "
                      f"| {uncached_min / cached_min:>19.1f}x")


if __name__ == "__main__":
    main()
