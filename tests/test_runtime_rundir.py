"""Prediction files: append, read back, truncated last line, refusal to overwrite, merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mammut_video.eval.predictions import (
    PredictionFileError,
    PredictionWriter,
    check_can_write,
    load_done,
    merge_predictions,
    read_predictions,
)


def test_write_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    with PredictionWriter(path) as w:
        w.write([{"question_id": 1, "prediction": "dog"}, {"question_id": "2", "prediction": "cat"}])
    with PredictionWriter(path) as w:  # appends
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
    with PredictionWriter(path) as w:
        w.write([{"video_id": "video2", "caption": "a cat"}])
    assert list(read_predictions(path, "video_id")) == ["video1", "video2"]


def test_corrupt_middle_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"video_id": 1}\nnot json\n{"video_id": 2}\n')
    with pytest.raises(PredictionFileError, match=r"predictions.jsonl: line 2"):
        read_predictions(path, "video_id")


def test_refuses_to_overwrite_without_resume(tmp_path: Path) -> None:
    check_can_write(tmp_path, resume=False, overwrite=False)  # nothing there yet
    (tmp_path / "predictions.jsonl").write_text('{"video_id": 1}\n')
    with pytest.raises(PredictionFileError, match="--resume.*--overwrite"):
        check_can_write(tmp_path, resume=False, overwrite=False)
    check_can_write(tmp_path, resume=True, overwrite=False)
    check_can_write(tmp_path, resume=False, overwrite=True)


def test_merge_rank_files_in_dataset_order(tmp_path: Path) -> None:
    (tmp_path / "predictions.jsonl").write_text('{"question_id": 0, "p": "a"}\n')
    (tmp_path / "predictions.rank0.jsonl").write_text('{"question_id": 2, "p": "c"}\n')
    (tmp_path / "predictions.rank1.jsonl").write_text('{"question_id": 1, "p": "b"}\n{"question_id": 9, "p": "x"}\n')
    assert set(load_done(tmp_path, "question_id")) == {"0", "1", "2", "9"}
    merged = merge_predictions(tmp_path, "question_id", order=["0", "1", "2", "3"])
    assert list(merged) == ["0", "1", "2"]
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(x)["p"] for x in lines] == ["a", "b", "c"]
    assert not list(tmp_path.glob("predictions.rank*.jsonl"))
