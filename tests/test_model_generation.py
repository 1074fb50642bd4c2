"""Greedy / beam search with and without the K/V cache, batching, EOS; caption / answer / rank_answers."""

from __future__ import annotations

import contextlib

import pytest
import torch

import mammut_video  # noqa: F401
from mammut_video.model import TextConfig, create_model
from mammut_video.model.decoder import TextDecoder
from mammut_video.model.generation import generate

CFG = TextConfig(vocab_size=50, context_length=32, width=64, heads=4, layers=4, cross_attn_ratio=2)
EOS, PAD = 49, 0


@pytest.fixture(scope="module")
def decoder() -> TextDecoder:
    torch.manual_seed(0)
    dec = TextDecoder(CFG).eval()
    with torch.no_grad():
        dec.lm_head.mul_(8.0)  # peaky distributions so that sequences differ between inputs
    return dec


def _kv(decoder, b, seed=0):
    g = torch.Generator().manual_seed(seed)
    return decoder.cross_kv(torch.randn(b, 7, CFG.width, generator=g))


PROMPTS = [[48, 3, 4], [48], [48, 10, 11, 12, 13]]


@pytest.mark.parametrize("num_beams", [1, 3])
def test_cache_and_no_cache_give_identical_tokens(decoder, num_beams):
    kv = _kv(decoder, 3)
    kwargs = dict(eos_id=EOS, pad_id=PAD, max_new_tokens=12, num_beams=num_beams)
    cached = generate(decoder, kv, PROMPTS, use_cache=True, **kwargs)
    uncached = generate(decoder, kv, PROMPTS, use_cache=False, **kwargs)
    assert cached == uncached
    assert any(len(seq) > 0 for seq in cached)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batch_equals_each_prompt_alone(decoder, num_beams):
    kv = _kv(decoder, 3, seed=4)
    kwargs = dict(eos_id=EOS, pad_id=PAD, max_new_tokens=8, num_beams=num_beams)
    batch = generate(decoder, kv, PROMPTS, **kwargs)
    alone = [generate(decoder, [(k[i:i + 1], v[i:i + 1]) for k, v in kv], [p], **kwargs)[0]
             for i, p in enumerate(PROMPTS)]
    assert batch == alone
    assert len({tuple(s) for s in batch}) > 1  # different clips/prompts, different outputs


def test_greedy_is_argmax_of_full_forward(decoder):
    kv = _kv(decoder, 1)
    out = generate(decoder, kv, [[48, 7]], eos_id=EOS, pad_id=PAD, max_new_tokens=6)[0]
    seq = [48, 7]
    for token in out:
        with torch.no_grad():
            logits, _ = decoder.forward_generative(torch.tensor([seq]), kv)
        assert int(logits[0, -1].argmax()) == token
        seq.append(token)


@contextlib.contextmanager
def eos_bias(decoder: TextDecoder, sign: float):
    """Make EOS always (sign > 0) or never (sign < 0) win: ln_final's output sums to about width
    after a +1 bias shift, so a large lm_head column for EOS dominates."""
    with torch.no_grad():
        decoder.ln_final.bias += 1.0
        decoder.lm_head[:, EOS] += sign * 100.0
    try:
        yield
    finally:
        with torch.no_grad():
            decoder.ln_final.bias -= 1.0
            decoder.lm_head[:, EOS] -= sign * 100.0


def test_max_new_tokens_and_context_limit(decoder):
    kv = _kv(decoder, 1)
    with eos_bias(decoder, -1.0):
        assert len(generate(decoder, kv, [[48]], eos_id=EOS, max_new_tokens=5)[0]) == 5
        assert len(generate(decoder, kv, [[48] * 30], eos_id=EOS, max_new_tokens=5)[0]) == 2  # context 32
        assert len(generate(decoder, kv, [[48]], eos_id=EOS, max_new_tokens=4, num_beams=2)[0]) == 4


def test_eos_stops_generation(decoder):
    kv = _kv(decoder, 2)
    with eos_bias(decoder, 1.0):
        assert generate(decoder, kv, [[48], [48, 2]], eos_id=EOS, max_new_tokens=5) == [[], []]
        assert generate(decoder, kv, [[48], [48, 2]], eos_id=EOS, max_new_tokens=5, num_beams=3) == [[], []]


def test_beam_search_finds_at_least_greedy_likelihood(decoder):
    kv = _kv(decoder, 1, seed=7)

    def score(seq: list[int]) -> float:
        ids = torch.tensor([[48] + seq + [EOS]])
        with torch.no_grad():
            logits, _ = decoder.forward_generative(ids, kv)
        lp = logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None])
        return float(lp.sum())

    greedy = generate(decoder, kv, [[48]], eos_id=EOS, max_new_tokens=20)[0]
    beam = generate(decoder, kv, [[48]], eos_id=EOS, max_new_tokens=20, num_beams=4, length_penalty=0.0)[0]
    assert score(beam) >= score(greedy) - 1e-4


# ------------------------------------------------------------------ model-level (real CLIP tokenizer)
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("mammut-video-tiny").eval()


def test_caption_and_answer_return_strings(tiny):
    video = torch.randn(2, 3, 8, 112, 112)
    captions = tiny.caption(video, max_new_tokens=5)
    answers = tiny.answer(video, ["what is the dog doing?", "who is there"], max_new_tokens=3, num_beams=2)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    with pytest.raises(ValueError, match="questions"):
        tiny.answer(video, ["only one"])


def test_rank_answers_matches_full_forward(tiny):
    from mammut_video.text import qa_prompt_ids

    video = torch.randn(2, 3, 8, 112, 112)
    questions = ["what is he doing?", "what colour is the car?"]
    candidates = ["run", "playing guitar", "red"]
    scores = tiny.rank_answers(video, questions, candidates, batch_size=2)
    normed = tiny.rank_answers(video, questions, candidates, length_normalize=True)
    assert scores.shape == (2, 3)
    tok = tiny.tokenizer
    prompt = qa_prompt_ids(tok, questions[1:])[0]
    answer = tok.encode("playing guitar") + [tok.eot_id]
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        out = tiny(video[1:], ids)
    lp = out["logits"].log_softmax(-1).gather(-1, out["targets"][:, None])[:, 0]  # every position but the last
    expected = lp[len(prompt) - 1:].sum()
    torch.testing.assert_close(scores[1, 1], expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(normed[1, 1], expected / len(answer), atol=1e-4, rtol=1e-5)


def test_preprocess_then_caption_on_a_real_clip(tiny, realdata):
    from mammut_video.video import read_clip

    clip = read_clip(realdata / "msrvtt" / "video7016.mp4", num_frames=tiny.config.num_frames)
    x = tiny.preprocess(clip)
    assert x.shape == (3, 8, 112, 112) and x.dtype == torch.float32
    out = tiny.encode_video(x[None], normalize=True)
    assert out.tokens.shape == (1, 148, 192)  # 2 x 49 motion tubelets + 49 image patches + CLS
    torch.testing.assert_close(out.embedding.norm(dim=-1), torch.ones(1))
    captions = tiny.caption(x[None], max_new_tokens=4, num_beams=2)
    assert len(captions) == 1 and isinstance(captions[0], str)
    sims = tiny.encode_text(["mom and two girls making easter eggs", "a car"], normalize=True) @ out.embedding.T
    assert sims.shape == (2, 1)


class _MarkovDecoder:
    """A stand-in decoder whose next-token distribution depends only on the last token (a table),
    so the best sequence under any length penalty can be worked out by hand."""

    context_length = 16

    def __init__(self, table: dict[int, dict[int, float]], vocab: int) -> None:
        self.logp = torch.full((vocab, vocab), -30.0)
        for last, probs in table.items():
            for token, p in probs.items():
                self.logp[last, token] = float(torch.tensor(p).log())

    def forward_generative(self, ids, cross_kv, past=None, valid=None):
        from mammut_video.model.decoder import DecoderCache

        b, n = ids.shape
        cache = DecoderCache([], torch.ones(b, n, dtype=torch.bool), torch.full((b,), n))
        return self.logp[ids], cache


def test_length_penalty_decides_between_short_and_long_answers():
    # from SOT (1): EOS 0.4 -> "" scores log 0.4 = -0.92 over 1 token;
    #               A (2) 0.6, then EOS 0.5 -> [A] scores log 0.3 = -1.20 over 2 tokens
    sot, a, eos = 1, 2, 3
    fake = _MarkovDecoder({sot: {eos: 0.4, a: 0.6}, a: {eos: 0.5, a: 0.5}}, vocab=4)
    kv = [(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1))]
    kwargs = dict(eos_id=eos, pad_id=0, max_new_tokens=3, num_beams=2, use_cache=False)
    # no normalisation: the short answer has the higher total log-probability
    assert generate(fake, kv, [[sot]], length_penalty=0.0, **kwargs) == [[]]
    # per-token normalisation: -1.20 / 2 = -0.60 beats -0.92 / 1
    assert generate(fake, kv, [[sot]], length_penalty=1.0, **kwargs) == [[a]]
    # greedy ignores the penalty and takes A first
    assert generate(fake, kv, [[sot]], eos_id=eos, max_new_tokens=1, use_cache=False) == [[a]]


def test_generation_runs_in_eval_mode_without_autograd_and_restores_the_mode() -> None:
    # create_model returns a model in training mode; caption / answer / rank_answers must still run
    # with dropout off and no autograd graph, and leave the mode as they found it.
    import mammut_video as mv

    torch.manual_seed(0)
    model = mv.create_model("mammut-video-tiny")
    assert model.training
    seen: list[tuple[bool, bool]] = []
    model.text.ln_final.register_forward_hook(lambda m, i, o: seen.append((m.training, torch.is_grad_enabled())))
    video = torch.randn(1, 3, 8, 112, 112)
    model.caption(video, max_new_tokens=2)
    model.answer(video, "what is it?", max_new_tokens=2)  # one string is one question
    model.rank_answers(video, ["what is it?"], ["red", "blue"])
    assert seen and all(not training and not grad for training, grad in seen)
    assert model.training and all(m.training for m in model.modules())


# ------------------------------------------------------------------ shared clips, last-position logits, compile
@pytest.mark.parametrize("num_beams", [1, 3])
def test_prompts_sharing_clips_equal_a_kv_copy_per_prompt(decoder, num_beams):
    prompts = [[48, 3], [48], [48, 10, 11], [48, 5], [48, 7, 7]]
    clip_index = [1, 0, 1, 2, 0]  # not grouped: generate groups them and puts the answers back in order
    kv = _kv(decoder, 3, seed=2)
    kwargs = dict(eos_id=EOS, pad_id=PAD, max_new_tokens=6, num_beams=num_beams)
    shared = generate(decoder, kv, prompts, clip_index=clip_index, **kwargs)
    idx = torch.tensor(clip_index)
    copied = generate(decoder, [(k[idx], v[idx]) for k, v in kv], prompts, **kwargs)
    assert shared == copied
    with pytest.raises(ValueError, match="outside the 3 clips"):
        generate(decoder, kv, prompts, clip_index=[0, 1, 2, 3, 0], **kwargs)


def test_cross_attention_reads_each_clip_once_per_step(decoder, monkeypatch):
    """Beams and prompts of a clip read its K/V in place: attention sees (clips, ...) K/V, never (rows, ...)."""
    from mammut_video.model.decoder import Attention

    seen: list[int] = []
    attend_clips = Attention.attend_clips

    def recording(self, q, kv, rows):
        seen.append(kv[0].shape[0])
        return attend_clips(self, q, kv, rows)

    monkeypatch.setattr(Attention, "attend_clips", recording)
    generate(decoder, _kv(decoder, 2), [[48, 3], [48], [48, 4]], eos_id=-1, max_new_tokens=3, num_beams=3,
             clip_index=[0, 0, 1])
    assert seen and set(seen) == {2}


def test_generation_takes_vocabulary_logits_at_the_last_position_only(decoder, monkeypatch):
    shapes: list[tuple[int, ...]] = []
    logits = TextDecoder.logits

    def recording(self, states):
        shapes.append(tuple(states.shape))
        return logits(self, states)

    monkeypatch.setattr(TextDecoder, "logits", recording)
    generate(decoder, _kv(decoder, 3), PROMPTS, eos_id=-1, max_new_tokens=4)
    assert shapes == [(3, CFG.width)] * 4  # the prompt's last position, then one position per step


@pytest.mark.slow
def test_compiled_steps_give_the_same_tokens_and_refuse_changed_weights(decoder, capfd):
    """The CPU's default compile (inductor freezing + max-autotune) gives the eager tokens for any mix of
    rows per clip, batch size and beams, quietly (autotuning prints its kernel timings otherwise); its
    weights are frozen into it, so changing them afterwards is refused until compile_steps() is called
    again, which then compiles with the new weights."""
    import copy

    import torch._inductor.config as inductor_config

    from mammut_video.errors import ConfigError

    compiled = copy.deepcopy(decoder)
    compiled.compile_steps()
    kv = _kv(decoder, 3, seed=5)
    prompts = PROMPTS + [[48, 7], [48, 2, 2, 2]]
    capfd.readouterr()
    with inductor_config.patch(fx_graph_cache=False, autotune_local_cache=False):  # autotune here, not from a cache
        for clip_index, num_beams in [([0, 1, 2], 1), ([0, 1, 2], 3), ([2, 2, 0, 1, 2], 1), ([1, 1, 1, 0, 0], 2)]:
            kwargs = dict(eos_id=EOS, pad_id=PAD, max_new_tokens=8, num_beams=num_beams, clip_index=clip_index)
            some = prompts[: len(clip_index)]
            assert generate(compiled, kv, some, **kwargs) == generate(decoder, kv, some, **kwargs)
    assert capfd.readouterr().err == ""
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 rounds both alike: as near to fp32 as eager
        bf16 = {d: _step_logits(d, kv) for d in (compiled, decoder)}
    fp32 = _step_logits(decoder, kv)
    assert (bf16[compiled] - fp32).abs().max() <= 2 * (bf16[decoder] - fp32).abs().max() + 1e-3
    kwargs = dict(eos_id=EOS, pad_id=PAD, max_new_tokens=8)
    with torch.no_grad():  # the vocabulary head is applied after the step, not frozen into it
        compiled.lm_head.mul_(1.0)
    assert generate(compiled, kv, PROMPTS, **kwargs) == generate(decoder, kv, PROMPTS, **kwargs)

    def change(d: TextDecoder) -> None:  # weights the step itself reads
        with torch.no_grad():
            d.ln_final.weight.mul_(-1.0)
            d.resblocks[1].mlp.c_fc.bias.add_(1.0)

    change(compiled)
    with pytest.raises(ConfigError, match="weights changed after its compiled step froze them"):
        generate(compiled, kv, PROMPTS, **kwargs)
    compiled.compile_steps()
    changed = copy.deepcopy(decoder)
    change(changed)
    assert generate(compiled, kv, PROMPTS, **kwargs) == generate(changed, kv, PROMPTS, **kwargs)
    assert generate(compiled, kv, PROMPTS, **kwargs) != generate(decoder, kv, PROMPTS, **kwargs)


def _step_logits(decoder, kv) -> torch.Tensor:
    """Float logits (4, B, vocab) of four cached steps after PROMPTS, one clip per prompt."""
    from mammut_video.model.generation import left_pad

    ids, valid = left_pad(PROMPTS, PAD, torch.device("cpu"))
    with torch.no_grad():
        cache = decoder.empty_cache(len(PROMPTS), ids.shape[1] + 4, ids.device)
        _, cache = decoder.generative_states(ids, kv, cache, valid)
        steps = []
        for token in (5, 6, 7, 8):
            states, cache = decoder.generative_states(torch.full((len(PROMPTS), 1), token), kv, cache)
            steps.append(decoder.logits(states[:, -1]).float())
    return torch.stack(steps)


def test_a_new_mix_of_rows_per_clip_does_not_compile_the_step_again(decoder):
    """The eval answers 64 questions at a time whatever clips they are about: every batch has its own
    rows per clip, clips read, batch size and prompt length. The compiled step reads the rows as
    tensors (RowGrid) and its sizes become dynamic, so the compilations are bounded by the kinds of
    shape (sizes 1 and 2+ are compiled apart, as are clip views at offset 0 and further on), not by
    the number of batches: a third pass over the same mix compiles nothing, and none of it reaches
    torch's default recompile limit of 8, where steps fall back to eager (the code before RowGrid
    compiled once per batch up to that limit). Dynamo's record of which sizes changed is per
    function, shared with every other test that compiles a step: reset first, so the count does
    not depend on the tests before."""
    import copy

    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    from mammut_video.model.decoder import STEP_RECOMPILE_LIMIT

    torch._dynamo.reset()
    counter = CompileCounter()
    limits: list[int] = []

    def backend(graph, example_inputs):  # counts, and sees the recompile limit each compilation runs under
        limits.append(torch._dynamo.config.recompile_limit)
        return counter(graph, example_inputs)

    compiled = copy.deepcopy(decoder)
    compiled.compile_steps(backend=backend)
    kv = _kv(decoder, 4, seed=3)
    batches = [[0], [0, 0, 1, 3], [2, 2, 2], [1, 0], [0, 1, 1, 1, 1], [3, 0, 0, 2, 2, 1], [0, 1, 1, 1, 2, 2],
               [3], [0, 0, 0, 0, 0, 1, 2, 3, 3], [0, 1], [1, 1, 3, 3, 3]]
    compiled_after: list[int] = []
    for rerun in (0, 1, 2):
        for i, clip_index in enumerate(batches):
            prompts = [[48] + [3] * ((i + q + rerun) % 4) for q in range(len(clip_index))]
            kwargs = dict(eos_id=-1, pad_id=PAD, max_new_tokens=3 + (i + rerun) % 3, clip_index=clip_index)
            assert generate(compiled, kv, prompts, **kwargs) == generate(decoder, kv, prompts, **kwargs)
        compiled_after.append(counter.frame_count)
    assert compiled_after[2] == compiled_after[1] and compiled_after[1] < 8, compiled_after
    assert set(limits) == {STEP_RECOMPILE_LIMIT} and STEP_RECOMPILE_LIMIT >= 4 * compiled_after[-1]  # headroom


def test_a_compiled_step_reads_only_the_clips_its_rows_read_and_skips_uneven_grids(decoder):
    """The eval generates 64 questions at a time with the K/V of the 8 clips of its video batch: the
    clips no row reads are left out of the grid (a (8, 24) grid for 64 rows would attend 3x the
    queries), and a grid holding over twice the rows (1 row of one clip beside 60 of another) is
    not made: that step runs eager."""
    from mammut_video.model.decoder import ClipKV

    kv = _kv(decoder, 5, seed=1)
    step = ClipKV(kv, (0, 24, 16, 0, 0)).for_compiled_step(torch.device("cpu"))
    assert step is not None and step.rows == (24, 16) and tuple(step.layout.places.shape) == (2, 24)
    assert torch.equal(step.kv[0][0], kv[0][0][1:3])
    assert ClipKV(kv, (1, 1, 60, 0, 0)).for_compiled_step(torch.device("cpu")) is None
    once = ClipKV(kv, (1, 1, 1, 1, 1))  # made once per generation, then kept
    assert once.for_compiled_step(torch.device("cpu")) is once.for_compiled_step(torch.device("cpu"))


@pytest.mark.parametrize("length", [1, 3])
def test_grid_attention_equals_the_attention_per_clip(decoder, length):
    from mammut_video.model.decoder import RowGrid

    attn = decoder.cross_attn[0].attn
    kv = _kv(decoder, 4, seed=1)[0]
    rows = (2, 0, 3, 1)
    q = torch.randn(sum(rows), CFG.heads, length, CFG.width // CFG.heads)
    with torch.no_grad():
        torch.testing.assert_close(attn.attend_clips(q, kv, RowGrid.of(rows, q.device)), attn.attend_clips(q, kv, rows),
                                   atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("chunk_tokens", [1, 8, 12, 20])
def test_prefill_in_row_chunks_equals_one_pass(decoder, monkeypatch, chunk_tokens):
    """A long prefill runs in row chunks (bounded activation memory); states, cache and tokens are those
    of one pass, with prompts of several clips (one clip read by no prompt) and left padding. The
    prompts are 4 tokens long, so the chunks hold 1, 2, 3 and 5 rows: chunk edges fall inside
    clips and a chunk holds the clip that no row reads."""
    from mammut_video.model import decoder as decoder_module
    from mammut_video.model.decoder import ClipKV
    from mammut_video.model.generation import left_pad

    prompts = [[48, 3], [48], [48, 10, 11], [48, 5], [48, 7, 7], [48, 9, 9, 9]]
    rows = (2, 0, 3, 1)  # four clips, the second read by no prompt
    kv = _kv(decoder, 4, seed=5)
    ids, valid = left_pad(prompts, PAD, torch.device("cpu"))

    def prefill() -> tuple[torch.Tensor, object]:
        cache = decoder.empty_cache(len(prompts), ids.shape[1] + 3, ids.device)
        with torch.no_grad():
            return decoder.generative_states(ids, ClipKV(kv, rows), cache, valid)

    whole_states, whole = prefill()
    clip_index = [c for c, r in enumerate(rows) for _ in range(r)]
    whole_tokens = generate(decoder, kv, prompts, eos_id=-1, max_new_tokens=4, clip_index=clip_index)
    monkeypatch.setattr(decoder_module, "PREFILL_CHUNK_TOKENS", chunk_tokens)
    chunked_states, chunked = prefill()
    torch.testing.assert_close(chunked_states, whole_states, atol=1e-6, rtol=1e-5)
    for (k1, v1), (k2, v2) in zip(chunked.kv, whole.kv):
        torch.testing.assert_close(k1, k2, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(v1, v2, atol=1e-6, rtol=1e-5)
    assert torch.equal(chunked.key_valid, whole.key_valid) and torch.equal(chunked.next_pos, whole.next_pos)
    assert chunked.length == whole.length == ids.shape[1]
    assert generate(decoder, kv, prompts, eos_id=-1, max_new_tokens=4, clip_index=clip_index) == whole_tokens


def test_clip_kv_take_rows_keeps_the_clips_of_those_rows():
    from mammut_video.model.decoder import ClipKV

    k = torch.arange(4.0).view(4, 1, 1, 1)
    clips = ClipKV([(k, k)], (2, 0, 3, 1))
    for (start, stop), (first, counts) in {(0, 2): (0, (2,)), (1, 4): (0, (1, 0, 2)), (2, 5): (2, (3,)),
                                           (4, 9): (2, (1, 1)), (5, 6): (3, (1,))}.items():
        part = clips.take_rows(start, stop)
        assert part.rows == counts
        assert part.kv[0][0].flatten().tolist() == list(range(first, first + len(counts)))


def test_compiled_steps_are_only_the_one_token_steps(decoder, monkeypatch):
    """compile_steps() compiles the generation step; prompt passes (a new shape every batch, and row
    chunks) stay eager, so a compiled decoder does not recompile for every prompt batch or chunk."""
    from mammut_video.model import decoder as decoder_module

    seen: list[tuple[int, int]] = []

    def recording(ids, cross, cache, valid, slots):
        seen.append(tuple(ids.shape))
        return decoder._extend(ids, cross, cache, valid, slots)

    monkeypatch.setattr(decoder, "_compile", {})
    monkeypatch.setattr(decoder, "_compiled_step", lambda device: recording)
    monkeypatch.setattr(decoder_module, "PREFILL_CHUNK_TOKENS", 4)
    prompts = [[48, 3, 4], [48], [48, 10, 11, 12, 13], [48, 5]]
    generate(decoder, _kv(decoder, 4), prompts, eos_id=-1, max_new_tokens=4, num_beams=1)
    assert seen == [(4, 1)] * 3  # the three steps after the prompt, every row at once
