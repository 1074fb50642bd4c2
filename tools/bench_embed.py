"""Benchmark `embed` and `search` on this machine (random weights: timings and memory only).

(a) clips/s of ``embed_folder`` end to end (listing, probing, decoding in W worker processes,
    encoding, shard writes) against the model alone on the same clips decoded and preprocessed
    beforehand, for each preset and worker count; the ratio end-to-end / model-only shows whether
    decoding hides behind the model (target: >= 0.9 with 2 workers at B-16).
(b) peak RSS of a fresh process embedding 10 and then 200 clips (tiny preset, decoding in the
    main process so that every byte is counted): memory must not grow with the folder (target:
    difference < 100 MB).
(c) search over N synthetic 768-d float16 rows (default 1,000,000; shards of 4,096 rows, as
    ``embed`` writes them): latency of a vector query (no model: the scan alone) and of a text
    query (model loaded beforehand), and the peak RSS of the searching process.

The clips are copies of a few synthetic 320x240, 30 fps, 4 s h264 clips (decoding cost close to an
MSR-VTT clip), or the videos of ``--videos DIR``.

Usage: ``python tools/bench_embed.py [--presets mammut-video-tiny mammut-video-B-16] [--clips 32]
[--workers 0 1 2] [--frames 8] [--batch-size 8] [--device cpu] [--rss-clips 10 200]
[--search-rows 1000000] [--parts a b c] [--json FILE]``

``--json FILE`` also writes the numbers printed as JSON: {"torch", "a": [rows], "b": [rows], "c": {...}}, rewritten
after each part so that the parts done before a failure are kept.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

import mammut_video as mv
from mammut_video.video import moving_pattern, read_clip, write_clip

SHARD_ROWS = 4096
RESULTS: dict = {}  # what the parts print, for --json


def make_clips(folder: Path, count: int, source: Path | None, size: tuple[int, int] = (240, 320),
               seconds: float = 4.0) -> Path:
    """``count`` videos in ``folder``: copies of ``source``'s videos, or of 4 synthetic clips."""
    folder.mkdir(parents=True, exist_ok=True)
    if source is not None:
        originals = sorted(p for p in source.rglob("*") if p.suffix.lower() in (".mp4", ".mkv", ".webm", ".avi"))
    else:
        originals = [write_clip(folder / f"original{i}.mp4", moving_pattern(int(30 * seconds), *size, seed=i), fps=30)
                     for i in range(4)]
    for i in range(count):
        shutil.copy(originals[i % len(originals)], folder / f"clip{i:05d}{originals[i % len(originals)].suffix}")
    for p in originals:
        if p.parent == folder:
            p.unlink()
    return folder


def model_only_rate(preset: str, videos: list[Path], frames: int, batch: int, device: torch.device) -> float:
    """Clips/s of ``encode_video`` alone on clips decoded and preprocessed beforehand (as embed batches them)."""
    from mammut_video.runtime.precision import inference_autocast

    torch.manual_seed(0)
    model = mv.create_model(preset).eval().to(device)
    clips = [model.preprocess(read_clip(v, frames)) for v in videos]
    batches = [torch.stack(clips[i:i + batch]) for i in range(0, len(clips), batch)]
    with inference_autocast(device, None):  # what embed runs under
        model.encode_video(batches[0].to(device))  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for b in batches:
            model.encode_video(b.to(device)).embedding.cpu()
        elapsed = time.perf_counter() - start
    return len(clips) / elapsed


def end_to_end_rate(preset: str, folder: Path, frames: int, batch: int, workers: int, device: str) -> float:
    """Clips/s of ``embed_folder`` (the loop's time: decoding, encoding, shard writes; not model loading)."""
    with tempfile.TemporaryDirectory() as out:
        summary = mv.embed_folder(folder, out=Path(out) / "emb", preset=preset, frames=frames, batch_size=batch,
                                  workers=workers, device=device, progress=False)
    return summary.clips_per_second


def part_a(args: argparse.Namespace, root: Path) -> None:
    folder = make_clips(root / "a", args.clips, args.videos)
    videos = sorted(folder.iterdir())
    device = torch.device(args.device)
    print(f"\n(a) clips/s, {len(videos)} clips, {args.frames} frames, batch {args.batch_size}, device {device}, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'preset':<18} | {'model only':>10} | {'workers':>7} | {'end to end':>10} | {'ratio':>5}")
    for preset in args.presets:
        alone = model_only_rate(preset, videos, args.frames, args.batch_size, device)
        for workers in args.workers:
            e2e = end_to_end_rate(preset, folder, args.frames, args.batch_size, workers, args.device)
            print(f"{preset:<18} | {alone:10.2f} | {workers:>7} | {e2e:10.2f} | {e2e / alone:5.2f}", flush=True)
            RESULTS.setdefault("a", []).append({"preset": preset, "clips": len(videos), "frames": args.frames,
                                                "batch": args.batch_size, "device": str(device), "workers": workers,
                                                "model_only": alone, "end_to_end": e2e, "ratio": e2e / alone})


_RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import mammut_video as mv
    s = mv.embed_folder(sys.argv[1], out=sys.argv[2], preset="mammut-video-tiny", frames=8, workers=0,
                        device="cpu", progress=False)
    print(json.dumps({"clips": s.clips, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def part_b(args: argparse.Namespace, root: Path) -> None:
    print("\n(b) peak RSS of one process embedding N clips (mammut-video-tiny, 8 frames, decoding in-process)")
    results = []
    for n in args.rss_clips:
        folder = make_clips(root / f"b{n}", n, args.videos, size=(120, 160), seconds=2.0)
        out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(folder), str(root / f"b{n}-out")],
                             capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{n:>6} clips: {results[-1]['maxrss_mb']:8.1f} MB ({results[-1]['clips']} embedded)", flush=True)
    RESULTS["b"] = [{"folder_clips": n, **r} for n, r in zip(args.rss_clips, results)]
    if len(results) > 1:
        print(f"difference {results[-1]['maxrss_mb'] - results[0]['maxrss_mb']:+.1f} MB (target < 100 MB)")


def make_index(out: Path, rows: int, width: int = 768) -> None:
    """An embedding folder of ``rows`` random L2-normalised float16 rows, as embed writes one."""
    from mammut_video.embed.store import write_shard

    generator = torch.Generator().manual_seed(0)
    for first in range(0, rows, SHARD_ROWS):
        n = min(SHARD_ROWS, rows - first)
        vectors = torch.nn.functional.normalize(torch.randn(n, width, generator=generator), dim=1).half()
        records = [{"path": f"videos/{i:07d}.mp4", "window": 0, "windows": 1, "start": 0.0, "end": 10.0,
                    "frames": 32, "duration": 10.0, "size": 1_000_000, "mtime": 1.7e9} for i in range(first, first + n)]
        write_shard(out / "shards" / f"r0-{first // SHARD_ROWS:05d}.safetensors", records, vectors, None)
    settings = {"kind": "embed", "format_version": 1, "input": "/videos", "input_kind": "folder", "root": "/",
                "preset": "mammut-video-B-16", "seed": 0, "embed_dim": width, "frames": 32, "dtype": "float16"}
    (out / "settings.json").write_text(json.dumps(settings))


_SEARCH_SCRIPT = textwrap.dedent("""
    import json, resource, statistics, sys, time
    import torch
    import mammut_video as mv
    def rss_mb():
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) / 1024

    index = mv.EmbeddingIndex(sys.argv[1])
    query = torch.nn.functional.normalize(torch.randn(index.width, generator=torch.Generator().manual_seed(1)), dim=0)
    before = rss_mb()
    times, cpu = [], []
    for _ in range(int(sys.argv[2])):
        start, start_cpu = time.perf_counter(), time.process_time()
        hits = index.search(query, k=10)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    scan_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"rows": len(index), "vector_s": times, "vector_cpu_s": cpu, "best": hits[0].score,
              "rss_before_mb": before, "scan_maxrss_mb": scan_rss}
    if sys.argv[3] == "text":
        start = time.perf_counter()
        index.model  # loaded once, as a long-lived search service would
        result["load_s"] = time.perf_counter() - start
        result["text_s"] = []
        for text in ("a man is cooking", "two girls making easter eggs"):  # the first builds the tokenizer
            start = time.perf_counter()
            index.search(text, k=10)
            result["text_s"].append(time.perf_counter() - start)
        result["text_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))
""")


def part_c(args: argparse.Namespace, root: Path) -> None:
    out = root / "c"
    started = time.perf_counter()
    make_index(out, args.search_rows)
    size = sum(p.stat().st_size for p in (out / "shards").iterdir()) / 2**20
    print(f"\n(c) search over {args.search_rows:,} rows of 768-d float16 ({size:,.0f} MB in "
          f"{len(list((out / 'shards').iterdir()))} shards; written in {time.perf_counter() - started:.0f} s)")
    proc = subprocess.run([sys.executable, "-c", _SEARCH_SCRIPT, str(out), str(args.search_repeats),
                           "text" if args.text_query else "vector"], capture_output=True, text=True, check=True)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    RESULTS["c"] = {"search_rows": args.search_rows, "shards_mb": size, **r}
    print(f"vector query, top 10: median {statistics.median(r['vector_s']):.3f} s wall, "
          f"{statistics.median(r['vector_cpu_s']):.3f} s CPU (fastest {min(r['vector_s']):.3f} s, first "
          f"{r['vector_s'][0]:.3f} s, {len(r['vector_s'])} queries); RSS {r['rss_before_mb']:.0f} MB before the "
          f"first query (imports), peak {r['scan_maxrss_mb']:.0f} MB")
    if "text_s" in r:
        print(f"text query: B-16 model loaded in {r['load_s']:.1f} s, then {r['text_s'][0]:.3f} s for the first query "
              f"(builds the tokenizer), {r['text_s'][1]:.3f} s for the next; peak RSS with the model "
              f"{r['text_maxrss_mb']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=("a", "b", "c"), default=["a", "b", "c"], help="what to run")
    parser.add_argument("--presets", nargs="+", default=["mammut-video-tiny", "mammut-video-B-16"])
    parser.add_argument("--clips", type=int, default=32, help="(a) clips per measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="(a) decoding processes")
    parser.add_argument("--frames", type=int, default=8, help="(a) frames per clip")
    parser.add_argument("--batch-size", type=int, default=8, help="(a) clips per batch")
    parser.add_argument("--device", default="cpu", help="(a) cpu or cuda")
    parser.add_argument("--videos", type=Path, help="(a, b) copy these videos instead of synthetic clips")
    parser.add_argument("--rss-clips", type=int, nargs="+", default=[10, 200], help="(b) folder sizes")
    parser.add_argument("--search-rows", type=int, default=1_000_000, help="(c) rows in the index")
    parser.add_argument("--search-repeats", type=int, default=5, help="(c) timed queries")
    parser.add_argument("--text-query", action="store_true", help="(c) also time a text query (loads B-16)")
    parser.add_argument("--json", type=Path, help="also write the numbers as JSON to this file (after each part)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, mammut-video {mv.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            {"a": part_a, "b": part_b, "c": part_c}[part](args, Path(tmp))
            if args.json:
                args.json.write_text(json.dumps({"torch": torch.__version__, **RESULTS}, indent=1) + "\n")


if __name__ == "__main__":
    main()
