"""The command line as a whole: one error class, one exit code, one line; logging; Ctrl-C; --help."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mammut_video as mv
from mammut_video.commands import COMMANDS, build_parser, main
from mammut_video.errors import MammutVideoError

REPO = Path(__file__).resolve().parents[1]


def test_every_error_raised_on_purpose_is_a_mammut_video_error() -> None:
    from mammut_video.eval.caption_metrics import CaptionMetricsError
    from mammut_video.runtime.distributed import MainRankError
    from mammut_video.runtime.rundir import RunDirError

    for error in (mv.VideoDecodeError, mv.AnnotationError, mv.DatasetNotFoundError, mv.CheckpointError,
                  mv.ConfigError, CaptionMetricsError, MainRankError, RunDirError):
        assert issubclass(error, MammutVideoError), error
    # and they keep the built-in types older callers catch
    assert issubclass(mv.ConfigError, ValueError) and issubclass(mv.DatasetNotFoundError, FileNotFoundError)


def test_namespace_appears_only_in_the_command_package() -> None:
    hits = [p for p in (REPO / "mammut_video").rglob("*.py")
            if "Namespace" in p.read_text() and p.parent.name != "commands"]
    assert hits == []


def test_help_lists_every_command_and_the_exit_codes() -> None:
    out = subprocess.run([sys.executable, "-m", "mammut_video", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name in COMMANDS:
        assert name in out.stdout
    assert "exit codes" in out.stdout


def test_every_option_of_every_command_is_explained() -> None:
    def walk(parser: argparse.ArgumentParser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)

    for parser in walk(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            assert action.help and len(action.help) > 15, (parser.prog, action.dest)


def test_info_on_a_missing_checkpoint_says_not_found(tmp_path: Path, capsys) -> None:
    assert main(["info", str(tmp_path / "nonexistent")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mammut-video info: error: {tmp_path / 'nonexistent'}: not found"
    (tmp_path / "file.txt").write_text("x")
    assert main(["info", str(tmp_path / "file.txt")]) == 2
    assert "is a file, not a checkpoint directory" in capsys.readouterr().err


def test_info_refuses_what_load_model_refuses(tmp_path: Path, capsys) -> None:
    import json

    import mammut_video as mv

    mv.create_model("mammut-video-tiny", text={"layers": 2}).save_pretrained(str(tmp_path / "ck"))
    assert main(["info", str(tmp_path / "ck")]) == 0
    capsys.readouterr()
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    config["model"]["text"]["layers"] = 4  # the weights are a 2-layer decoder's: info described them as 4
    (tmp_path / "ck" / "config.json").write_text(json.dumps(config))
    assert main(["info", str(tmp_path / "ck")]) == 2
    assert "weights do not fit the model" in capsys.readouterr().err
    config["model"]["text"]["layers"], config["model"]["foo"] = 2, 1
    (tmp_path / "ck" / "config.json").write_text(json.dumps(config))
    assert main(["info", str(tmp_path / "ck")]) == 2
    assert "unknown model config keys: ['foo']" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"some notes\n", b"e", b"", b"\x80\x02broken pickle"])
def test_convert_of_a_file_that_is_not_weights_is_one_line_exit_2(tmp_path: Path, capsys, content: bytes) -> None:
    src = tmp_path / "notes.txt"
    src.write_bytes(content)
    assert main(["convert", "--from", "openmammut", str(src), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "notes.txt" in err and "Traceback" not in err
    assert err.startswith("mammut-video convert: error: ")


def test_convert_of_pickled_objects_says_why_it_is_refused(tmp_path: Path, capsys) -> None:
    torch.save({"weights": {"a": [1, 2]}, "optimizer": object}, tmp_path / "train.pt")
    assert main(["convert", "--from", "timm", str(tmp_path / "train.pt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "weights_only=True" in err


def test_ctrl_c_says_how_to_continue_where_the_command_resumes(tmp_path: Path, capsys, monkeypatch) -> None:
    import mammut_video.eval.run as evaluate_module

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_module, "evaluate", interrupted)
    code = main(["eval", "msrvtt-qa", "--data-root", str(tmp_path), "--checkpoint", str(tmp_path)])
    assert code == 130
    assert capsys.readouterr().err.strip() == "mammut-video eval: interrupted; rerun with --resume to continue"

    import mammut_video.checkpoint.describe as describe_module

    monkeypatch.setattr(describe_module, "describe", lambda path: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main(["info", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == "mammut-video info: interrupted"


def test_logging_levels_follow_verbose_and_quiet(tmp_path: Path, capsys) -> None:
    from mammut_video.commands import configure_logging

    log = logging.getLogger("mammut_video.test")
    for flags, shown in (({}, {"info", "warning"}), ({"verbose": 1}, {"debug", "info", "warning"}),
                         ({"quiet": True}, {"warning"})):
        configure_logging(**flags)
        for level in ("debug", "info", "warning"):
            getattr(log, level)(f"{level} message")
        err = capsys.readouterr().err
        assert {lvl for lvl in ("debug", "info", "warning") if f"{lvl} message" in err} == shown
        assert ("warning: warning message" in err)
    configure_logging()


def test_progress_is_silent_with_nothing_to_do_or_when_disabled(capsys) -> None:
    from mammut_video.runtime.progress import Progress, progress

    assert type(progress(0, "eval")) is Progress  # a resumed, finished run: no empty bar
    assert type(progress(10, "eval", enabled=False)) is Progress
    capsys.readouterr()


def test_decode_failures_print_nothing_from_ffmpeg_or_decord(tmp_path: Path) -> None:
    # FFmpeg ("moov atom not found") and decord ("video_reader.cc:83: ERROR opening") wrote to stderr,
    # in the middle of eval's progress bar; the VideoDecodeError carries the cause.
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"hello, not a video\n" * 10)
    code = ("import mammut_video as mv\n"
            f"for backend in ('auto', 'decord', 'pyav'):\n"
            f"    try: mv.read_clip({str(bad)!r}, 4, backend=backend)\n"
            "    except mv.VideoDecodeError as err: print(err.cause)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 3
    assert out.stderr == ""


def test_a_segment_outside_the_clip_is_said_once(realdata: Path) -> None:
    with pytest.raises(mv.VideoDecodeError) as err:
        mv.read_clip(realdata / "msrvtt" / "video7010.mp4", 4, start=100)
    assert str(err.value).count("past the end") == 1


def test_a_directory_named_like_a_video_is_reported_as_a_directory(tmp_path: Path) -> None:
    from mammut_video.data import make_synthetic

    data = make_synthetic(tmp_path / "data", kind="msrvtt", num_videos=8, frames=4, size=32, seed=3)["msrvtt"]
    qa = mv.load_qa("msrvtt-qa", "test", data_root=data)
    video = qa.records[0].video
    video.unlink()
    video.mkdir()
    torch.manual_seed(0)
    mv.create_model("mammut-video-tiny", num_frames=2).save_pretrained(tmp_path / "ckpt")
    result = mv.evaluate(mv.EvalConfig("msrvtt-qa", checkpoint=tmp_path / "ckpt", data_root=data,
                                       out=tmp_path / "out", workers=0, progress=False, device="cpu"))
    assert result.failed_videos and "is a directory, not a video file" in result.failed_videos[0]["error"]
    assert json.loads(result.metrics_path.read_text())["failed_videos"] == result.failed_videos


def test_workers_default_to_at_most_the_cpu_cores(monkeypatch) -> None:
    import os
    import warnings

    from torch.utils.data import DataLoader

    from mammut_video.commands.args import default_workers

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parser = build_parser()
    for argv, cap in ((["embed", "in", "--out", "o"], 4), (["caption", "v.mp4"], 2),
                      (["eval", "msrvtt-qa", "--data-root", "d"], 4)):
        workers = parser.parse_args(argv).workers
        assert workers == min(cap, cores) == default_workers(cap), argv
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "This DataLoader will create N worker processes ..." would raise
            DataLoader(range(4), num_workers=workers)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert default_workers(4) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert default_workers(4) == 4 and default_workers(2) == 2
