"""Benchmark the model core on this machine (random weights; timings only).

(a) encoder: sparse tubes (one ViT pass per clip) vs. encoding every frame separately through
    the same ViT, at 8 / 16 / 32 frames of 224x224.
(b) greedy caption generation, ms per generated token (per step of the whole batch), for 8 / 32 /
    64 new tokens, batches of 1, 4 and 32 clips (EOS disabled so every run produces exactly that
    many tokens), three ways:

    - cache: the prompt written into a preallocated self-attention cache, then one token per step,
      vocabulary logits at the last position only, cross-attention K/V computed once per clip
      (``generate(use_cache=True)``);
    - no cache: no key/value cache at all, as open_clip's CoCa/MaMMUT ``generate``: every step
      re-runs the decoder on the whole prefix, logits at every position, and recomputes the
      cross-attention K/V from the visual tokens (:func:`generate_without_cache`, checked to give
      the same tokens);
    - prefix re-run: the whole prefix every step, but cross-attention K/V computed once
      (``generate(use_cache=False)``), to show what each half of the cache is worth;
    - compiled cache: the cache with the step compiled as ``--compile`` does (``compile_steps()``;
      on a CPU inductor freezes the weights into it and autotunes its matrix products).
(c) beam search (3 beams), ms per step: cache vs. prefix re-run; the beams read their clip's
    cross-attention K/V in place.
(d) the rank protocol, seconds per question on a candidate list (MSVD-QA's 1,000 answers from
    ``../shared/realdata`` when present, else 1,000 one-token words): the candidates as a prefix
    tree after the question's cached prompt (``model.ranking``) vs. every candidate fed in full
    after its own copy of the prompt's cache (:func:`rank_without_sharing`, the protocol before the
    tree; checked to give the same scores). The clip's encoding is left out of both.
(e) peak memory of answering 64 questions about one clip (``eval.tasks.answer_questions``, 10
    new tokens) vs. the protocol before (:func:`answer_before`: the clip's cross-attention K/V
    copied per question, vocabulary logits at every prompt position) and vs. today's decoder with
    only the K/V copied. On the CPU: the rise of the process's peak resident memory (Linux), on
    CUDA: the allocator's peak.
(f) torch.compile on / off as ``--compile`` does it: the encoder on one clip and greedy generation at
    batch 1, steady-state times (interleaved) and the first compiled call, compilation included.
(g) precision (fp32 / bf16 / fp16 autocast, ``runtime.precision``): clips/s of encode + caption
    (30 new tokens) for a batch of clips, and questions/s of ``answer_questions`` with 24
    questions per clip (MSRVTT-QA's average), the eval's generate protocol. Meant for a GPU:
    bf16 on a CPU without bf16 instructions is several times slower than fp32 (faster with AVX512-BF16).

Usage: ``python tools/bench_model.py [--sections a b c d e f g] [--repeats 5] [--gen-repeats 3]
[--frames 8 16 32] [--new-tokens 8 32 64] [--gen-batch 1 4 32] [--rank-questions 2] [--device cpu] [--threads N]
[--json FILE]``

``--json FILE`` also writes the numbers printed as JSON (rewritten after each section, so that the sections done
before a failure are kept): {"torch", "threads", "device", "preset", "records": [{"section": ..., ...}]}, times
as [median, fastest] in ms.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import re
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

import mammut_video  # noqa: F401  (torchvision guard before timm)
from mammut_video.eval.tasks import answer_questions
from mammut_video.model import create_model, list_presets
from mammut_video.model.generation import generate, left_pad
from mammut_video.model.ranking import AnswerTrie, score_answers
from mammut_video.runtime.precision import inference_autocast
from mammut_video.text.prompts import qa_prompt_ids

REALDATA_ANSWERS = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "msvd" / "violet_txt_msvd-qa.json"
SOT = 49406
RECORDS: list[dict] = []  # what the sections print, for --json


def record(section: str, **values: object) -> None:
    """Keep one printed row for ``--json``."""
    RECORDS.append({"section": section, **values})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fns: list[Callable[[], object]], repeats: int, device: torch.device) -> list[tuple[float, float]]:
    """(median, fastest) wall time in ms of each function; runs are interleaved so that load from
    other processes on a shared machine hits all of them alike (the fastest run is the least disturbed)."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            out.append((time.perf_counter() - start) * 1000)
    return [(statistics.median(t), min(t)) for t in times]


def ratio(slow: tuple[float, float], fast: tuple[float, float]) -> str:
    """``slow / fast`` as "median x (fastest-run x)"."""
    return f"{slow[0] / fast[0]:>5.1f}x ({slow[1] / fast[1]:>4.1f}x)"


@torch.no_grad()
def generate_without_cache(model, tokens: torch.Tensor, sot: int, n: int) -> list[list[int]]:
    """Greedy decoding with no key/value cache of any kind (open_clip's ``generate``): each step
    maps the visual tokens (B, N, Dv) to cross-attention K/V again and re-runs the whole prefix."""
    ids = torch.full((tokens.shape[0], 1), sot, dtype=torch.long, device=tokens.device)
    for _ in range(n):
        logits, _ = model.text.forward_generative(ids, model.cross_kv(tokens))
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[:, 1:].tolist()


@torch.no_grad()
def rank_without_sharing(model, clip_kv, prompt: list[int], answers: list[list[int]], batch: int) -> torch.Tensor:
    """One question's candidate scores (K,) as the rank protocol computed them before the prefix
    tree: the prompt once, then every candidate fed in full (all but its last token; candidates of
    similar length batched together), each row with its own copy of the prompt's cache, logits at
    every fed position."""
    text, device = model.text, clip_kv[0][0].device
    cache = text.empty_cache(1, len(prompt) + max(len(a) for a in answers) - 1, device)
    states, cache = text.generative_states(torch.tensor([prompt], device=device), clip_kv, cache)
    first = text.logits(states[:, -1]).float().log_softmax(-1)[0]
    order = sorted(range(len(answers)), key=lambda k: len(answers[k]))
    scores = torch.empty(len(answers))
    for s in range(0, len(order), batch):
        rows = order[s: s + batch]
        seqs = [answers[k] for k in rows]
        total = first[torch.tensor([a[0] for a in seqs], device=device)]
        if max(len(a) for a in seqs) > 1:
            feed, real = left_pad([a[:-1] or [0] for a in seqs], 0, device)  # left-padded: the same positions
            target, _ = left_pad([a[1:] or [0] for a in seqs], 0, device)
            real &= torch.tensor([[len(a) > 1] for a in seqs], device=device)
            copies = cache.select(torch.zeros(len(seqs), dtype=torch.long, device=device))
            kv_rows = [(k.expand(len(seqs), -1, -1, -1), v.expand(len(seqs), -1, -1, -1)) for k, v in clip_kv]
            step, _ = text.generative_states(feed, kv_rows, copies, real)
            lp = text.logits(step).float().log_softmax(-1).gather(-1, target[..., None])[..., 0]
            total = total + (lp * real).sum(1)
        scores[rows] = total.cpu()
    return scores


def candidate_answers(tok, count: int) -> tuple[list[str], str]:
    """MSVD-QA's answer list from the shared real data when present, else ``count`` one-token words."""
    if REALDATA_ANSWERS.is_file():
        return json.loads(REALDATA_ANSWERS.read_text())["vocab"][:count], "MSVD-QA answer list"
    words = []
    for i in range(1000, 49000):
        w = tok.decode([i]).strip()
        if w.isalpha() and len(w) > 2:
            words.append(w)
        if len(words) == count:
            break
    return words, "one-token words of the tokenizer"


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> float:
    """How far ``fn`` raises peak memory above what is in use when it starts, in MiB."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back, so the resident size is what is in use
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident size (VmHWM)

    def status(key: str) -> float:
        return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024

    before = status("VmRSS")
    fn()
    return status("VmHWM") - before


def bench_encoder(model, args, device) -> None:
    print(f"\n(a) encoder, one {model.config.vision.image_size}px clip")
    print(f"{'frames':>6} | {'tube tokens':>11} | {'tube ms':>8} | {'per-frame tokens':>16} | {'per-frame ms':>12} "
          f"| {'speed-up':>17}")
    for t in args.frames:
        clip = random_clips(model, 1, device, t)
        n_tube = model.visual.forward_tokens(clip).shape[1]
        n_frame = model.visual.forward_per_frame(clip).shape[1]
        tube, frame = median_ms([lambda: model.visual.forward_tokens(clip),
                                 lambda: model.visual.forward_per_frame(clip)], args.repeats, device)
        print(f"{t:>6} | {n_tube:>11} | {tube[0]:>8.1f} | {n_frame:>16} | {frame[0]:>12.1f} | {ratio(frame, tube)}")
        record("a", frames=t, image_size=model.config.vision.image_size, tube_tokens=n_tube, tube_ms=tube,
               per_frame_tokens=n_frame, per_frame_ms=frame)


def random_clips(model, batch: int, device, frames: int | None = None) -> torch.Tensor:
    """(batch, 3, T, S, S) noise at the model's frame count (or ``frames``) and image size."""
    size = model.config.vision.image_size
    return torch.randn(batch, 3, frames or model.config.num_frames, size, size, device=device)


def visual_tokens(model, batch: int, device) -> torch.Tensor:
    return model.visual.forward_tokens(random_clips(model, batch, device))


def bench_generation(model, args, device) -> None:
    print(f"\n(b) greedy generation, {model.config.num_frames}-frame clips, ms per generated token; "
          "speed-ups: median (fastest run)")
    print(f"{'batch':>5} | {'new tokens':>10} | {'cache':>7} | {'no cache':>8} | {'prefix re-run':>13} "
          f"| {'cache vs no cache':>17} | {'cache vs prefix re-run':>22}")
    for batch in args.gen_batch:
        tokens = visual_tokens(model, batch, device)
        sot = [[SOT] for _ in range(batch)]
        for n in args.new_tokens:
            def cached() -> list[list[int]]:
                out = generate(model.text, model.cross_kv(tokens), sot, eos_id=-1, max_new_tokens=n)
                assert all(len(row) == n for row in out)
                return out

            def prefix_rerun() -> list[list[int]]:
                return generate(model.text, model.cross_kv(tokens), sot, eos_id=-1, max_new_tokens=n,
                                use_cache=False)

            # a copy per batch; the first batch's step compiles with static sizes, the later ones with
            # dynamic sizes (torch.compile tracks which sizes changed per function, not per copy)
            compiled = copy.deepcopy(model.text)
            compiled.compile_steps()  # what --compile does (on a CPU: frozen weights, max-autotune)

            def compiled_cached() -> list[list[int]]:
                return generate(compiled, model.cross_kv(tokens), sot, eos_id=-1, max_new_tokens=n)

            start = time.perf_counter()
            assert cached() == generate_without_cache(model, tokens, SOT, n) == prefix_rerun() == compiled_cached()
            first_compiled_s = time.perf_counter() - start
            c, u, p, k = median_ms([cached, lambda: generate_without_cache(model, tokens, SOT, n), prefix_rerun,
                                    compiled_cached], args.gen_repeats, device)
            compiled = None  # its frozen weights go before the next shape's copy
            print(f"{batch:>5} | {n:>10} | {c[0] / n:>7.1f} | {u[0] / n:>8.1f} | {p[0] / n:>13.1f} "
                  f"| {ratio(u, c):>17} | {ratio(p, c):>22}")
            print(f"{'':>5} | compiled cache (--compile): {k[0] / n:.1f} ms per token, {ratio(u, k)} faster than no "
                  f"cache, {ratio(c, k)} faster than the eager cache (compiling and the checks took "
                  f"{first_compiled_s:.0f} s)")
            extra = {}
            if batch == 1:  # one row: a cached step is as fast as its weights can be read from memory
                mb = position_weights(model) * 4 / 1e6
                extra = {"step_weights_mb": mb, "step_read_gbps": mb / (c[1] / n), "read_gbps": read_gbps(device)}
                print(f"{'':>5} | a cached step reads about {mb:.0f} MB of weights: at least "
                      f"{extra['step_read_gbps']:.1f} GB/s in the fastest run (its time per token also holds the clip's K/V); reading a 512 MiB "
                      f"tensor on this device: {extra['read_gbps']:.1f} GB/s")
            record("b", batch=batch, new_tokens=n, frames=model.config.num_frames, cache_ms=c, no_cache_ms=u,
                   prefix_rerun_ms=p, compiled_cache_ms=k, **extra)


def bench_beam(model, args, device) -> None:
    n = args.beam_tokens
    print(f"\n(c) beam search, 3 beams, {n} steps (EOS disabled), ms per step")
    print(f"{'batch':>5} | {'cache':>7} | {'prefix re-run':>13} | {'cache vs prefix re-run':>22}")
    for batch in args.beam_batch:
        kv = model.cross_kv(visual_tokens(model, batch, device))
        sot = [[SOT] for _ in range(batch)]

        def beam(use_cache: bool) -> list[list[int]]:
            return generate(model.text, kv, sot, eos_id=-1, max_new_tokens=n, num_beams=3, use_cache=use_cache)

        assert beam(True) == beam(False)
        c, p = median_ms([lambda: beam(True), lambda: beam(False)], args.gen_repeats, device)
        print(f"{batch:>5} | {c[0] / n:>7.1f} | {p[0] / n:>13.1f} | {ratio(p, c):>22}")
        record("c", batch=batch, steps=n, beams=3, cache_ms=c, prefix_rerun_ms=p)


def bench_rank(model, args, device) -> None:
    tok = model.tokenizer
    candidates, source = candidate_answers(tok, args.candidates)
    answers = [tok.encode(c) + [tok.eot_id] for c in candidates]
    questions = [f"what is the person in the red shirt number {i} doing?" for i in range(args.rank_questions)]
    prompts = qa_prompt_ids(tok, questions, model.config.text.context_length)
    kv = model.cross_kv(visual_tokens(model, 1, device))
    trie_nodes = AnswerTrie(answers).num_nodes
    print(f"\n(d) rank protocol, {len(candidates)} candidates ({source}: {sum(len(a) - 1 for a in answers)} "
          f"answer tokens to feed, {trie_nodes} prefix-tree nodes), {len(questions)} questions about one clip, "
          f"{args.rank_batch} positions per pass; seconds per question")

    def tree() -> torch.Tensor:
        total, _ = score_answers(model.text, kv, prompts, AnswerTrie(answers), tok.pad_id, args.rank_batch)
        return total

    def flat() -> torch.Tensor:
        return torch.stack([rank_without_sharing(model, kv, p, answers, args.rank_batch) for p in prompts])

    torch.testing.assert_close(tree(), flat(), atol=1e-4, rtol=1e-5)
    t, f = median_ms([tree, flat], args.rank_repeats, device)
    q = len(questions) * 1000
    print(f"{'prefix tree':>12} | {'no sharing':>10} | speed-up\n{t[0] / q:>12.2f} | {f[0] / q:>10.2f} | {ratio(f, t)}")
    # what bounds the tree: every node is one position through the whole decoder and the vocabulary head
    work = trie_nodes * position_flops(model, kv[0][0].shape[2]) * len(questions)
    peak = matmul_gflops(device)
    print(f"prefix tree: about {work / 1e9:.0f} GFLOP of decoder work for {len(questions)} questions -> "
          f"{work / t[1] / 1e6:.0f} GFLOP/s in its fastest run; a large fp32 matmul on this device: {peak:.0f} GFLOP/s")
    record("d", candidates=len(candidates), source=source, questions=len(questions), prefix_tree_ms=t,
           no_sharing_ms=f, tree_nodes=trie_nodes, tree_gflop=work / 1e9, matmul_gflops=peak)


def position_weights(model) -> int:
    """Elements of the weight matrices one text position is multiplied with in a cached generative pass:
    every self-attention layer's projections and MLP, each cross block's query/output projections and MLP
    (its keys/values come from the clip, once), and the vocabulary head."""
    text, width = model.text, model.config.text.width
    weights = sum(p.numel() for b in text.resblocks for n, p in b.named_parameters()
                  if n.endswith("weight") and "ln_" not in n)
    for block in text.cross_attn:
        weights += 2 * width * width + sum(p.numel() for n, p in block.mlp.named_parameters() if n.endswith("weight"))
    return weights + text.lm_head.numel()


def position_flops(model, visual_tokens: int) -> int:
    """Multiply-add FLOPs of one text position through the cached generative pass: its weights
    (:func:`position_weights`) and each cross block's attention over the visual tokens (self-attention
    over the few text keys left out)."""
    cross = len(model.text.cross_attn) * 2 * visual_tokens * model.config.text.width
    return 2 * (position_weights(model) + cross)


def read_gbps(device: torch.device, mib: int = 512) -> float:
    """GB/s of reading a ``mib`` MiB fp32 tensor once (a sum), the best of 5: this device's memory rate."""
    big = torch.ones(mib * 2 ** 18, device=device)
    best = median_ms([lambda: big.sum()], 5, device)[0][1]
    return big.numel() * 4 / (best / 1000) / 1e9


def matmul_gflops(device: torch.device, n: int = 1024) -> float:
    """GFLOP/s of a (n, 768) x (768, 3072) fp32 matmul, the best of 5: what this device's matmul kernels reach."""
    a, b = torch.randn(n, 768, device=device), torch.randn(768, 3072, device=device)
    best = median_ms([lambda: a @ b], 5, device)[0][1]
    return 2 * n * 768 * 3072 / (best / 1000) / 1e9


@torch.no_grad()
def answer_before(model, video: torch.Tensor, questions: list[str], max_new_tokens: int = 10) -> list[list[int]]:
    """Greedy answers the way eval produced them before this project's memory work: the clip's
    cross-attention K/V copied once per question (``k[idx]``), vocabulary logits at EVERY prompt
    position, log-softmax over the vocabulary at every step (the cache is today's preallocated one)."""
    tok, text = model.tokenizer, model.text
    kv = model.cross_kv(model.visual.forward_tokens(video))
    idx = torch.zeros(len(questions), dtype=torch.long, device=video.device)
    copies = [(k[idx], v[idx]) for k, v in kv]
    ids, valid = left_pad(qa_prompt_ids(tok, questions), tok.pad_id, video.device)
    cache = text.empty_cache(len(questions), ids.shape[1] + max_new_tokens - 1, video.device)
    logits, cache = text.forward_generative(ids, copies, cache, valid)  # (Q, P, vocab)
    logp = logits[:, -1].float().log_softmax(-1)
    out = []
    for step in range(max_new_tokens):
        token = logp.argmax(-1)
        out.append(token)
        if step < max_new_tokens - 1:
            states, cache = text.generative_states(token[:, None], copies, cache)
            logp = text.logits(states[:, -1]).float().log_softmax(-1)
    return torch.stack(out, 1).tolist()


def bench_memory(model, args, device) -> None:
    video = random_clips(model, 1, device)
    tok = model.tokenizer
    questions = [f"what is the person number {i} doing in the video?" for i in range(64)]

    def shared(count: int = 64) -> None:
        answer_questions(model, video, [0] * count, questions[:count], batch_size=64)

    def copied(count: int = 64) -> None:
        kv = model.cross_kv(model.visual.forward_tokens(video))
        idx = torch.zeros(count, dtype=torch.long, device=device)
        generate(model.text, [(k[idx], v[idx]) for k, v in kv], qa_prompt_ids(tok, questions[:count]),
                 eos_id=tok.eot_id, pad_id=tok.pad_id, max_new_tokens=10)

    def before(count: int = 64) -> None:
        answer_before(model, video, questions[:count])

    for fn in (shared, copied, before):
        fn(2)  # warm-up: lazy initialisations are not part of the peak
    runs = (("before", before), ("copied", copied), ("shared", shared))
    peaks: dict[str, list[float]] = {name: [] for name, _ in runs}
    for _ in range(args.memory_repeats):  # interleaved: the allocator's state hits every variant alike
        for name, fn in runs:
            peaks[name].append(peak_memory_mib(fn, device))
    print(f"\n(e) peak memory, 64 questions about one {model.config.num_frames}-frame clip (greedy, 10 new "
          f"tokens), MiB above what was in use before ({args.memory_repeats} interleaved runs each; ratios of the "
          "medians)")
    print("before: K/V copied per question + vocabulary logits at every prompt position (the protocol this "
          "issue started from); K/V copied: today's decoder but K/V copied per question; shared: today's")
    print(f"{'before':>16} | {'K/V copied':>16} | {'shared':>16} | before / shared | copied / shared")
    med = {name: statistics.median(p) for name, p in peaks.items()}
    cells = [" / ".join(f"{p:.0f}" for p in peaks[name]) for name, _ in runs]
    print(f"{cells[0]:>16} | {cells[1]:>16} | {cells[2]:>16} | {med['before'] / max(med['shared'], 1e-9):>14.1f}x "
          f"| {med['copied'] / max(med['shared'], 1e-9):>14.1f}x")
    record("e", questions=64, before_mib=peaks["before"], copied_mib=peaks["copied"], shared_mib=peaks["shared"])


def bench_compile(model, args, device) -> None:
    print("\n(f) torch.compile as --compile does it (the encoder: default mode; the decoder's step on a CPU: weights "
          "frozen in, max-autotune): first call (compilation included) and steady-state times, ms")
    clip = random_clips(model, 1, device)
    compiled_encoder = torch.compile(model.visual.forward_tokens)
    start = time.perf_counter()
    compiled_encoder(clip)
    first_encoder = time.perf_counter() - start
    torch.testing.assert_close(compiled_encoder(clip), model.visual.forward_tokens(clip), atol=1e-3, rtol=1e-3)
    eager, comp = median_ms([lambda: model.visual.forward_tokens(clip), lambda: compiled_encoder(clip)],
                            args.repeats, device)
    print(f"{'what':<28} | {'first call s':>12} | {'eager':>8} | {'compiled':>8} | speed-up")
    print(f"{'encoder, 1 clip':<28} | {first_encoder:>12.1f} | {eager[0]:>8.1f} | {comp[0]:>8.1f} | {ratio(eager, comp)}")
    record("f", what="encoder", first_call_s=first_encoder, eager_ms=eager, compiled_ms=comp)

    n = args.compile_tokens
    decoder = copy.deepcopy(model.text)
    decoder.compile_steps()
    kv = model.cross_kv(visual_tokens(model, 1, device))

    def run(text) -> list[list[int]]:
        return generate(text, kv, [[SOT]], eos_id=-1, max_new_tokens=n)

    start = time.perf_counter()
    tokens = run(decoder)
    first_decoder = time.perf_counter() - start
    assert tokens == run(model.text), "compiled and eager generation gave different tokens"
    eager, comp = median_ms([lambda: run(model.text), lambda: run(decoder)], args.gen_repeats, device)
    print(f"{f'generation, batch 1, {n} tok':<28} | {first_decoder:>12.1f} | {eager[0] / n:>8.1f} "
          f"| {comp[0] / n:>8.1f} | {ratio(eager, comp)}   (per token)")
    record("f", what="generation", new_tokens=n, first_call_s=first_decoder, eager_ms=eager, compiled_ms=comp)


def bench_precision(model, args, device) -> None:
    batch = args.clip_batch
    print(f"\n(g) precision: {batch} clips of {model.config.num_frames} frames, encode + caption (30 new tokens), "
          "and answer_questions with 24 questions per clip (greedy, 10 new tokens)")
    print(f"{'precision':>9} | {'clips/s':>8} | {'questions/s':>11}")
    clips = random_clips(model, batch, device)
    questions = [f"what is the person number {i} doing in the video?" for i in range(24 * batch)]
    clip_index = [q // 24 for q in range(len(questions))]
    for precision in args.precisions:
        def caption() -> None:  # one autocast context per call, as eval and caption have one per batch
            with inference_autocast(device, precision):
                model.caption(clips, max_new_tokens=30)

        def answer() -> None:
            with inference_autocast(device, precision):
                answer_questions(model, clips, clip_index, questions, batch_size=64)

        (c, _), (q, _) = median_ms([caption, answer], args.gen_repeats, device)
        print(f"{precision:>9} | {batch / c * 1000:>8.2f} | {len(questions) / q * 1000:>11.1f}")
        record("g", precision=precision, clips=batch, frames=model.config.num_frames, clips_per_s=batch / c * 1000,
               questions=len(questions), questions_per_s=len(questions) / q * 1000)


SECTIONS = {"a": bench_encoder, "b": bench_generation, "c": bench_beam, "d": bench_rank, "e": bench_memory,
            "f": bench_compile, "g": bench_precision}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=sorted(SECTIONS))
    parser.add_argument("--preset", default="mammut-video-B-16", choices=list_presets(),
                        help="the model, random weights (default: mammut-video-B-16)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's); 1 is steadier on a "
                                                    "machine other processes load, where a parallel op waits for "
                                                    "its slowest thread")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per encoder measurement")
    parser.add_argument("--gen-repeats", type=int, default=3, help="timed runs per generation measurement")
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--gen-batch", type=int, nargs="+", default=[1, 4, 32], help="clips decoded together")
    parser.add_argument("--beam-batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--beam-tokens", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--rank-questions", type=int, default=2)
    parser.add_argument("--rank-batch", type=int, default=256, help="positions per decoder pass (eval's default)")
    parser.add_argument("--rank-repeats", type=int, default=1)
    parser.add_argument("--memory-repeats", type=int, default=3, help="peak-memory runs per variant in (e)")
    parser.add_argument("--compile-tokens", type=int, default=32)
    parser.add_argument("--clip-batch", type=int, default=8, help="clips per batch in (g)")
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16", "fp16"), default=["fp32", "bf16"])
    parser.add_argument("--json", type=Path, help="also write the numbers as JSON to this file (after each section)")
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.preset).to(device).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, model {args.preset}, float32, "
          f"median of interleaved runs")
    with torch.no_grad():  # not inference_mode: under it autocast casts every weight again at every step (g)
        for name in args.sections:
            SECTIONS[name](model, args, device)
            if args.json:
                args.json.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                                 "device": str(device), "preset": args.preset,
                                                 "records": RECORDS}, indent=1) + "\n")


if __name__ == "__main__":
    main()
