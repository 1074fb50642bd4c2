"""End to end: `mammut-video eval` on synthetic datasets with a tiny random model.

One synthetic MSR-VTT / MSVD pair and one tiny checkpoint are shared by the module; one test
video of MSR-VTT is corrupted so every QA run must list it and count its questions wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mammut_video.commands import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import mammut_video as mv
    from mammut_video.data import load_qa, make_synthetic

    root = tmp_path_factory.mktemp("eval")
    paths = make_synthetic(root / "data", kind="msrvtt", num_videos=8, frames=16, size=64, seed=1)
    paths.update(make_synthetic(root / "data", kind="msvd", num_videos=8, frames=16, size=64, seed=2))
    qa = load_qa("msrvtt-qa", "test", data_root=paths["msrvtt"])
    broken = qa.records[0].video
    broken.write_bytes(b"\x00not a video" * 64)
    torch.manual_seed(0)
    mv.create_model("mammut-video-tiny", num_frames=4).save_pretrained(root / "ckpt")
    return {"root": root, "ckpt": root / "ckpt", "broken": broken, **paths}


def _eval(setup: dict, task: str, data: str, out: Path, *extra: str) -> int:
    return main(["eval", task, "--data-root", str(setup[data]), "--checkpoint", str(setup["ckpt"]),
                 "--out", str(out), "--workers", "0", "--batch-size", "1", "--device", "cpu", "--no-progress",
                 *extra])


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _stable(metrics_file: Path) -> dict:
    m = json.loads(metrics_file.read_text())
    return {k: v for k, v in m.items() if k not in ("date", "run")}


@pytest.mark.slow
def test_answer_questions_equals_model_answer() -> None:
    import mammut_video as mv
    from mammut_video.eval.tasks import answer_questions

    torch.manual_seed(0)
    model = mv.create_model("mammut-video-tiny", num_frames=4).eval()
    video = torch.randn(2, 3, 4, 112, 112)
    questions = ["what is it?", "how many objects are there?", "what color is the circle?"]
    index = [0, 1, 1]
    with torch.inference_mode():
        ours = answer_questions(model, video, index, questions, batch_size=2)
        ref = model.answer(video[torch.tensor(index)], questions)
    assert ours == ref


@pytest.mark.slow
def test_msrvtt_qa_then_resume_after_crash(setup: dict, tmp_path: Path) -> None:
    full = tmp_path / "full"
    assert _eval(setup, "msrvtt-qa", "msrvtt", full) == 0
    preds = _lines(full / "predictions.jsonl")
    metrics = json.loads((full / "metrics.json").read_text())
    assert len(preds) == metrics["metrics"]["total"] == metrics["counts"]["items"] > 0
    assert {"checkpoint", "split", "protocol", "frames", "counts", "date"} <= set(metrics)
    assert metrics["frames"] == 4 and metrics["split"] == "test"
    # the corrupted clip: listed, its questions kept in predictions with an error, counted wrong
    broken = [f for f in metrics["failed_videos"] if f["video_id"] == setup["broken"].stem]
    assert broken and broken[0]["items"] > 0
    assert metrics["metrics"]["missing"] == broken[0]["items"]
    assert all(p["prediction"] is None for p in preds if p["video_id"] == setup["broken"].stem)

    # a crash: 5 items done (plus the broken clip's failed items, which a resume tries again), the
    # next line cut mid-write
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    text = (full / "predictions.jsonl").read_text().splitlines(keepends=True)
    ok = [i for i, line in enumerate(text) if json.loads(line)["prediction"] is not None]
    cut = ok[4] + 1
    assert any(json.loads(line).get("error") for line in text[:cut])  # the resume meets a failed item
    (crashed / "predictions.jsonl").write_text("".join(text[:cut]) + text[cut][:17])
    (crashed / "settings.json").write_text((full / "settings.json").read_text())  # written when a run starts
    assert _eval(setup, "msrvtt-qa", "msrvtt", crashed) == 2  # refuses without --resume
    assert _eval(setup, "msrvtt-qa", "msrvtt", crashed, "--resume") == 0
    resumed = json.loads((crashed / "metrics.json").read_text())
    assert resumed["run"]["resumed_items"] == 5
    assert resumed["run"]["evaluated_items"] == len(preds) - 5
    assert (crashed / "predictions.jsonl").read_text() == (full / "predictions.jsonl").read_text()
    assert _stable(crashed / "metrics.json") == _stable(full / "metrics.json")


@pytest.mark.slow
def test_msvd_caption(setup: dict, tmp_path: Path) -> None:
    from mammut_video.eval.caption_metrics import SPICE_UNAVAILABLE

    assert _eval(setup, "msvd-caption", "msvd", tmp_path, "--no-meteor") == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    preds = _lines(tmp_path / "predictions.jsonl")
    assert len(preds) == m["metrics"]["total"] == m["metrics"]["captioned"] > 0
    assert all(isinstance(p["caption"], str) for p in preds)
    scores = m["metrics"]["scores"]
    assert {"BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"} <= set(scores)
    assert scores["SPICE"] == SPICE_UNAVAILABLE


@pytest.mark.slow
def test_msrvtt_retrieval(setup: dict, tmp_path: Path) -> None:
    assert _eval(setup, "msrvtt-retrieval", "msrvtt", tmp_path) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    n = m["total"]
    assert m["embedded"] == n - 1  # the corrupted clip
    for d in ("text_to_video", "video_to_text"):
        assert m[d]["count"] == n and 1 <= m[d]["mean_rank"] <= n and 0 <= m[d]["R@1"] <= m[d]["R@5"] <= 100


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(setup: dict, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert _eval(setup, "msrvtt-qa", "msrvtt", one) == 0
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --standalone: a free port, so a busy 29500 (or a parallel run) cannot fail the test
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "mammut_video", "eval",
           "msrvtt-qa", "--data-root", str(setup["msrvtt"]), "--checkpoint", str(setup["ckpt"]), "--out", str(two),
           "--workers", "0", "--batch-size", "1", "--device", "cpu", "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((two / "metrics.json").read_text())["run"]["world_size"] == 2
    assert not list(two.glob("predictions.rank*.jsonl"))
    assert (two / "predictions.jsonl").read_text() == (one / "predictions.jsonl").read_text()
    assert _stable(two / "metrics.json") == _stable(one / "metrics.json")


def test_clear_errors(setup: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["eval", "msrvtt-qa", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(base + ["--data-root", str(setup["msrvtt"])]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(base + ["--data-root", str(setup["msrvtt"]), "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "nope not found" in capsys.readouterr().err
    assert main(base + ["--data-root", str(tmp_path / "nodata"), "--checkpoint", str(setup["ckpt"])]) == 2
    assert "data root" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # refused while parsing, before any file is searched
        main(base + ["--data-root", str(setup["msrvtt"]), "--checkpoint", str(setup["ckpt"]), "--split", "bogus"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "bogus" in err and "train, val (or validate) or test" in err and len(err.strip().splitlines()) == 1
    assert main(base + ["--data-root", str(setup["msvd"]), "--checkpoint", str(setup["ckpt"])]) == 2
    err = capsys.readouterr().err
    assert "test_qa.json" in err or "msrvtt" in err.lower()


def test_out_below_a_file_is_one_line_error(setup: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for out in (afile, afile / "sub"):
        assert _eval(setup, "msrvtt-qa", "msrvtt", out) == 2
        assert _one_line_error(capsys) == f"mammut-video eval: error: {afile} is a file, not a folder"


@pytest.mark.slow
def test_rank_protocol_picks_from_answer_list(setup: dict, tmp_path: Path, capsys) -> None:
    answers = tmp_path / "answers.txt"
    answers.write_text("red\nblue\ncircle\n2\n")
    out = tmp_path / "rank"
    assert _eval(setup, "msrvtt-qa", "msrvtt", out, "--protocol", "rank", "--answer-list", str(answers),
                 "--limit", "12") == 0
    assert "evaluating the first 12 (--limit)" in capsys.readouterr().err  # not only the split's size
    preds = _lines(out / "predictions.jsonl")
    assert len(preds) == 12
    predicted = {p["prediction"] for p in preds if p["prediction"] is not None}
    assert predicted and predicted <= {"red", "blue", "circle", "2"}
    assert json.loads((out / "metrics.json").read_text())["protocol"] == "rank"


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mammut-video eval: error:")]
    assert len(err) == 1, err
    return err[0]


def test_duplicate_question_ids_are_one_line_errors(setup: dict, tmp_path: Path, capsys) -> None:
    records = json.loads((setup["msrvtt"] / "msrvtt_qa" / "test_qa.json").read_text())
    records[3]["id"] = records[1]["id"]
    ann = tmp_path / "test_qa.json"
    ann.write_text(json.dumps(records))
    assert main(["eval", "msrvtt-qa", "--annotations", str(ann), "--videos", str(setup["msrvtt"] / "videos"),
                 "--checkpoint", str(setup["ckpt"]), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert str(ann) in err and f"question id {records[1]['id']!r}" in err
    assert "record 3" in err and "record 1" in err


def test_malformed_answer_list_is_a_one_line_error(setup: dict, tmp_path: Path, capsys) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text('["red", "blue",\n "two"')
    assert _eval(setup, "msrvtt-qa", "msrvtt", tmp_path / "o", "--protocol", "rank", "--answer-list",
                 str(answers)) == 2
    err = _one_line_error(capsys)
    assert "--answer-list" in err and str(answers) in err and "malformed JSON at line 2" in err
    answers.write_text('["red", 2]')
    assert _eval(setup, "msrvtt-qa", "msrvtt", tmp_path / "o", "--protocol", "rank", "--answer-list",
                 str(answers)) == 2
    assert "entry 1 is int" in _one_line_error(capsys)


def test_caption_scoring_without_java_is_refused_up_front(setup: dict, tmp_path: Path, capsys, monkeypatch) -> None:
    import shutil

    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "java" else which(name, *a, **k))
    assert _eval(setup, "msvd-caption", "msvd", tmp_path / "o", "--no-meteor") == 2
    err = _one_line_error(capsys)
    assert "Java" in err and "PTB" in err
    assert not (tmp_path / "o" / "predictions.jsonl").exists()  # refused before captioning anything


@pytest.mark.slow
def test_rank_with_annotations_only_uses_the_train_split_beside_them(setup: dict, tmp_path: Path, capsys) -> None:
    from mammut_video.data import train_answers

    qa_dir = setup["msvd"] / "MSVD-QA"
    base = ["eval", "msvd-qa", "--videos", str(setup["msvd"] / "YouTubeClips"), "--checkpoint", str(setup["ckpt"]),
            "--protocol", "rank", "--limit", "6", "--workers", "0", "--device", "cpu", "--no-progress"]
    assert main(base + ["--annotations", str(qa_dir / "test_qa.json"), "--out", str(tmp_path / "a")]) == 0
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    train = train_answers("msvd-qa", annotations=qa_dir / "train_qa.json")
    assert m["answer_list"]["count"] == len(train) and str(qa_dir / "train_qa.json") in m["answer_list"]["source"]
    predicted = {p["prediction"] for p in _lines(tmp_path / "a" / "predictions.jsonl")}
    assert None not in predicted and predicted <= set(train)
    # no train split beside the file: a clear error pointing at --answer-list
    alone = tmp_path / "alone" / "test_qa.json"
    alone.parent.mkdir()
    alone.write_text((qa_dir / "test_qa.json").read_text())
    (alone.parent / "youtube_mapping.txt").write_text((qa_dir / "youtube_mapping.txt").read_text())
    assert main(base + ["--annotations", str(alone), "--out", str(tmp_path / "b")]) == 2
    err = _one_line_error(capsys)
    assert "--answer-list" in err and str(alone) in err


@pytest.mark.slow
def test_resume_refuses_other_settings(setup: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert _eval(setup, "msvd-qa", "msvd", out, "--limit", "3") == 0
    capsys.readouterr()
    other_ckpt = tmp_path / "other_ckpt"
    import shutil

    shutil.copytree(setup["ckpt"], other_ckpt)
    answers = tmp_path / "answers.txt"
    answers.write_text("red\nblue\n")
    for extra, expected in ((["--frames", "2"], "frames: 4 before, 2 now"),
                            (["--protocol", "rank", "--answer-list", str(answers)], "protocol: generate before, rank now")):
        assert _eval(setup, "msvd-qa", "msvd", out, "--limit", "6", "--resume", *extra) == 2
        err = _one_line_error(capsys)
        assert expected in err and "--overwrite" in err and "--out" in err
    assert main(["eval", "msvd-qa", "--data-root", str(setup["msvd"]), "--checkpoint", str(other_ckpt),
                 "--out", str(out), "--workers", "0", "--device", "cpu", "--no-progress", "--limit", "6",
                 "--resume"]) == 2
    assert f"checkpoint: {setup['ckpt'].resolve()} before, {other_ckpt.resolve()} now" in _one_line_error(capsys)
    assert len(_lines(out / "predictions.jsonl")) == 3  # nothing was added
    # the same settings resume (a larger --limit only adds items)
    assert _eval(setup, "msvd-qa", "msvd", out, "--limit", "6", "--resume") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["run"]["resumed_items"] == 3 and m["counts"]["items"] == 6
    # --overwrite starts again under the new settings
    assert _eval(setup, "msvd-qa", "msvd", out, "--limit", "3", "--overwrite", "--frames", "2") == 0
    assert json.loads((out / "metrics.json").read_text())["frames"] == 2


@pytest.mark.slow
def test_resume_with_a_smaller_limit_keeps_every_finished_prediction(setup: dict, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _eval(setup, "msvd-qa", "msvd", out, "--limit", "8") == 0
    before = _lines(out / "predictions.jsonl")
    assert _eval(setup, "msvd-qa", "msvd", out, "--limit", "3", "--resume") == 0
    assert _lines(out / "predictions.jsonl") == before  # the 5 outside this selection are kept, unchanged
    m = json.loads((out / "metrics.json").read_text())
    assert m["counts"]["items"] == 3 and m["metrics"]["total"] == 3  # scored: this run's selection only
    assert m["run"]["resumed_items"] == 3 and m["run"]["evaluated_items"] == 0
    assert _eval(setup, "msvd-qa", "msvd", out, "--limit", "8", "--resume") == 0  # nothing to redo
    assert json.loads((out / "metrics.json").read_text())["run"]["resumed_items"] == 8


@pytest.mark.slow
def test_resume_refuses_an_edited_annotation_file(setup: dict, tmp_path: Path, capsys) -> None:
    annotations = tmp_path / "test_qa.json"
    annotations.write_bytes((setup["msrvtt"] / "msrvtt_qa" / "test_qa.json").read_bytes())
    out = tmp_path / "run"

    def run(*extra: str) -> int:
        return main(["eval", "msrvtt-qa", "--annotations", str(annotations), "--videos",
                     str(setup["msrvtt"] / "videos" / "all"), "--checkpoint", str(setup["ckpt"]), "--out", str(out),
                     "--workers", "0", "--device", "cpu", "--no-progress", *extra])

    assert run() == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["annotation_sha256"] == hashlib.sha256(annotations.read_bytes()).hexdigest()
    before = (out / "predictions.jsonl").read_text()
    records = json.loads(annotations.read_text())
    records[0]["answer"] = records[0]["answer"] + "x"  # same path, other contents
    annotations.write_text(json.dumps(records))
    capsys.readouterr()
    assert run("--resume") == 2
    err = _one_line_error(capsys)
    assert "annotation_sha256: " in err and "--overwrite" in err
    assert (out / "predictions.jsonl").read_text() == before


@pytest.mark.slow
def test_resume_retries_clips_that_failed_to_decode(setup: dict, tmp_path: Path) -> None:
    import shutil

    from mammut_video.data import load_qa, make_synthetic

    data = make_synthetic(tmp_path / "data", kind="msrvtt", num_videos=8, frames=8, size=32, seed=5)["msrvtt"]
    clip = load_qa("msrvtt-qa", "test", data_root=data).records[-1].video
    good = clip.read_bytes()
    clean, out = tmp_path / "clean", tmp_path / "out"
    assert _eval({**setup, "d": data}, "msrvtt-qa", "d", clean) == 0
    clip.write_bytes(b"\x00broken" * 32)
    assert _eval({**setup, "d": data}, "msrvtt-qa", "d", out) == 0
    before = json.loads((out / "metrics.json").read_text())
    failed_items = before["counts"]["failed_items"]
    assert failed_items > 0 and before["failed_videos"][0]["video_id"] == clip.stem
    clip.write_bytes(good)  # repaired
    assert _eval({**setup, "d": data}, "msrvtt-qa", "d", out, "--resume") == 0
    after = json.loads((out / "metrics.json").read_text())
    assert after["failed_videos"] == [] and after["counts"]["failed_items"] == 0
    assert after["run"]["evaluated_items"] == failed_items
    assert after["run"]["resumed_items"] == after["counts"]["items"] - failed_items
    assert (out / "predictions.jsonl").read_text() == (clean / "predictions.jsonl").read_text()
    assert _stable(out / "metrics.json") == {**_stable(clean / "metrics.json")}
    shutil.rmtree(data)


@pytest.mark.slow
def test_metrics_paths_are_absolute(setup: dict, tmp_path: Path, monkeypatch) -> None:
    import os

    monkeypatch.chdir(tmp_path)
    rel = lambda p: os.path.relpath(p, tmp_path)  # noqa: E731
    assert main(["eval", "msrvtt-retrieval", "--data-root", rel(setup["msrvtt"]), "--checkpoint", rel(setup["ckpt"]),
                 "--out", "out", "--workers", "0", "--device", "cpu", "--no-progress", "--limit", "2"]) == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for key in ("annotation_file", "video_dir", "checkpoint"):
        assert Path(m[key]).is_absolute() and Path(m[key]).exists(), key
    assert m["annotation_file"] == str((setup["msrvtt"] / "annotation" / "MSRVTT_JSFUSION_test.csv").resolve())
