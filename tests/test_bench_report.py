"""tools/bench.py: the table, the README markers, the rows made from the bench scripts' JSON (no benchmark runs),
and one slow end-to-end run of the report with its quickest settings."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_report", ROOT / "tools" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_report"] = bench  # dataclasses look their module up
_spec.loader.exec_module(bench)

MACHINE = "AMD EPYC, 2 cores, cpu, torch 2.3"
PROOF = {"machine": "AMD EPYC, 2 cores, Linux", "date": "2026-11-30", "runs": [
    {"name": "T8", "command": "mammut-video finetune --preset mammut-video-tiny --max-time 10m", "minutes": 21.4,
     "steps": 900, "accuracy": {"count": 91.0, "colour": 99.5, "shape": 97.25, "direction": 80.0, "first": 60.0,
                                "all": 85.5}},
    {"name": "T1", "command": "mammut-video finetune --preset mammut-video-tiny --max-time 10m --frames 1",
     "minutes": 20.0, "steps": 1000, "accuracy": {"count": 50.0, "colour": 98.0, "shape": 96.0, "direction": 30.0,
                                                  "first": 33.3, "all": 61.0}}]}


def table_lines(rows: list) -> list[str]:
    return bench.render_table(rows).splitlines()


def test_table_has_a_header_and_one_line_per_row() -> None:
    rows = [bench.Row("Encoder", "**11.6x** median", "python tools/bench_model.py --sections a", MACHINE),
            bench.Row("Decode", "1.02", "python tools/bench_decode.py", MACHINE)]
    lines = table_lines(rows)
    assert lines[:2] == ["| Benchmark | Result | Command | Machine |", "|---|---|---|---|"]
    assert lines[2] == f"| Encoder | **11.6x** median | `python tools/bench_model.py --sections a` | {MACHINE} |"
    assert len(lines) == 4


def test_table_cells_escape_pipes_and_line_breaks() -> None:
    (line,) = table_lines([bench.Row("a | b", "one\ntwo", "", "m")])[2:]
    assert line == "| a \\| b | one two |  | m |"


def test_markers_replaced_and_the_rest_kept() -> None:
    text = f"intro\n{bench.START}\nold table\n{bench.END}\noutro\n"
    new = bench.replace_between_markers(text, "| new |")
    assert new == f"intro\n{bench.START}\n| new |\n{bench.END}\noutro\n"
    assert bench.replace_between_markers(new, "| new |") == new  # idempotent


@pytest.mark.parametrize("text", ["no markers", f"only {bench.START}", f"only {bench.END}",
                                  f"{bench.END} reversed {bench.START}"])
def test_missing_markers_give_none(text: str) -> None:
    assert bench.replace_between_markers(text, "| t |") is None


def test_update_readme_leaves_a_file_without_markers_untouched(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n")
    assert not bench.update_readme(readme, "| t |")
    assert readme.read_text() == "# Title\n"
    readme.write_text(f"# Title\n{bench.START}{bench.END}\n")
    assert bench.update_readme(readme, "| t |")
    assert readme.read_text() == f"# Title\n{bench.START}\n| t |\n{bench.END}\n"


def test_missing_learning_proof_file_gives_one_row_without_numbers(tmp_path: Path) -> None:
    (row,) = bench.learning_proof_rows(tmp_path / "learning_proof.json")
    assert "not found" in row.result and "%" not in row.result
    assert not bench.is_failure(row)
    assert row.what in table_lines([row])[2]


def test_learning_proof_rows_read_the_file(tmp_path: Path) -> None:
    path = tmp_path / "learning_proof.json"
    path.write_text(json.dumps(PROOF))
    rows = bench.learning_proof_rows(path)
    assert [r.command for r in rows] == [run["command"] for run in PROOF["runs"]]
    assert rows[0].result == ("accuracy count 91.0%, colour 99.5%, shape 97.2%, direction 80.0%, first 60.0%, "
                              "all 85.5%")
    assert rows[0].machine == "AMD EPYC, 2 cores, Linux (2026-11-30)"
    assert "T8" in rows[0].what and "900 steps" in rows[0].what


def test_unreadable_learning_proof_file_is_a_failed_row(tmp_path: Path) -> None:
    path = tmp_path / "learning_proof.json"
    path.write_text('{"runs": [')
    (row,) = bench.learning_proof_rows(path)
    assert bench.is_failure(row)


def test_failed_part_row_says_why_in_one_line() -> None:
    stderr = "Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: out of memory\n\n"
    row = bench.failed_row("Encoder: tubes vs per-frame", stderr, "python tools/bench_model.py", MACHINE)
    assert row.result == "FAILED: RuntimeError: out of memory"
    assert bench.is_failure(row)
    (line,) = table_lines([row])[2:]
    assert "FAILED: RuntimeError: out of memory" in line and "Traceback" not in line
    assert len(bench.failed_row("x", "E" * 1000, "", "").result) < 220


def test_failing_or_hanging_subprocess_gives_a_failed_row(tmp_path: Path) -> None:
    ctx = bench.Context("cpu", 1, True, 20, tmp_path, MACHINE, MACHINE)
    (row,) = bench.script_part(ctx, "x", ["-c", "import sys; sys.exit('ValueError: boom')"], "X", lambda d, c: [],
                               MACHINE)
    assert (row.what, row.result, row.machine) == ("X", "FAILED: ValueError: boom", MACHINE)
    slow = bench.Context("cpu", 1, True, 0.5, tmp_path, MACHINE, MACHINE)
    (row,) = bench.script_part(slow, "y", ["-c", "import time; time.sleep(30)"], "Y", lambda d, c: [], MACHINE)
    assert row.result == "FAILED: timed out after 0.5 s"
    writes = "import json, sys; open(sys.argv[-1], 'w').write(json.dumps({'records': 1}))"
    (row,) = bench.script_part(ctx, "z", ["-c", writes], "Z", lambda d, c: bench.encoder_rows(d, c, MACHINE), MACHINE)
    assert row.result.startswith("FAILED: unexpected output: TypeError")


def test_a_failed_part_keeps_the_others_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(ctx: object) -> list:
        return [bench.failed_row("Boom", "RuntimeError: no", "python tools/boom.py", MACHINE)]

    def fine(ctx: object) -> list:
        return [bench.Row("Fine", "**1.0x**", "python tools/fine.py", MACHINE)]

    monkeypatch.setattr(bench, "PARTS", {"boom": boom, "fine": fine})
    readme = tmp_path / "README.md"
    readme.write_text(f"{bench.START}{bench.END}")
    code = bench.main(["--doc", str(tmp_path / "b.md"), "--readme", str(readme), "--learning-proof",
                       str(tmp_path / "none.json")])
    assert code == 1
    text = readme.read_text()
    assert "| Boom | FAILED: RuntimeError: no |" in text and "| Fine |" in text and "not found" in text


def test_rows_from_bench_model_json() -> None:
    data = {"preset": "mammut-video-B-16", "threads": 1, "records": [
        {"section": "a", "frames": 32, "image_size": 224, "tube_tokens": 540, "tube_ms": [1000.0, 900.0],
         "per_frame_tokens": 6304, "per_frame_ms": [12000.0, 11700.0]},
        {"section": "b", "batch": 4, "new_tokens": 32, "frames": 32, "cache_ms": [3200.0, 3000.0],
         "no_cache_ms": [16000.0, 18000.0], "prefix_rerun_ms": [6400.0, 6000.0]}]}
    (enc,) = bench.encoder_rows(data, "cmd", MACHINE)
    assert "B-16" in enc.what and "32-frame" in enc.what
    assert enc.result.startswith("tubes **12.0x** (fastest runs: 13.0x) faster")
    (kv,) = bench.kv_cache_rows(data, "cmd", MACHINE)
    assert "batch 4" in kv.what and "32 new tokens" in kv.what
    assert kv.result.startswith("cache **5.0x** (fastest runs: 6.0x) faster")
    assert "100.0 vs 500.0 ms per token" in kv.result
    assert "GB/s" not in kv.result  # the weights' read rate is measured at batch 1 only
    assert "compiled" not in kv.result  # JSON of a bench_model without the compiled variant


def test_rows_of_generation_at_batch_1_rank_and_memory() -> None:
    data = {"preset": "mammut-video-B-16", "threads": 1, "records": [
        {"section": "b", "batch": 1, "new_tokens": 32, "frames": 32, "cache_ms": [1280.0, 1216.0],
         "no_cache_ms": [6400.0, 6080.0], "prefix_rerun_ms": [3200.0, 3000.0], "step_weights_mb": 633.0,
         "step_read_gbps": 16.66, "read_gbps": 37.6, "compiled_cache_ms": [800.0, 760.0]},
        {"section": "d", "candidates": 1000, "source": "MSVD-QA answer list", "questions": 2, "tree_nodes": 1109,
         "prefix_tree_ms": [8000.0, 7240.0], "no_sharing_ms": [12000.0, 11000.0], "tree_gflop": 724.0,
         "matmul_gflops": 107.0},
        {"section": "e", "questions": 64, "before_mib": [1700.0, 1710.0, 1690.0],
         "copied_mib": [1400.0, 1420.0, 1410.0],
         "shared_mib": [200.0, 220.0, 210.0]}]}
    (kv,) = bench.kv_cache_rows(data, "cmd", MACHINE)
    assert kv.result.startswith("cache **5.0x**") and "reads 633 MB of weights, at >= 16.7 GB/s" in kv.result
    assert "37.6 GB/s" in kv.result
    assert "with the step compiled (`--compile`): **8.0x** (fastest runs: 8.0x) faster than no cache, 25.0 ms" in kv.result
    (rank,) = bench.rank_rows(data, "cmd", MACHINE)
    assert "1000 candidates: MSVD-QA answer list, 1109 tree nodes" in rank.what and "target >= 3x" in rank.what
    assert rank.result.startswith("tree **1.5x** (fastest runs: 1.5x) faster; medians: 4.00 vs 6.00 s per question")
    assert "724 GFLOP ran at 100 GFLOP/s (a large fp32 matmul: 107)" in rank.result
    (mem,) = bench.memory_rows(data, "cmd", MACHINE)
    assert "64 questions" in mem.what and "3 interleaved runs" in mem.what
    assert mem.result.startswith("**8.1x** less than before; medians: 210 MiB now, 1700 MiB before")
    assert "1410 MiB with only the K/V copied" in mem.result


def test_rows_from_decode_embed_train_and_eval_results() -> None:
    decode = {"frames": 32, "repeats": 5, "clips": [{}] * 14, "ratio_median": 1.02, "ratio_max": 1.07,
              "min_ratio_median": 1.01, "min_ratio_max": 1.11}
    assert "**1.02**" in bench.decode_rows(decode, "cmd", MACHINE)[0].result
    embed = {"a": [{"preset": "mammut-video-tiny", "clips": 16, "frames": 8, "batch": 8, "workers": w,
                    "model_only": 13.8, "end_to_end": e, "ratio": e / 13.8} for w, e in ((0, 15.0), (1, 9.2))],
             "b": [{"folder_clips": 10, "maxrss_mb": 545.0}, {"folder_clips": 50, "maxrss_mb": 550.0}]}
    rate, rss = bench.embed_rows(embed, "cmd", MACHINE, MACHINE)
    assert "15.0 with 0 workers" in rate.result and "9.2 with 1 worker (" in rate.result
    assert "+5 MB" in rss.result
    assert len(bench.embed_rows({"a": embed["a"]}, "cmd", MACHINE, MACHINE)) == 1  # part b failed: no row
    train = {"preset": "mammut-video-tiny", "frames": 8, "batch": 32, "precision": "fp32",
             "grad_checkpointing": False, "frozen": "none", "s_per_step": 8.0, "samples_per_s": 4.0,
             "peak_rss_mb": 1053}
    assert bench.train_rows(train, "cmd", MACHINE)[0].result.startswith("**4.00** samples/s")
    metrics = {"protocol": "generate", "precision": "fp32", "frames": 8, "counts": {"items": 80},
               "run": {"seconds": 4.0, "items_per_second": 20.0}}
    (ev,) = bench.eval_rows(metrics, 16.0, 15, "cmd", MACHINE)
    assert ev.result.startswith("**20.0** questions/s") and "5.0 questions/s over the whole command" in ev.result


def test_report_names_the_machine_and_holds_the_table() -> None:
    import datetime

    rows = [bench.Row("x", "1", "", MACHINE)]
    text = bench.report(rows, ["--quick"], "cpu", datetime.datetime(2026, 11, 30), 125.0)
    assert "cores" in text and "torch" in text and "2026-11-30" in text and "--quick" in text
    assert bench.render_table(rows) in text


@pytest.mark.slow
def test_quick_report_runs_end_to_end(tmp_path: Path) -> None:
    """bench.py --quick, every part: a row for each, the doc, the README block, exit 0 (about a minute)."""
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{bench.START}\n{bench.END}\nafter\n")
    doc = tmp_path / "benchmarks.md"
    done = subprocess.run([sys.executable, "tools/bench.py", "--quick", "--learning-proof",
                           str(tmp_path / "missing.json"), "--doc", str(doc), "--readme", str(readme),
                           "--timeout", "150"],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    table = done.stdout.strip()
    assert "FAILED" not in table
    for what in ("Encoder", "KV cache", "Rank protocol", "Peak memory", "Decode overhead", "embed clips/s",
                 "embed peak RSS", "eval questions/s", "training samples/s", "Learning proof"):
        assert what in table
    assert table in doc.read_text()
    assert readme.read_text() == f"before\n{bench.START}\n{table}\n{bench.END}\nafter\n"


def test_precision_row_compares_each_precision_with_fp32() -> None:
    data = {"preset": "mammut-video-B-16", "threads": 0, "records": [
        {"section": "g", "precision": "fp32", "clips": 8, "frames": 32, "clips_per_s": 4.0,
         "questions": 192, "questions_per_s": 100.0},
        {"section": "g", "precision": "bf16", "clips": 8, "frames": 32, "clips_per_s": 10.0,
         "questions": 192, "questions_per_s": 150.0}]}
    (row,) = bench.precision_rows(data, "cmd", MACHINE)
    assert "B-16, 8 32-frame clips" in row.what and "192 questions, 24 per clip" in row.what
    assert row.result == ("fp32 **4.00** clips/s, 100.0 questions/s; "
                          "bf16 **10.00** clips/s, 150.0 questions/s (2.50x / 1.50x fp32's)")
    argv = bench.model_argv(bench.Context("cuda", 0, False, 60.0, Path("."), MACHINE, MACHINE), "g")
    assert argv[argv.index("--precisions") + 1:][:3] == ["fp32", "bf16", "fp16"]


def test_the_precision_part_runs_only_on_a_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    ran: list[str] = []

    def part(name: str):
        return lambda ctx: ran.append(name) or [bench.Row(name, "**1.0x**", "cmd", MACHINE)]

    monkeypatch.setattr(bench, "PARTS", {"precision": part("precision"), "fine": part("fine")})
    args = ["--doc", str(tmp_path / "b.md"), "--readme", str(tmp_path / "none.md"), "--skip", "learning-proof"]
    assert bench.main(args) == 0 and ran == ["fine"]
    assert "precision: with --device cuda only" in capsys.readouterr().err
    assert bench.main([*args, "--device", "cuda"]) == 0 and ran == ["fine", "precision", "fine"]


def test_a_gpu_table_goes_beside_the_cpu_table_not_over_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "PARTS", {"fine": lambda ctx: [bench.Row("Fine", "**1.0x**", "cmd", MACHINE)]})
    readme = tmp_path / "README.md"
    readme.write_text(f"{bench.START}\n| cpu |\n{bench.END}\n{bench.CUDA_START}{bench.CUDA_END}\n")
    proof = tmp_path / "proof.json"
    proof.write_text(json.dumps(PROOF))
    args = ["--readme", str(readme), "--learning-proof", str(proof), "--device", "cuda"]
    assert bench.main([*args, "--doc", str(tmp_path / "gpu.md")]) == 0
    text = readme.read_text()
    assert f"{bench.START}\n| cpu |\n{bench.END}" in text  # the CPU table is untouched
    gpu = text[text.index(bench.CUDA_START):]
    assert "| Fine |" in gpu and "Learning proof" not in gpu  # the proof's rows are CPU runs
    assert bench.parse_args(["--device", "cuda"]).doc.name == "benchmarks-cuda.md"
    assert bench.parse_args([]).doc.name == "benchmarks.md"


def test_the_readme_holds_each_marker_once_and_only_as_a_marker() -> None:
    """bench.py replaces the text between the first start marker and the next end marker: a marker
    quoted in the README's prose would make it overwrite that prose."""
    text = (ROOT / "README.md").read_text()
    for first, last in ((bench.START, bench.END), (bench.CUDA_START, bench.CUDA_END)):
        assert text.count(first) == text.count(last) <= 1
    assert text.count(bench.START) == 1 and text.index(bench.START) < text.index(bench.END)
