"""QATask / rank protocol internals: each clip encoded once, scores equal a direct computation."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import mammut_video as mv
from mammut_video.data import AnnotationError
from mammut_video.data.records import QARecord, question_type
from mammut_video.eval.tasks import CaptionTask, QATask

LONG_QUESTION = " ".join(["what does the person holding the red umbrella near the old station do"] * 3) + "?"
CANDIDATES = ["run", "playing guitar", "red", "", "two", " ".join(["very"] * 20) + " long"]


@pytest.fixture(scope="module")
def tiny() -> mv.MammutVideo:
    torch.manual_seed(0)
    return mv.create_model("mammut-video-tiny", num_frames=4).eval()


def _split(questions: list[tuple[str, str]]) -> SimpleNamespace:
    """Questions (clip name, question) as a QASplit-shaped object."""
    records = [QARecord(video=Path(f"/clips/{clip}.mp4"), question=q, answer="run", question_id=i,
                        question_type=question_type(q), video_id=clip) for i, (clip, q) in enumerate(questions)]
    return SimpleNamespace(records=records, missing_videos=[], annotation_file=Path("/ann/test_qa.json"))


QUESTIONS = [("a", "what is he doing?"), ("a", "what colour is the car?"), ("b", "how many people are there?"),
             ("a", LONG_QUESTION), ("b", "who is playing?"), ("a", "where is the dog?"), ("b", "what is it?")]


CLIP_INDEX = [0, 0, 1, 0, 1, 0, 1]  # QUESTIONS' clips


def _direct_scores(tiny, video: torch.Tensor, questions: list[str], clip_index: list[int],
                   candidates: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed, per-token) log-probabilities: one full generative pass per (question, candidate), the
    clip encoded per question."""
    from mammut_video.text import qa_prompt_ids

    tok, limit = tiny.tokenizer, tiny.config.text.context_length
    total = torch.empty(len(questions), len(candidates))
    count = torch.empty(len(questions), len(candidates))
    with torch.inference_mode():
        for q, (c, prompt) in enumerate(zip(clip_index, qa_prompt_ids(tok, questions, limit))):
            kv = tiny.cross_kv(tiny.visual.forward_tokens(video[c: c + 1]))
            for k, cand in enumerate(candidates):
                seq = (prompt + tok.encode(cand) + [tok.eot_id])[:limit]
                ids = torch.tensor([seq])
                logits, _ = tiny.text.forward_generative(ids, kv)
                lp = logits[0, :-1].float().log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0][len(prompt) - 1:]
                total[q, k], count[q, k] = lp.sum(), len(lp)
    return total, total / count


@pytest.fixture(scope="module")
def direct(tiny) -> dict:
    """Reference scores: one full generative pass per (question, candidate), the clip encoded per question."""
    torch.manual_seed(1)
    video = torch.randn(2, 3, 4, 112, 112)
    questions = [q for _, q in QUESTIONS]
    total, normalized = _direct_scores(tiny, video, questions, CLIP_INDEX, CANDIDATES)
    return {"video": video, "questions": questions, "scores": total, "normalized": normalized}


@pytest.mark.parametrize("batch_size", [3, 64])
def test_rank_answers_with_shared_clips_equals_direct_scores(tiny, direct, batch_size) -> None:
    video, questions = direct["video"], direct["questions"]
    with torch.inference_mode():
        ours = tiny.rank_answers(video, questions, CANDIDATES, batch_size=batch_size, clip_index=CLIP_INDEX)
        normed = tiny.rank_answers(video, questions, CANDIDATES, batch_size=batch_size, clip_index=CLIP_INDEX,
                                   length_normalize=True)
    assert ours.shape == (len(questions), len(CANDIDATES))
    torch.testing.assert_close(ours, direct["scores"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(normed, direct["normalized"], atol=1e-5, rtol=1e-5)


def test_rank_encodes_each_clip_once(tiny, direct, monkeypatch) -> None:
    """2 clips, 7 questions: the encoder sees 2 rows in one call, cross K/V are made for 2 rows."""
    encoder_inputs: list[tuple] = []
    cross_rows: list[int] = []
    forward_tokens, cross_kv = tiny.visual.forward_tokens, tiny.cross_kv

    def counting_forward_tokens(x: torch.Tensor) -> torch.Tensor:
        encoder_inputs.append(tuple(x.shape))
        return forward_tokens(x)

    def counting_cross_kv(tokens: torch.Tensor):
        cross_rows.append(tokens.shape[0])
        return cross_kv(tokens)

    monkeypatch.setattr(tiny.visual, "forward_tokens", counting_forward_tokens)
    monkeypatch.setattr(tiny, "cross_kv", counting_cross_kv)
    task = QATask(_split(QUESTIONS), "rank", CANDIDATES, rank_batch=4)
    units = task.units()
    assert [u.video_id for u in units] == ["a", "b"]
    with torch.inference_mode():
        records = task.predict(tiny, direct["video"], units)
    assert encoder_inputs == [(2, 3, 4, 112, 112)]
    assert sum(cross_rows) == 2
    # the picks are the argmax of the direct per-question scores
    assert task.candidates == CANDIDATES
    assert [r["question_id"] for r in records] == [int(k) for u in units for k in u.keys]
    ref = direct["scores"][[r["question_id"] for r in records]]
    assert [r["prediction"] for r in records] == [CANDIDATES[b] for b in ref.argmax(-1).tolist()]
    torch.testing.assert_close(torch.tensor([r["score"] for r in records]), ref.max(-1).values,
                               atol=1e-5, rtol=1e-5)


def test_rank_answers_checks_its_arguments(tiny) -> None:
    video = torch.randn(2, 3, 4, 112, 112)
    with pytest.raises(ValueError, match="clip indices"):
        tiny.rank_answers(video, ["what?"], ["a"], clip_index=[0, 1])
    with pytest.raises(ValueError, match="outside the 2 clips"):
        tiny.rank_answers(video, ["what?"], ["a"], clip_index=[2])
    with pytest.raises(ValueError, match="batch_size"):
        tiny.rank_answers(video, ["what?", "who?"], ["a"], batch_size=0)


def test_limit_zero_is_not_everything() -> None:
    split = _split(QUESTIONS)
    assert len(QATask(split, limit=3).records) == 3
    assert len(QATask(split, limit=None).records) == len(QUESTIONS)
    with pytest.raises(ValueError, match="limit must be at least 1"):
        QATask(split, limit=0)
    captions = SimpleNamespace(records=[SimpleNamespace(video=Path("/v.mp4"), video_id="v", captions=["x"],
                                                        start=None, end=None)], missing_videos=[])
    with pytest.raises(ValueError, match="limit must be at least 1"):
        CaptionTask(captions, limit=0)


def test_duplicate_question_ids_name_the_id_and_both_records() -> None:
    split = _split(QUESTIONS[:3])
    split.records[2].question_id = "0"  # "0" and 0 are the same prediction key
    with pytest.raises(AnnotationError, match=r"test_qa.json: question id '0' is used by records 0 and 2"):
        QATask(split)


# ------------------------------------------------------------------ prefix tree, shared clips, precision
SHARED_PREFIXES = ["playing guitar", "playing piano", "playing", "play", "red", "red car", "red car wash",
                   "red", "two", "", "a man playing guitar on a stage", "blue", "blueberry"]


def test_answer_trie_feeds_each_shared_prefix_once(tiny) -> None:
    from mammut_video.model.ranking import AnswerTrie

    tok = tiny.tokenizer
    answers = [tok.encode(c) + [tok.eot_id] for c in SHARED_PREFIXES]
    trie = AnswerTrie(answers)
    proper = {tuple(a[:d]) for a in answers for d in range(1, len(a))}
    assert trie.num_nodes == len(proper) < sum(len(a) - 1 for a in answers)
    for k, a in enumerate(answers):  # each path scores the answer's tokens in order
        assert [trie.edge_token[e] for e in trie.paths[k]] == a
        assert [trie.edge_depth[e] for e in trie.paths[k]] == list(range(1, len(a) + 1))
    for size in (1, 3, 100):
        chunks = trie.chunks(size, torch.device("cpu"))
        assert sum(len(c.tokens) for c in chunks) == trie.num_nodes
        for c in chunks:  # every node's ancestors are in its chunk: the depth-1 node of its branch is
            assert c.depth[0] == 1 and bool((c.tree.sum(1) == c.depth).all())


@pytest.mark.parametrize("batch_size", [1, 4, 256])
def test_rank_with_shared_prefixes_equals_direct_scores(tiny, direct, batch_size) -> None:
    video, questions = direct["video"], direct["questions"][:4]
    total, normalized = _direct_scores(tiny, video, questions, CLIP_INDEX[:4], SHARED_PREFIXES)
    with torch.inference_mode():
        ours = tiny.rank_answers(video, questions, SHARED_PREFIXES, batch_size=batch_size, clip_index=CLIP_INDEX[:4])
        normed = tiny.rank_answers(video, questions, SHARED_PREFIXES, batch_size=batch_size,
                                   clip_index=CLIP_INDEX[:4], length_normalize=True)
    torch.testing.assert_close(ours, total, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(normed, normalized, atol=1e-5, rtol=1e-5)
    assert torch.equal(ours[:, 4], ours[:, 7])  # a duplicate candidate scores alike


def test_answer_questions_reads_each_clip_kv_in_place(tiny, direct, monkeypatch) -> None:
    """7 questions about 2 clips: cross-attention reads 2 clips' K/V, never one copy per question,
    and the answers equal model.answer on a copy of each question's clip."""
    from mammut_video.eval.tasks import answer_questions
    from mammut_video.model.decoder import Attention

    seen: list[int] = []
    attend_clips = Attention.attend_clips

    def recording(self, q, kv, rows):
        seen.append(kv[0].shape[0])
        return attend_clips(self, q, kv, rows)

    video, questions = direct["video"], direct["questions"]
    with torch.inference_mode():
        expected = tiny.answer(video[CLIP_INDEX], questions, max_new_tokens=4)
        monkeypatch.setattr(Attention, "attend_clips", recording)
        answers = answer_questions(tiny, video, CLIP_INDEX, questions, batch_size=5, max_new_tokens=4)
    assert answers == expected
    assert seen and set(seen) == {2}


def test_bf16_autocast_stays_within_tolerance_of_fp32(tiny, direct) -> None:
    """bf16 keeps ~3 significant digits: log-probability sums agree to a few hundredths per token."""
    from mammut_video.runtime.precision import autocast

    video, questions = direct["video"], direct["questions"]
    cpu = torch.device("cpu")
    with torch.inference_mode():
        with autocast(cpu, "bf16"):
            bf16 = tiny.rank_answers(video, questions, CANDIDATES, clip_index=CLIP_INDEX, length_normalize=True)
            logits, _ = tiny.text.forward_generative(torch.tensor([[49406, 320, 1929]]),
                                                      tiny.cross_kv(tiny.visual.forward_tokens(video[:1])))
        ref, _ = tiny.text.forward_generative(torch.tensor([[49406, 320, 1929]]),
                                              tiny.cross_kv(tiny.visual.forward_tokens(video[:1])))
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(bf16, direct["normalized"], atol=0.05, rtol=0.005)
    torch.testing.assert_close(logits.float(), ref, atol=0.05, rtol=0.005)
    assert not torch.equal(bf16, direct["normalized"])  # autocast did run in bf16


def test_precision_and_compile_options_reach_the_eval_config(tmp_path) -> None:
    import argparse

    from mammut_video.commands import eval as eval_command
    from mammut_video.eval.config import EvalConfig

    parser = argparse.ArgumentParser()
    eval_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["eval", "msrvtt-qa", "--data-root", str(tmp_path), "--checkpoint", str(tmp_path),
                              "--precision", "bf16", "--compile"])
    config = eval_command.config_from_args(args)
    assert (config.precision, config.compile) == ("bf16", True)
    defaults = eval_command.config_from_args(parser.parse_args(["eval", "msrvtt-qa", "--data-root", str(tmp_path),
                                                                "--checkpoint", str(tmp_path)]))
    assert (defaults.precision, defaults.compile) == (None, False)  # None: the device's default
    with pytest.raises(ValueError, match="precision 'fp8'"):
        EvalConfig("msrvtt-qa", checkpoint=tmp_path, data_root=tmp_path, precision="fp8")


@pytest.mark.slow
def test_eval_in_bf16_with_compile_records_its_precision(tmp_path) -> None:
    import json

    from mammut_video.data import make_synthetic
    from mammut_video.eval import EvalConfig, evaluate

    data = make_synthetic(tmp_path / "data", kind="msrvtt", num_videos=4, frames=8, size=64, seed=3)["msrvtt"]
    torch.manual_seed(0)
    mv.create_model("mammut-video-tiny", num_frames=4).save_pretrained(tmp_path / "ckpt")
    runs = {}
    for precision, compile_ in (("fp32", False), ("bf16", True)):
        out = tmp_path / precision
        result = evaluate(EvalConfig("msrvtt-qa", checkpoint=tmp_path / "ckpt", data_root=data, limit=3,
                                     device="cpu", precision=precision, compile=compile_, workers=0, out=out,
                                     progress=False))
        metrics = json.loads(result.metrics_path.read_text())
        assert metrics["precision"] == precision and metrics["run"]["compile"] is compile_
        assert json.loads((out / "settings.json").read_text())["precision"] == precision
        runs[precision] = [r["prediction"] for r in map(json.loads, result.predictions_path.read_text().splitlines())]
    assert len(runs["bf16"]) == len(runs["fp32"]) == 3 and all(isinstance(p, str) for p in runs["bf16"])
