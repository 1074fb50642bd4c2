"""`mammut-video eval` argument parsing: per-task --help, explained options, bad values refused in one line."""

from __future__ import annotations

import argparse

import pytest

from mammut_video.commands import build_parser, main
from mammut_video.eval.registry import TASKS

TASK_NAMES = tuple(TASKS)


def _help(capsys: pytest.CaptureFixture, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def _task_parsers() -> dict[str, argparse.ArgumentParser]:
    def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return dict(action.choices)

    return subparsers(subparsers(build_parser())["eval"])


def test_each_task_lists_only_its_options(capsys: pytest.CaptureFixture) -> None:
    caption = _help(capsys, "eval", "msvd-caption")
    for option in ("--protocol", "--answer-list", "--question-batch", "--rank-batch"):
        assert option not in caption
    assert "--no-meteor" in caption and "--split" in caption
    qa = _help(capsys, "eval", "msrvtt-qa")
    for option in ("--protocol", "--answer-list", "--question-batch", "--rank-batch", "--resume", "--limit"):
        assert option in qa
    assert "--no-meteor" not in qa
    retrieval = _help(capsys, "eval", "msrvtt-retrieval")
    assert "--protocol" not in retrieval and "--no-meteor" not in retrieval and "--split" not in retrieval
    overview = _help(capsys, "eval")
    assert all(task in overview for task in TASK_NAMES)


def test_every_option_is_explained_with_its_default() -> None:
    parsers = _task_parsers()
    assert set(parsers) == set(TASK_NAMES)
    for task, parser in parsers.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            name = action.option_strings[0]
            assert action.help and len(action.help) > 20, (task, name)
            assert "(default: " in action.help or "(required)" in action.help, (task, name)
        # defaults the options do not cover still reach the command
        args = parser.parse_args([])
        for attr in ("protocol", "answer_list", "split", "no_meteor", "question_batch", "rank_batch"):
            assert hasattr(args, attr), (task, attr)


@pytest.mark.parametrize("argv,option", [
    (["--limit", "0"], "--limit"),
    (["--limit", "-3"], "--limit"),
    (["--frames", "0"], "--frames"),
    (["--batch-size", "0"], "--batch-size"),
    (["--question-batch", "0"], "--question-batch"),
    (["--rank-batch", "0"], "--rank-batch"),
    (["--workers", "-1"], "--workers"),
    (["--frames", "eight"], "--frames"),
    (["--device", "gpu"], "--device"),
    (["--protocol", "vote"], "--protocol"),
])
def test_bad_values_are_refused_in_one_line(tmp_path, capsys, argv, option) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "msrvtt-qa", "--data-root", str(tmp_path), "--checkpoint", str(tmp_path), *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option in err and "--help" in err


def test_task_specific_options_refused_elsewhere(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "msvd-caption", "--data-root", str(tmp_path), "--protocol", "rank"])
    assert exit_.value.code == 2
    assert "--protocol" in capsys.readouterr().err


def test_answer_list_without_rank_protocol_is_refused(tmp_path, capsys) -> None:
    answers = tmp_path / "answers.txt"
    answers.write_text("red\n")
    assert main(["eval", "msrvtt-qa", "--data-root", str(tmp_path), "--checkpoint", str(tmp_path),
                 "--answer-list", str(answers)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--answer-list" in err and "--protocol rank" in err
