"""End to end: `mammut-video finetune` on a small synthetic set with the tiny preset at 4 frames.

One training clip of the shared set is corrupt, so every run must skip it and count it.
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

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from mammut_video.data import load_qa, make_synthetic

    root = make_synthetic(tmp_path_factory.mktemp("ft"), kind="custom", num_videos=10, frames=8, size=32, seed=5)["custom"]
    broken = load_qa("custom", "train", annotations=root / "train.jsonl").records[-1].video
    broken.write_bytes(b"\x00not a video" * 64)
    return {"root": root, "train": root / "train.jsonl", "val": root / "val.jsonl", "broken": broken}


def _args(data: dict, out: Path, *extra: str) -> list[str]:
    return ["finetune", "--train", str(data["train"]), "--out", str(out), "--preset", "mammut-video-tiny",
            "--frames", "4", "--batch-size", "4", "--warmup", "2", "--workers", "0", "--device", "cpu",
            "--no-progress", *extra]


def _records(out: Path, kind: str = "train") -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def _losses(out: Path) -> list[float]:
    return [r["loss"] for r in _records(out)]


@pytest.mark.slow
def test_loss_goes_down_checkpoints_load_and_frozen_parts_stay(data: dict, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(_args(data, out, "--steps", "8", "--val", str(data["val"]), "--val-every", "4", "--cache-clips",
                      "--freeze", "tubes")) == 0
    losses = _losses(out)
    assert len(losses) == 8 and sum(losses[-2:]) / 2 < 0.8 * losses[0]
    assert all(r["step_s"] > 0 and r["data_s"] >= 0 for r in _records(out))
    assert {p.name for p in out.iterdir()} >= {"metrics.jsonl", "settings.json", "train_state.pt", "last", "best",
                                                "curves.png", "tokenizer.model"}
    vals = _records(out, "val")
    assert [v["step"] for v in vals] == [4, 8] and all("val_accuracy" in v and "what" in v["val_per_type"] for v in vals)
    train_epochs = {r["step"]: r["epoch"] for r in _records(out)}
    assert [v["epoch"] for v in vals] == [train_epochs[4], train_epochs[8]]  # the same count as the step's record
    # the corrupt clip was decoded once (--cache-clips) per segment its records name, skipped and listed
    failed = _records(out, "failed_clip")
    assert {f["path"] for f in failed} == {str(data["broken"])} and failed[0]["step"] == 0
    # both checkpoints load; last/ holds step 8, best/ the better validation
    last, best = mv.load_model(out / "last"), mv.load_model(out / "best")
    assert last.provenance["finetune"]["step"] == 8
    # where it started and whether the text embedding trained (search warns about a QA-only model)
    assert last.provenance["finetune"]["preset"] == "mammut-video-tiny"
    assert last.provenance["finetune"]["contrastive_weight"] == 0.0
    assert last.provenance["finetune"]["text_embedding_trained"] is False
    assert json.loads((out / "best" / "config.json").read_text())["provenance"]["finetune"]["step"] in (4, 8)
    # the frozen tubes (image tube = patch embedding too) are exactly the initial ones, the rest moved
    torch.manual_seed(0)
    init = mv.create_model("mammut-video-tiny", num_frames=4, text={"vocab_size": last.config.text.vocab_size},
                           tokenizer=last.config.tokenizer)
    for name, p in last.named_parameters():
        start = dict(init.named_parameters())[name]
        if name.startswith(("visual.tubes.", "visual.trunk.patch_embed.")):
            assert torch.equal(p, start), name
    assert not torch.equal(last.text.lm_head, init.text.lm_head)
    assert best.config.num_frames == 4
    # the user's next step: evaluate their own test split, same report as MSRVTT-QA
    assert main(["eval", "custom-qa", "--annotations", str(data["root"] / "test.jsonl"), "--videos",
                 str(data["root"]), "--checkpoint", str(out / "best"), "--out", str(tmp_path / "eval"),
                 "--workers", "0", "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["task"] == "custom-qa" and metrics["metrics"]["total"] > 0 and metrics["metrics"]["per_type"]


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "finished too early"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(data: dict, tmp_path: Path) -> None:
    steps = ["--steps", "12", "--save-every", "3"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(_args(data, whole, *steps)) == 0
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-m", "mammut_video", *_args(data, killed, *steps)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (killed / "train_state.pt").exists() and (killed / "metrics.jsonl").exists()
                  and len(_records(killed)) >= 5, proc)
        proc.send_signal(signal.SIGKILL)  # no clean-up of any kind: mid-step, maybe mid-write
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    done_before = len(_records(killed))
    assert 5 <= done_before < 12
    assert main(_args(data, killed, *steps, "--resume")) == 0
    a, b = _losses(whole), _losses(killed)
    assert len(a) == len(b) == 12
    assert b == pytest.approx(a, rel=1e-5, abs=1e-6)
    assert [r["step"] for r in _records(killed)] == list(range(1, 13))
    # one epoch (~40 samples) passed: the corrupt clip was met, skipped and counted, in both runs alike
    assert _records(whole)[-1]["failed_clips"] == _records(killed)[-1]["failed_clips"] == 1
    assert _records(killed, "failed_clip")[0]["path"] == str(data["broken"])
    for (name, p), q in zip(mv.load_model(whole / "last").state_dict().items(),
                            mv.load_model(killed / "last").state_dict().values()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)


def _torchrun_2(args: list[str]) -> None:
    """``mammut-video ARGS`` in 2 processes (torchrun, gloo); fails the test with their stderr."""
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "mammut_video", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(data: dict, tmp_path: Path) -> None:
    """2 processes x 2 samples == 1 process x 2 micro-batches of 2 (DDP, gloo); contrastive weight 0 at
    4 frames leaves the pooling head and tube b unused: DDP would stop on them if they were trainable."""
    one, two = tmp_path / "one", tmp_path / "two"
    steps = ["--steps", "3", "--cache-clips"]
    assert main(_args(data, one, *steps, "--grad-accum", "2")) == 0
    _torchrun_2(_args(data, two, *steps))
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-4)
    assert [r["samples"] for r in _records(two)] == [4, 4, 4]
    assert not list(two.glob("*rank*"))  # rank 0 alone writes


@pytest.mark.slow
def test_two_processes_equal_one_when_a_clip_fails_on_one_of_them(data: dict, tmp_path: Path) -> None:
    """One clip per process and step, the corrupt clip read in step 2 by one process: the other's clip is
    trained on (it was skipped with it) and the loss is normalised over the clips read, as in one process."""
    one, two = tmp_path / "one", tmp_path / "two"
    steps = ["--steps", "3", "--batch-size", "2"]
    assert main(_args(data, one, *steps, "--grad-accum", "2")) == 0
    _torchrun_2(_args(data, two, *steps))
    assert sum(r["samples"] for r in _records(one)) == 5 and _records(one)[-1]["failed_samples"] == 1
    assert [r["samples"] for r in _records(two)] == [r["samples"] for r in _records(one)]
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-4)


@pytest.mark.slow
def test_two_processes_equal_one_with_the_contrastive_pass_and_a_failing_clip(data: dict, tmp_path: Path) -> None:
    """With --contrastive-weight the loss gathers every process's pairs: the stand-in of the process that lost
    its clip must add none, and the temperature's gradient must not be counted once per process (grad_norm)."""
    one, two = tmp_path / "one", tmp_path / "two"
    steps = ["--steps", "3", "--batch-size", "2", "--contrastive-weight", "0.5"]
    assert main(_args(data, one, *steps)) == 0  # one micro-batch of 2 == 2 processes x 1, gathered
    _torchrun_2(_args(data, two, *steps))
    assert _records(one)[-1]["failed_samples"] == 1
    for key in ("loss", "contrastive_loss", "grad_norm"):
        assert [r[key] for r in _records(two)] == pytest.approx([r[key] for r in _records(one)], rel=1e-4), key


@pytest.mark.slow
def test_caption_task_validates_with_cider(data: dict, tmp_path: Path) -> None:
    out = tmp_path / "cap"
    assert main(_args(data, out, "--train", str(data["root"] / "train_captions.jsonl"), "--val",
                      str(data["root"] / "val_captions.jsonl"), "--steps", "2", "--cache-clips")) == 0
    val = _records(out, "val")[-1]
    assert "val_cider" in val and val["val_loss"] > 0
    assert json.loads((out / "settings.json").read_text())["task"] == "caption"
    assert main(["eval", "custom-caption", "--annotations", str(data["root"] / "test_captions.jsonl"), "--videos",
                 str(data["root"]), "--checkpoint", str(out / "last"), "--out", str(tmp_path / "eval"),
                 "--workers", "0", "--no-progress", "--no-meteor"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["task"] == "custom-caption" and "CIDEr" in metrics["metrics"]["scores"]


def test_a_run_where_most_clips_fail_stops_with_a_clear_message(data: dict, tmp_path: Path, capsys) -> None:
    root = tmp_path / "bad"
    shutil.copytree(data["root"], root)
    for clip in (root / "clips").rglob("*.mp4"):
        clip.write_bytes(b"garbage")
    code = main(_args(data, tmp_path / "out", "--train", str(root / "train.jsonl"), "--steps", "20"))
    err = capsys.readouterr().err
    assert code == 2 and "could not be decoded" in err and "--video-root" in err
    # a run too short to read 16 clips or an epoch is judged at its end: not a success that trained nothing
    code = main(_args(data, tmp_path / "out1", "--train", str(root / "train.jsonl"), "--steps", "1"))
    captured = capsys.readouterr()
    assert code == 2 and "4 of the 4 training clips" in captured.err and "checkpoints:" not in captured.out
    code = main(_args(data, tmp_path / "out2", "--train", str(root / "train.jsonl"), "--video-root",
                      str(tmp_path / "elsewhere")))
    assert code == 2 and "are not under" in capsys.readouterr().err


def test_validation_clips_that_fail_are_named_and_most_failing_stops(data: dict, tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    shutil.copytree(data["root"], root)
    (root / "clips" / "clip_val_000.mp4").write_bytes(b"garbage")  # one of the two validation clips
    out = tmp_path / "run"
    assert main(_args(data, out, "--train", str(root / "train.jsonl"), "--val", str(root / "val.jsonl"),
                      "--steps", "2", "--val-every", "1")) == 0
    assert capsys.readouterr().err.count("validation clip skipped") == 1  # warned once, not at each validation
    failed = [r for r in _records(out, "failed_clip") if r["data"] == "validation"]
    assert [Path(r["path"]).name for r in failed] == ["clip_val_000.mp4"]
    assert all(v["val_failed_clips"] == 1 for v in _records(out, "val"))
    # every validation clip unreadable: no "loss 0.0000" validation and best/ checkpoint, but exit 2
    (root / "clips" / "val" / "clip_001.mp4").write_bytes(b"garbage")
    assert main(_args(data, tmp_path / "run2", "--train", str(root / "train.jsonl"), "--val",
                      str(root / "val.jsonl"), "--steps", "1")) == 2
    assert "2 of the 2 validation clips could not be decoded" in capsys.readouterr().err
    assert not (tmp_path / "run2" / "best").exists()
    # what trained is kept, and the metrics name every clip that failed
    assert mv.load_model(tmp_path / "run2" / "last").provenance["finetune"]["step"] == 1
    assert sorted(Path(r["path"]).name for r in _records(tmp_path / "run2", "failed_clip")
                  if r["data"] == "validation") == ["clip_001.mp4", "clip_val_000.mp4"]


def test_a_run_stopped_by_its_time_budget_continues_with_more_time(data: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(_args(data, out, "--steps", "4", "--max-time", "0.01s")) == 0
    assert len(_records(out)) == 1 and "stopped at the time budget" in capsys.readouterr().out
    assert main(_args(data, out, "--steps", "4", "--max-time", "0.01s", "--resume")) == 0  # the same budget
    assert "a larger --max-time (it counts every run's training time) or none" in capsys.readouterr().out
    assert len(_records(out)) == 1
    assert main(_args(data, out, "--steps", "4", "--max-time", "10m", "--resume")) == 0
    assert [r["step"] for r in _records(out)] == [1, 2, 3, 4]
    assert "already finished" not in capsys.readouterr().out
    assert main(_args(data, out, "--steps", "4", "--resume")) == 0  # now the steps are done
    assert "had already finished at step 4" in capsys.readouterr().out


def test_resume_of_a_run_with_nothing_saved_says_it_starts_at_step_0(data: dict, tmp_path: Path, capsys) -> None:
    assert main(_args(data, tmp_path / "new", "--steps", "1", "--resume")) == 0
    assert "holds no saved state yet (train_state.pt); starting at step 0" in capsys.readouterr().err


def test_resume_refuses_an_annotation_file_edited_in_place(data: dict, tmp_path: Path, capsys) -> None:
    train = tmp_path / "train.jsonl"
    shutil.copy(data["train"], train)
    args = _args(data, tmp_path / "run", "--train", str(train), "--video-root", str(data["root"]), "--steps", "1")
    assert main(args) == 0
    train.write_text(train.read_text().replace('"answer": "red"', '"answer": "blue"', 1))
    assert main([*args, "--resume"]) == 2
    assert "annotation_sha256" in capsys.readouterr().err


def test_an_existing_run_needs_resume_or_overwrite(data: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(_args(data, out, "--steps", "1", "--cache-clips")) == 0
    assert (out / "curves.png").stat().st_size > 0  # the summary names it, without --val too
    assert main(_args(data, out, "--steps", "1", "--cache-clips")) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(_args(data, out, "--steps", "2", "--cache-clips", "--resume")) == 2
    assert "steps: 1 before, 2 now" in capsys.readouterr().err
    capsys.readouterr()
    assert main(_args(data, out, "--steps", "1", "--cache-clips", "--resume")) == 0  # already finished
    assert "had already finished at step 1" in capsys.readouterr().out
    # settings.json holds the precision the run used (the CPU's default), so naming it is the same run...
    assert json.loads((out / "settings.json").read_text())["precision"] == "fp32"
    assert main(_args(data, out, "--steps", "1", "--cache-clips", "--resume", "--precision", "fp32")) == 0
    # ...and another one is refused
    assert main(_args(data, out, "--steps", "1", "--cache-clips", "--resume", "--precision", "bf16")) == 2
    assert "precision: fp32 before, bf16 now" in capsys.readouterr().err
    assert main(_args(data, out, "--steps", "1", "--cache-clips", "--overwrite")) == 0
    assert len(_records(out)) == 1
