"""`make demo`'s code path (tools/demo.py) with a shortened schedule: the model must learn."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from mammut_video.eval.qa_metrics import most_common_answer_accuracy

ROOT = Path(__file__).resolve().parent.parent


def _demo():
    spec = importlib.util.spec_from_file_location("demo", ROOT / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_demo_learns_and_writes_every_output_then_reuses_them(tmp_path, capsys):
    demo = _demo()
    out = tmp_path / "demo"
    result = demo.run(out, num_videos=300, qa_time="150s", caption_time="10s")
    printed = capsys.readouterr().out
    # every step printed the command a user would type
    for cmd in ("finetune", "eval msrvtt-qa", "caption", "ask", "embed", "search"):
        assert f"$ mammut-video {cmd}" in printed, cmd
    # far from a random model: counting is learned first; overall well above always-the-commonest-answer
    assert result["per_type"]["how"] >= result["chance"]["how"] + 10, result
    questions = [json.loads(x) for x in (out / "eval-msrvtt-qa" / "predictions.jsonl").read_text().splitlines()]
    commonest = most_common_answer_accuracy(("all", q["answer"]) for q in questions)["all"]
    assert result["accuracy"] >= commonest + 10, result
    for path in ("run-qa/best/config.json", "run-qa/curves.png", "eval-msrvtt-qa/metrics.json", "search.html",
                 "embeddings/index.jsonl", "run-caption/best/config.json"):
        assert (out / path).is_file(), path
    # a second run reuses the data and the finished runs and says so
    demo.run(out, num_videos=300, qa_time="150s", caption_time="10s")
    again = capsys.readouterr().out
    assert "reusing the synthetic dataset" in again and again.count("reusing the finished run") == 2
    assert "$ mammut-video finetune" not in again
