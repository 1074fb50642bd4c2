"""Run directories: crash-safe JSON lines, atomic writes, settings, and what an existing folder allows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mammut_video.errors import ConfigError, MammutVideoError
from mammut_video.eval.predictions import load_predictions, merge_predictions, read_predictions
from mammut_video.runtime.distributed import DistContext
from mammut_video.runtime.rundir import (
    SETTINGS_FILE,
    JsonlWriter,
    RunDirError,
    atomic_write,
    check_run_dir,
    open_run_dir,
    read_jsonl,
    write_json,
)


def test_write_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    with JsonlWriter(path) as w:
        w.write([{"question_id": 1, "prediction": "dog"}, {"question_id": "2", "prediction": "cat"}])
    with JsonlWriter(path) as w:  # appends
        w.write([{"question_id": 3, "prediction": "2"}])
    done = read_predictions(path, "question_id")
    assert list(done) == ["1", "2", "3"]
    assert done["3"]["prediction"] == "2"


def test_truncated_last_line_is_ignored_and_repaired(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    good = json.dumps({"video_id": "video1", "caption": "a dog"}) + "\n"
    path.write_text(good + '{"video_id": "video2", "capt')
    assert list(read_predictions(path, "video_id")) == ["video1"]
    read_predictions(path, "video_id", repair=True)
    assert path.read_text() == good
    with JsonlWriter(path) as w:
        w.write([{"video_id": "video2", "caption": "a cat"}])
    assert list(read_predictions(path, "video_id")) == ["video1", "video2"]


def test_corrupt_middle_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"video_id": 1}\nnot json\n{"video_id": 2}\n')
    with pytest.raises(RunDirError, match=r"predictions.jsonl: line 2"):
        read_jsonl(path)
    path.write_text('{"video_id": 1}\n{"other": 2}\n')
    with pytest.raises(RunDirError, match=r"line 2 .*'video_id'"):
        read_jsonl(path, require="video_id")


def test_refuses_to_overwrite_without_resume(tmp_path: Path) -> None:
    results = [tmp_path / "predictions.jsonl"]
    check_run_dir(tmp_path, results, {}, resume=False, overwrite=False)  # nothing there yet
    results[0].write_text('{"video_id": 1}\n')
    with pytest.raises(RunDirError, match="--resume.*--overwrite"):
        check_run_dir(tmp_path, results, {}, resume=False, overwrite=False)
    check_run_dir(tmp_path, results, None, resume=True, overwrite=False)
    check_run_dir(tmp_path, results, {}, resume=False, overwrite=True)
    with pytest.raises(ConfigError, match="contradict"):
        check_run_dir(tmp_path, results, {}, resume=True, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a folder"):
        check_run_dir(tmp_path / "file", [], {}, resume=False, overwrite=False)


def test_an_out_below_a_file_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "sub" / "deeper"
    with pytest.raises(RunDirError, match=f"^{tmp_path / 'afile'} is a file, not a folder$"):
        open_run_dir(out, lambda: [], {"frames": 4}, resume=False, overwrite=False, ctx=DistContext())


def test_an_out_that_cannot_be_created_is_one_line_error(tmp_path: Path, monkeypatch) -> None:
    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    out = tmp_path / "run"
    with pytest.raises(RunDirError, match=f"^cannot create the output folder {out}: Permission denied$"):
        open_run_dir(out, lambda: [], {"frames": 4}, resume=False, overwrite=False, ctx=DistContext())


def test_resume_compares_settings_and_lists_what_differs(tmp_path: Path) -> None:
    results = [tmp_path / "predictions.jsonl"]
    results[0].write_text('{"video_id": 1}\n')
    assert check_run_dir(tmp_path, results, {"frames": 8}, resume=True, overwrite=False) is False  # no record
    write_json(tmp_path / SETTINGS_FILE, {"frames": 8, "generation": {"num_beams": 1}})
    assert check_run_dir(tmp_path, results, {"frames": 8, "generation": {"num_beams": 1}}, True, False)
    with pytest.raises(RunDirError, match=r"frames: 8 before, 16 now; generation.num_beams: 1 before, 3 now"):
        check_run_dir(tmp_path, results, {"frames": 16, "generation": {"num_beams": 3}}, True, False)


def test_resume_of_a_run_from_before_a_setting_was_recorded(tmp_path: Path, caplog) -> None:
    results = [tmp_path / "predictions.jsonl"]
    results[0].write_text('{"video_id": 1}\n')
    now = {"frames": 8, "precision": "fp32", "train": {"annotation_file": "a.jsonl", "annotation_sha256": "ab12"}}
    write_json(tmp_path / SETTINGS_FILE, {"frames": 8, "precision": None, "train": {"annotation_file": "a.jsonl"}})
    assert check_run_dir(tmp_path, results, now, resume=True, overwrite=False)  # not refused: cannot be checked
    assert "did not record precision, train.annotation_sha256" in caplog.text
    # once recorded, they are checked like any setting
    write_json(tmp_path / SETTINGS_FILE, {**now, "precision": "bf16"})
    with pytest.raises(RunDirError, match=r"precision: bf16 before, fp32 now"):
        check_run_dir(tmp_path, results, now, True, False)


def test_open_run_dir_overwrite_removes_results_and_records_settings(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "predictions.jsonl").write_text('{"video_id": 1}\n')
    (out / "keep.txt").write_text("not a result")
    results = lambda: [p for p in [out / "predictions.jsonl"] if p.exists()]  # noqa: E731
    open_run_dir(out, results, {"frames": 4}, resume=False, overwrite=True, ctx=DistContext())
    assert not (out / "predictions.jsonl").exists() and (out / "keep.txt").exists()
    assert json.loads((out / SETTINGS_FILE).read_text()) == {"frames": 4}


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    write_json(path, {"a": 1})

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, fail)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_run_dir_errors_are_mammut_video_errors() -> None:
    assert issubclass(RunDirError, MammutVideoError)


def test_merge_rank_files_in_dataset_order(tmp_path: Path) -> None:
    (tmp_path / "predictions.jsonl").write_text('{"question_id": 0, "p": "a"}\n')
    (tmp_path / "predictions.rank0.jsonl").write_text('{"question_id": 2, "p": "c"}\n')
    (tmp_path / "predictions.rank1.jsonl").write_text('{"question_id": 1, "p": "b"}\n{"question_id": 9, "p": "x"}\n')
    assert set(load_predictions(tmp_path, "question_id")) == {"0", "1", "2", "9"}
    merged = merge_predictions(tmp_path, "question_id", order=["0", "1", "2", "3"])
    assert list(merged) == ["0", "1", "2"]
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(x)["p"] for x in lines] == ["a", "b", "c", "x"]  # 9: outside the order, kept after it
    assert not list(tmp_path.glob("predictions.rank*.jsonl"))


def test_precision_defaults_and_checks() -> None:
    import torch

    from mammut_video.runtime.precision import autocast, check_precision, default_precision

    assert default_precision(torch.device("cpu")) == "fp32"
    assert default_precision(torch.device("cuda", 0)) == "bf16"
    with pytest.raises(ConfigError, match="fp64"):
        check_precision("fp64")
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), None):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_file_sha256_fingerprints_the_bytes(tmp_path: Path) -> None:
    import hashlib

    from mammut_video.runtime.rundir import file_sha256

    path = tmp_path / "test_qa.json"
    data = b'[{"question": "what is it?", "answer": "a cat"}]' * 50_000  # > one 1 MiB block
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(data.replace(b"cat", b"dog"))  # same path and size, other contents
    assert file_sha256(path) != hashlib.sha256(data).hexdigest()
