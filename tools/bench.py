"""One benchmark report: runs the bench scripts in tools/ with short settings and regenerates the table.

Each part is a subprocess (a bench script with ``--json``, or ``mammut-video eval`` on a small synthetic
dataset); a part that fails or times out gives a row saying so, the others still run, and the exit code is 1.

Parts (``--skip`` takes these names):

  encoder         bench_model (a): sparse tubes vs every frame through the same ViT, B-16, one 32-frame clip
  kv-cache        bench_model (b): greedy generation with the KV cache vs none, batch 1 and 4, 32 new tokens
  rank            bench_model (d): the rank protocol, prefix tree vs every candidate alone, 1,000 candidates
  memory          bench_model (e): peak memory of 64 questions about one clip, now vs the protocol before
  decode          bench_decode: read_clip / raw decord get_batch, 32 frames, real clips when present
  embed           bench_embed (a) tiny only, 16 clips, and (b) peak RSS of one process for 10 vs 50 clips
  eval            ``mammut-video eval msrvtt-qa`` (generate protocol) with a random-weight tiny checkpoint on a
                  synthetic MSR-VTT-QA test split: questions/s as eval reports it, and the process's wall time
  train           bench_train's fp32 configuration of the tiny preset (its ``--one``): samples/s
  precision       bench_model (g), with --device cuda only: B-16 encode + caption clips/s and eval-style
                  questions/s in fp32, bf16 and fp16 (on a CPU bf16 is no guide to a GPU; skipped there)
  learning-proof  not run: read from docs/learning_proof.json (one row per run), one row when missing

The table goes to stdout, to docs/benchmarks.md (with the date and the machine) and between the markers
``<!-- bench:start -->`` and ``<!-- bench:end -->`` in README.md (left untouched when they are absent). With
``--device cuda`` it goes to docs/benchmarks-cuda.md and between ``<!-- bench-cuda:start -->`` and
``<!-- bench-cuda:end -->``, never over the CPU table (the learning-proof rows, CPU runs, stay out of it).

    python tools/bench.py [--skip PART ...] [--device cpu|cuda] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
CUDA_START, CUDA_END = "<!-- bench-cuda:start -->", "<!-- bench-cuda:end -->"  # a GPU table never replaces the CPU's


def on_gpu(device: str) -> bool:
    """Whether ``device`` ("cpu", "cuda", "cuda:1") is a GPU."""
    return device.startswith("cuda")


def markers(device: str) -> tuple[str, str]:
    """The README markers of ``device``'s table: the CPU table's, or the GPU table's for cuda."""
    return (CUDA_START, CUDA_END) if on_gpu(device) else (START, END)
ACCURACY_KEYS = ("count", "colour", "shape", "direction", "first", "all")


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    what: str
    result: str
    command: str
    machine: str


@dataclass(frozen=True)
class Context:
    """What every part needs: the settings and where to put scratch files."""

    device: str
    threads: int
    quick: bool
    timeout: float
    tmp: Path
    machine: str  # label of the machine with the device, e.g. "AMD EPYC, 2 cores, cpu, torch 2.3"
    cpu_machine: str  # the same with the device "cpu" (parts that never use an accelerator)


@dataclass(frozen=True)
class Outcome:
    """A subprocess's end: its JSON (if it wrote any), its stdout, and why it failed (None if it did not)."""

    data: dict | None
    stdout: str
    error: str | None


# ---------------------------------------------------------------------------------------------- formatting


def cell(text: str) -> str:
    """A markdown table cell: pipes escaped, no line breaks."""
    return " ".join(str(text).split()).replace("|", "\\|")


def code(command: str) -> str:
    """A command as inline code (empty stays empty)."""
    return f"`{command}`" if command else ""


def render_table(rows: list[Row]) -> str:
    """The markdown table of ``rows``, one line per row."""
    lines = ["| Benchmark | Result | Command | Machine |", "|---|---|---|---|"]
    lines += [f"| {cell(r.what)} | {cell(r.result)} | {cell(code(r.command))} | {cell(r.machine)} |" for r in rows]
    return "\n".join(lines)


def replace_between_markers(text: str, table: str, marks: tuple[str, str] = (START, END)) -> str | None:
    """``text`` with what lies between the ``marks`` replaced by ``table``; None if a marker is missing."""
    first, last = marks
    start = text.find(first)
    end = text.find(last, start + len(first)) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    return f"{text[:start + len(first)]}\n{table}\n{text[end:]}"


def one_line(text: str, limit: int = 200) -> str:
    """The last non-empty line of ``text`` (a traceback's error), shortened to ``limit`` characters."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return last if len(last) <= limit else last[:limit - 3] + "..."


def failed_row(what: str, reason: str, command: str, machine: str) -> Row:
    """The row of a part that failed, with why in one line."""
    return Row(what, f"FAILED: {one_line(reason) or 'no error message'}", command, machine)


def is_failure(row: Row) -> bool:
    """Whether ``row`` reports a failed part."""
    return row.result.startswith("FAILED")


def ratio_text(slow: list[float], fast: list[float]) -> str:
    """``slow / fast`` from [median, fastest] pairs: "**R x** (fastest runs: r x)"."""
    return f"**{slow[0] / fast[0]:.1f}x** (fastest runs: {slow[1] / fast[1]:.1f}x)"


def plural(count: int, noun: str) -> str:
    """"1 question" / "2 questions"."""
    return f"{count} {noun}{'s' if count != 1 else ''}"


def threads_text(threads: int) -> str:
    """"1 torch thread" / "2 torch threads"."""
    return plural(threads, "torch thread")


def short_preset(preset: str) -> str:
    """"mammut-video-B-16" -> "B-16"."""
    return preset.removeprefix("mammut-video-")


# ---------------------------------------------------------------------------------------------- rows from JSON


def encoder_rows(data: dict, command: str, machine: str) -> list[Row]:
    """Rows of bench_model (a): tubes vs per-frame encoding, one per frame count."""
    rows = []
    for r in (r for r in data.get("records", []) if r["section"] == "a"):
        what = (f"Encoder: sparse tubes vs every frame through the same ViT ({short_preset(data['preset'])}, one "
                f"{r['frames']}-frame {r['image_size']}px clip, {threads_text(data['threads'])}, interleaved runs)")
        result = (f"tubes {ratio_text(r['per_frame_ms'], r['tube_ms'])} faster; medians: tubes "
                  f"{r['tube_ms'][0]:.0f} ms ({r['tube_tokens']} tokens), per frame {r['per_frame_ms'][0]:.0f} ms "
                  f"({r['per_frame_tokens']} tokens)")
        rows.append(Row(what, result, command, machine))
    return rows


def kv_cache_rows(data: dict, command: str, machine: str) -> list[Row]:
    """Rows of bench_model (b): greedy generation with the KV cache vs none, one per batch and length."""
    rows = []
    for r in (r for r in data.get("records", []) if r["section"] == "b"):
        n = r["new_tokens"]
        what = (f"Greedy generation: KV cache vs no cache ({short_preset(data['preset'])}, {r['frames']}-frame "
                f"clips, batch {r['batch']}, {n} new tokens, {threads_text(data['threads'])}, interleaved runs)")
        result = (f"cache {ratio_text(r['no_cache_ms'], r['cache_ms'])} faster; medians: {r['cache_ms'][0] / n:.1f} "
                  f"vs {r['no_cache_ms'][0] / n:.1f} ms per token (prefix re-run with cached cross-attention K/V: "
                  f"{r['prefix_rerun_ms'][0] / n:.1f})")
        if "compiled_cache_ms" in r:
            result += (f"; with the step compiled (`--compile`): {ratio_text(r['no_cache_ms'], r['compiled_cache_ms'])} "
                       f"faster than no cache, {r['compiled_cache_ms'][0] / n:.1f} ms per token")
        if "step_read_gbps" in r:
            result += (f"; a cached step reads {r['step_weights_mb']:.0f} MB of weights, at >= "
                       f"{r['step_read_gbps']:.1f} GB/s in the fastest run (a plain 512 MiB read: {r['read_gbps']:.1f} "
                       "GB/s)")
        rows.append(Row(what, result, command, machine))
    return rows


def rank_rows(data: dict, command: str, machine: str) -> list[Row]:
    """The row of bench_model (d): the rank protocol's prefix tree vs every candidate fed alone."""
    (r,) = [r for r in data.get("records", []) if r["section"] == "d"]
    what = (f"Rank protocol: candidates as a prefix tree vs each fed alone after its own copy of the prompt cache "
            f"({short_preset(data['preset'])}, {r['candidates']} candidates: {r['source']}, {r['tree_nodes']} tree "
            f"nodes; {plural(r['questions'], 'question')} about one clip, {threads_text(data['threads'])}; "
            "target >= 3x)")
    per_q = 1000 * r["questions"]
    result = (f"tree {ratio_text(r['no_sharing_ms'], r['prefix_tree_ms'])} faster; medians: "
              f"{r['prefix_tree_ms'][0] / per_q:.2f} vs {r['no_sharing_ms'][0] / per_q:.2f} s per question; the "
              f"tree's {r['tree_gflop']:.0f} GFLOP ran at {r['tree_gflop'] / r['prefix_tree_ms'][1] * 1000:.0f} "
              f"GFLOP/s (a large fp32 matmul: {r['matmul_gflops']:.0f})")
    return [Row(what, result, command, machine)]


def precision_rows(data: dict, command: str, machine: str) -> list[Row]:
    """The row of bench_model (g): clips/s of encode + caption and questions/s per precision, against fp32."""
    runs = {r["precision"]: r for r in data.get("records", []) if r["section"] == "g"}
    base = runs["fp32"]
    what = (f"Precision: encode + caption clips/s and eval's generate protocol questions/s "
            f"({short_preset(data['preset'])}, {base['clips']} {base['frames']}-frame clips, captions of 30 new "
            f"tokens; {base['questions']} questions, 24 per clip, 10 new tokens; medians)")
    parts = []
    for name, r in runs.items():
        text = f"{name} **{r['clips_per_s']:.2f}** clips/s, {r['questions_per_s']:.1f} questions/s"
        if name != "fp32":
            text += (f" ({r['clips_per_s'] / base['clips_per_s']:.2f}x / "
                     f"{r['questions_per_s'] / base['questions_per_s']:.2f}x fp32's)")
        parts.append(text)
    return [Row(what, "; ".join(parts), command, machine)]


def memory_rows(data: dict, command: str, machine: str) -> list[Row]:
    """The row of bench_model (e): peak memory of answering 64 questions about one clip."""
    (r,) = [r for r in data.get("records", []) if r["section"] == "e"]
    before, copied, shared = (statistics.median(r[k]) for k in ("before_mib", "copied_mib", "shared_mib"))
    what = (f"Peak memory answering {r['questions']} questions about one clip ({short_preset(data['preset'])}, greedy, "
            f"10 new tokens; {plural(len(r['shared_mib']), 'interleaved run')}; target <= 1/8 of the protocol before)")
    result = (f"**{before / shared:.1f}x** less than before; medians: {shared:.0f} MiB now, {before:.0f} MiB before "
              f"(K/V copied per question, vocabulary logits at every prompt position), {copied:.0f} MiB with only "
              f"the K/V copied")
    return [Row(what, result, command, machine)]


def decode_rows(data: dict, command: str, machine: str) -> list[Row]:
    """The row of bench_decode: read_clip / raw decord over its clips."""
    what = (f"Decode overhead: read_clip / raw decord get_batch ({data['frames']} frames, {len(data['clips'])} clips, "
            f"{data['repeats']} interleaved runs each; target <= 1.15)")
    result = (f"**{data['ratio_median']:.2f}** median over clips of the per-clip median ratio (max "
              f"{data['ratio_max']:.2f}); fastest runs: {data['min_ratio_median']:.2f} (max {data['min_ratio_max']:.2f})")
    return [Row(what, result, command, machine)]


def embed_rows(data: dict, command: str, machine: str, cpu_machine: str) -> list[Row]:
    """Rows of bench_embed: (a) clips/s model only and end to end per worker count, (b) peak RSS per folder size."""
    rows = []
    by_preset: dict[str, list[dict]] = {}
    for r in data.get("a", []):
        by_preset.setdefault(r["preset"], []).append(r)
    for preset, runs in by_preset.items():
        first = runs[0]
        what = (f"embed clips/s ({short_preset(preset)}, {first['clips']} synthetic 320x240 4 s clips, "
                f"{first['frames']} frames, batch {first['batch']})")
        ends = ", ".join(f"{r['end_to_end']:.1f} with {r['workers']} worker{'' if r['workers'] == 1 else 's'} "
                         f"({r['ratio']:.2f}x)" for r in runs)
        result = f"model alone **{first['model_only']:.1f}** clips/s; end to end {ends}"
        rows.append(Row(what, result, command, machine))
    if data.get("b"):
        runs = data["b"]
        what = "embed peak RSS of one process (tiny, 8 frames, decoding in-process, synthetic 160x120 2 s clips)"
        sizes = ", ".join(f"{r['folder_clips']} clips **{r['maxrss_mb']:.0f} MB**" for r in runs)
        growth = f" ({runs[-1]['maxrss_mb'] - runs[0]['maxrss_mb']:+.0f} MB; target < 100 MB)" if len(runs) > 1 else ""
        rows.append(Row(what, sizes + growth, command, cpu_machine))
    return rows


def eval_rows(metrics: dict, wall_s: float, videos: int | None, command: str, machine: str) -> list[Row]:
    """The eval row: questions/s from eval's metrics.json (its loop) and from the process's wall time."""
    run, items = metrics["run"], metrics["counts"]["items"]
    clips = f" on {videos} clips" if videos else ""
    what = (f"eval questions/s: what `mammut-video eval msrvtt-qa` reports with its defaults ({metrics['protocol']} "
            f"protocol, {metrics['precision']}, {metrics['frames']} frames, min(4, cores) decoding workers) for a tiny "
            f"random-weight checkpoint (answers run to the 10-token limit) on {items} questions{clips} of a "
            "synthetic 64px test split (cheaper to decode than real clips)")
    result = (f"**{run['items_per_second']:.1f}** questions/s as eval reports it (its loop: decoding, encoding, "
              f"answering: {run['seconds']:.1f} s); {items / wall_s:.1f} questions/s over the whole command "
              f"({wall_s:.1f} s with start-up and model loading)")
    return [Row(what, result, command, machine)]


def train_rows(data: dict, command: str, machine: str) -> list[Row]:
    """The training row: samples/s of one bench_train configuration."""
    ckpt = "on" if data["grad_checkpointing"] else "off"
    what = (f"training samples/s (finetune step: forward, loss, backward, AdamW; {short_preset(data['preset'])}, "
            f"{data['frames']} frames, batch {data['batch']}, {data['precision']}, grad checkpointing {ckpt}, "
            f"frozen: {data['frozen']}; mean over the timed steps after one warm-up)")
    result = (f"**{data['samples_per_s']:.2f}** samples/s ({data['s_per_step']:.2f} s/step; peak RSS "
              f"{data['peak_rss_mb']} MB{', peak CUDA ' + str(data['peak_cuda_mb']) + ' MB' if 'peak_cuda_mb' in data else ''})")
    return [Row(what, result, command, machine)]


def learning_proof_rows(path: Path) -> list[Row]:
    """One row per run of the learning-proof file, or one row saying it is missing or unreadable."""
    if not path.is_file():
        return [Row("Learning proof (accuracy after training on synthetic clips)",
                    f"not measured: {path.name} not found (written by the learning-proof runs, which take 20+ "
                    "minutes and are not run by bench.py)", "", "")]
    try:
        data = json.loads(path.read_text())
        return [learning_proof_row(run, data["machine"], data["date"]) for run in data["runs"]]
    except (ValueError, KeyError, TypeError) as e:
        return [failed_row("Learning proof", f"{path.name} unreadable: {type(e).__name__}: {e}", "", "")]


def learning_proof_row(run: dict, machine: str, date: str) -> Row:
    """The row of one learning-proof run: its accuracies in percent, its command, its machine and date."""
    what = f"Learning proof: {run['name']} ({run['steps']} steps, {run['minutes']:.0f} min)"
    result = "accuracy " + percentages(run["accuracy"])
    if run.get("majority_baseline"):
        result += f" (always the most common answer: {percentages(run['majority_baseline'])})"
    return Row(what, result, run["command"], f"{machine} ({date})")


def percentages(values: dict[str, float]) -> str:
    """"count 93.0%, colour 88.5%, ..." in the order of ACCURACY_KEYS (keys not there are left out)."""
    return ", ".join(f"{key} {values[key]:.1f}%" for key in ACCURACY_KEYS if key in values)


# ---------------------------------------------------------------------------------------------- running parts


def subprocess_env() -> dict[str, str]:
    """The environment of the subprocesses: this checkout's package first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run(argv: list[str], timeout: float, json_path: Path | None = None) -> Outcome:
    """Run ``python argv...`` in the repository root; its JSON is read from ``json_path`` (if written)."""
    started = time.perf_counter()
    # its own process group, so that a timeout also ends the processes it started (decoding workers, ...)
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return Outcome(read_json(json_path), "", f"timed out after {timeout:g} s")
    print(f"[bench]   {shlex.join(argv)[:60]}... {time.perf_counter() - started:.0f} s, exit {proc.returncode}",
          file=sys.stderr, flush=True)
    error = None if proc.returncode == 0 else (one_line(stderr) or f"exit code {proc.returncode}")
    return Outcome(read_json(json_path), stdout, error)


def read_json(path: Path | None) -> dict | None:
    """The JSON in ``path``, or None when there is no such file (or it is not JSON)."""
    try:
        return json.loads(path.read_text()) if path is not None and path.is_file() else None
    except ValueError:
        return None


def shown(argv: list[str]) -> str:
    """How a command is shown in the table: ``python tools/x.py ...``."""
    return "python " + shlex.join(argv)


def script_part(ctx: Context, name: str, argv: list[str], what: str,
                to_rows: Callable[[dict, str], list[Row]], machine: str) -> list[Row]:
    """Run one bench script with ``--json`` and turn its JSON into rows; a failure adds a failed row."""
    json_path = ctx.tmp / f"{name}.json"
    outcome = run([*argv, "--json", str(json_path)], ctx.timeout, json_path)
    rows, error = rows_or_error(lambda: to_rows(outcome.data, shown(argv)) if outcome.data else [])
    error = outcome.error or error or (None if rows else "no numbers written")
    return rows + ([failed_row(what, error, shown(argv), machine)] if error else [])


def rows_or_error(make: Callable[[], list[Row]]) -> tuple[list[Row], str | None]:
    """``make()``'s rows, or no rows and why when the numbers it reads are not what it expects."""
    try:
        return make(), None
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as e:
        return [], f"unexpected output: {type(e).__name__}: {e}"


def model_argv(ctx: Context, section: str) -> list[str]:
    """bench_model's arguments for section a, b, d, e or g."""
    argv = ["tools/bench_model.py", "--sections", section, "--device", ctx.device]
    argv += ["--preset", "mammut-video-tiny"] if ctx.quick else []
    if section == "a":
        argv += ["--frames", "8", "--repeats", "1"] if ctx.quick else ["--frames", "32", "--repeats", "3"]
    elif section == "d":
        argv += ["--rank-questions", "1" if ctx.quick else "2", "--rank-repeats", "1"]
    elif section == "e":
        argv += ["--memory-repeats", "1" if ctx.quick else "3"]
    elif section == "g":
        argv += ["--precisions", "fp32", "bf16", "fp16"]
        argv += ["--clip-batch", "2", "--gen-repeats", "1"] if ctx.quick else ["--gen-repeats", "3"]
    else:
        argv += ["--gen-batch", "1", "4"]
        argv += ["--new-tokens", "8", "--gen-repeats", "1"] if ctx.quick else ["--new-tokens", "32", "--gen-repeats", "3"]
    return argv + (["--threads", str(ctx.threads)] if ctx.threads else [])


def model_part(section: str, what: str,
               to_rows: Callable[[dict, str, str], list[Row]]) -> Callable[[Context], list[Row]]:
    """The part that runs bench_model's ``section`` and turns its JSON into rows with ``to_rows``."""
    def part(ctx: Context) -> list[Row]:
        return script_part(ctx, f"model-{section}", model_argv(ctx, section), what,
                           lambda d, c: to_rows(d, c, ctx.machine), ctx.machine)

    part.__doc__ = f"{what} (bench_model {section})."
    return part


def part_decode(ctx: Context) -> list[Row]:
    """read_clip / decord (bench_decode)."""
    argv = ["tools/bench_decode.py"] + (["--frames", "8", "--repeats", "1"] if ctx.quick else ["--repeats", "5"])
    return script_part(ctx, "decode", argv, "Decode overhead: read_clip / decord",
                       lambda d, c: decode_rows(d, c, ctx.cpu_machine), ctx.cpu_machine)


def part_embed(ctx: Context) -> list[Row]:
    """embed clips/s (bench_embed a, tiny only) and peak RSS (b)."""
    argv = ["tools/bench_embed.py", "--parts", "a", "b", "--presets", "mammut-video-tiny", "--device", ctx.device]
    argv += (["--clips", "4", "--batch-size", "4", "--workers", "0", "--rss-clips", "4", "8"] if ctx.quick
             else ["--clips", "16", "--workers", "0", "1", "2", "--rss-clips", "10", "50"])
    return script_part(ctx, "embed", argv, "embed clips/s and peak RSS",
                       lambda d, c: embed_rows(d, c, ctx.machine, ctx.cpu_machine), ctx.machine)


_EVAL_SETUP = ("import sys, mammut_video as mv; from mammut_video.data import make_synthetic; "
               "make_synthetic(sys.argv[1], kind='msrvtt', num_videos=int(sys.argv[2])); "
               "mv.create_model('mammut-video-tiny').save_pretrained(sys.argv[3])")


def part_eval(ctx: Context) -> list[Row]:
    """``mammut-video eval msrvtt-qa`` on a synthetic test split with a tiny random-weight checkpoint."""
    what, videos = "eval questions/s (msrvtt-qa, tiny)", 12 if ctx.quick else 200
    data, ckpt, out = ctx.tmp / "eval-data", ctx.tmp / "eval-ckpt", ctx.tmp / "eval-out"
    setup = run(["-c", _EVAL_SETUP, str(data), str(videos), str(ckpt)], ctx.timeout)
    shown_cmd = (f"make_synthetic(DATA, kind='msrvtt', num_videos={videos}); create_model('mammut-video-tiny')"
                 f".save_pretrained(CKPT); mammut-video eval msrvtt-qa --data-root DATA/msrvtt --checkpoint CKPT "
                 f"--device {ctx.device} --no-progress --out OUT")
    if setup.error:
        return [failed_row(what, f"synthetic data: {setup.error}", shown_cmd, ctx.machine)]
    argv = ["-m", "mammut_video", "eval", "msrvtt-qa", "--data-root", str(data / "msrvtt"), "--checkpoint",
            str(ckpt), "--device", ctx.device, "--no-progress", "--out", str(out)]
    started = time.perf_counter()
    outcome = run(argv, ctx.timeout, out / "metrics.json")
    wall = time.perf_counter() - started
    if outcome.error or not outcome.data:
        return [failed_row(what, outcome.error or "no metrics.json written", shown_cmd, ctx.machine)]
    rows, error = rows_or_error(lambda: eval_rows(outcome.data, wall, count_videos(outcome.data.get("annotation_file")),
                                                  shown_cmd, ctx.machine))
    return rows or [failed_row(what, error or "no numbers", shown_cmd, ctx.machine)]


def count_videos(annotation_file: str | None) -> int | None:
    """Distinct ``video_id`` values of an MSRVTT-QA annotation file (None if it cannot be read)."""
    try:
        return len({q["video_id"] for q in json.loads(Path(annotation_file).read_text())})
    except (TypeError, ValueError, KeyError, OSError):
        return None


def part_train(ctx: Context) -> list[Row]:
    """bench_train's fp32 configuration of the tiny preset, in one process (its ``--one``)."""
    frames, batch, steps = (4, 4, 1) if ctx.quick else (8, 32, 3)
    spec = {"preset": "mammut-video-tiny", "frames": frames, "batch": batch, "precision": "fp32",
            "checkpointing": False, "freeze": "", "steps": steps, "device": ctx.device}
    argv = ["tools/bench_train.py", "--one", json.dumps(spec)]
    shown_cmd, what = shown(argv), "training samples/s (tiny, fp32)"
    outcome = run(argv, ctx.timeout)
    if outcome.error:
        return [failed_row(what, outcome.error, shown_cmd, ctx.machine)]
    rows, error = rows_or_error(lambda: train_rows(json.loads(outcome.stdout.strip().splitlines()[-1]), shown_cmd,
                                                   ctx.machine))
    return rows or [failed_row(what, error or "no numbers", shown_cmd, ctx.machine)]


PARTS: dict[str, Callable[[Context], list[Row]]] = {
    "encoder": model_part("a", "Encoder: tubes vs per-frame", encoder_rows),
    "kv-cache": model_part("b", "Greedy generation: KV cache vs no cache", kv_cache_rows),
    "rank": model_part("d", "Rank protocol: prefix tree vs every candidate alone", rank_rows),
    "memory": model_part("e", "Peak memory answering 64 questions", memory_rows),
    "decode": part_decode, "embed": part_embed,
    "eval": part_eval, "train": part_train,
    "precision": model_part("g", "Precision: fp32 vs bf16 vs fp16", precision_rows),
}
GPU_ONLY = {"precision"}  # bf16 / fp16 speed on a CPU says nothing about a GPU's


# ---------------------------------------------------------------------------------------------- the machine


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def device_name(device: str) -> str:
    """``device`` with the GPU's name when it is a CUDA device."""
    if not on_gpu(device):
        return device
    import torch

    return f"{device} ({torch.cuda.get_device_name(torch.device(device))})" if torch.cuda.is_available() else device


def torch_version() -> str:
    """The installed torch's version, without importing it."""
    from importlib.metadata import version

    return version("torch")


def machine_label(device: str) -> str:
    """Short machine description for the table's rows."""
    return f"{cpu_model()}, {os.cpu_count()} cores, {device_name(device)}, torch {torch_version()}"


# ---------------------------------------------------------------------------------------------- the report


def report(rows: list[Row], argv: list[str], device: str, started: datetime.datetime, wall_s: float) -> str:
    """The text of docs/benchmarks.md: how and where it was measured, then the table."""
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return "\n".join([
        "# Benchmarks", "",
        (f"Generated by `python tools/bench.py{' ' + shlex.join(argv) if argv else ''}` on "
         f"{started:%Y-%m-%d %H:%M} UTC in {wall_s / 60:.1f} min."), "",
        (f"- CPU: {cpu_model()}, {os.cpu_count()} cores; load average at the end {load} (shared machines make "
         "absolute times noisy; the ratios compare runs interleaved in one process)"),
        f"- torch {torch_version()}, device {device_name(device)}",
        ("- \"**R x** (fastest runs: r x)\": the ratio of the medians of the timed runs, and of the fastest runs "
         "(the least disturbed by other processes); random weights throughout (timings only)"),
        "- Learning-proof rows are read from docs/learning_proof.json, not measured here", "",
        render_table(rows), ""])


def update_readme(readme: Path, table: str, marks: tuple[str, str] = (START, END)) -> bool:
    """Put ``table`` between the README's ``marks``; False (file untouched) when they are absent."""
    text = readme.read_text() if readme.is_file() else ""
    new = replace_between_markers(text, table, marks)
    if new is None:
        return False
    if new != text:
        readme.write_text(new)
    return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip", nargs="+", default=[], choices=[*PARTS, "learning-proof"], metavar="PART",
                        help=f"parts not to run (no row for them): {', '.join([*PARTS, 'learning-proof'])}")
    parser.add_argument("--device", default="cpu",
                        help="device for the model parts (encoder, kv-cache, embed clips/s, eval, train): cpu, cuda "
                             "or cuda:N; decoding and the embed RSS part always run on the CPU (default: cpu)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of bench_model (encoder, kv-cache), 0 for torch's default; 1 is "
                             "steadier on a machine that other processes load (default: 1)")
    parser.add_argument("--quick", action="store_true",
                        help="much shorter settings (tiny preset, 8 frames, one timed run) to check that every part "
                             "runs; its numbers are not the headline ones")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a part may run before it counts as "
                                                                    "failed (default: 900)")
    parser.add_argument("--learning-proof", type=Path, default=ROOT / "docs" / "learning_proof.json",
                        help="learning-proof results to read (default: docs/learning_proof.json)")
    parser.add_argument("--doc", type=Path,
                        help="where to write the report (default: docs/benchmarks.md, docs/benchmarks-cuda.md for "
                             "--device cuda)")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md",
                        help=f"file whose text between the bench markers ({START} ... {END}; with --device cuda "
                             f"{CUDA_START} ... {CUDA_END}) is replaced by the table (default: README.md)")
    args = parser.parse_args(argv)
    if args.doc is None:
        args.doc = ROOT / "docs" / ("benchmarks-cuda.md" if on_gpu(args.device) else "benchmarks.md")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the parts, print and write the table; 1 if a part failed."""
    args = parse_args(argv)
    started, clock = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        ctx = Context(args.device, args.threads, args.quick, args.timeout, Path(tmp), machine_label(args.device),
                      machine_label("cpu"))
        for name, part in PARTS.items():
            if name in GPU_ONLY and not on_gpu(args.device):
                print(f"[bench] {name}: with --device cuda only; skipped", file=sys.stderr, flush=True)
            elif name not in args.skip:
                print(f"[bench] {name} ({time.perf_counter() - clock:.0f} s so far)", file=sys.stderr, flush=True)
                rows += part(ctx)
    if "learning-proof" not in args.skip and not on_gpu(args.device):  # CPU runs, read from a file
        rows += learning_proof_rows(args.learning_proof)
    wall = time.perf_counter() - clock
    table = render_table(rows)
    print(table)
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(report(rows, sys.argv[1:] if argv is None else argv, args.device, started, wall))
    marks = markers(args.device)
    if not update_readme(args.readme, table, marks):
        print(f"note: {args.readme.name} has no {marks[0]} ... {marks[1]} markers; left untouched", file=sys.stderr)
    print(f"[bench] done in {wall:.0f} s; report in {args.doc}", file=sys.stderr)
    return 1 if any(is_failure(r) for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
