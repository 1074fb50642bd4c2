"""Greedy and beam-search decoding for the generative pass, with or without a key/value cache.

Prompts of different lengths are left-padded; padded slots take no position and are never
attended to, so a batch decodes exactly as each prompt would alone. Cross-attention K/V come in
precomputed (once per clip) and are shared, not copied, by every prompt about the clip and by
every beam (``clip_index``, :class:`~mammut_video.model.decoder.ClipKV`). With ``use_cache`` the
prompt is written into a cache allocated for the whole generation and each step feeds one token
(vocabulary logits at the last position only); without it every step re-runs the whole sequence
with logits everywhere (open_clip's ``generate`` behaviour; kept for tests and the benchmark).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mammut_video.errors import ConfigError
from mammut_video.model.decoder import KV, ClipKV, DecoderCache, TextDecoder


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> ids (B, L) left-padded and valid mask (B, L)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ConfigError("every prompt needs at least one token (e.g. the start-of-text id)")
    n = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), n), pad_id, dtype=torch.long)
    valid = torch.zeros(len(prompts), n, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, n - len(p):] = torch.tensor(p, dtype=torch.long)
        valid[i, n - len(p):] = True
    return ids.to(device), valid.to(device)


class _Stepper:
    """Feeds the decoder one new token per row, with or without a cache; returns last-position logits."""

    def __init__(self, decoder: TextDecoder, cross: ClipKV, use_cache: bool) -> None:
        self.decoder, self.cross, self.use_cache = decoder, cross, use_cache
        self.cache: DecoderCache | None = None
        self.ids: torch.Tensor | None = None
        self.valid: torch.Tensor | None = None

    def start(self, ids: torch.Tensor, valid: torch.Tensor, steps: int) -> torch.Tensor:
        """Prompts (B, P) with room for ``steps`` more tokens -> logits (B, vocab) of the first new token
        (float32; greedy takes their argmax as they are, beam search their log-softmax)."""
        self.ids, self.valid = ids, valid
        if not self.use_cache:
            logits, _ = self.decoder.forward_generative(ids, self.cross, None, valid)
            return logits[:, -1].float()
        cache = self.decoder.empty_cache(ids.shape[0], ids.shape[1] + steps - 1, ids.device)
        states, self.cache = self.decoder.generative_states(ids, self.cross, cache, valid)
        return self.decoder.logits(states[:, -1]).float()

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """token (B,) appended to every row -> logits (B, vocab) for the next token."""
        if self.use_cache:
            states, self.cache = self.decoder.generative_states(token[:, None], self.cross, self.cache)
            return self.decoder.logits(states[:, -1]).float()
        assert self.ids is not None and self.valid is not None
        self.ids = torch.cat([self.ids, token[:, None]], dim=1)
        self.valid = torch.cat([self.valid, torch.ones_like(token[:, None], dtype=torch.bool)], dim=1)
        logits, _ = self.decoder.forward_generative(self.ids, self.cross, None, self.valid)
        return logits[:, -1].float()

    def select(self, index: torch.Tensor, rows: tuple[int, ...] | None = None) -> None:
        """Keep / repeat rows (beam reordering); every row must stay with rows of its own clip, whose
        cross-attention K/V therefore need no reordering. ``rows``: the new rows per clip, when the
        count changes (the beams' start)."""
        assert self.ids is not None and self.valid is not None
        self.ids, self.valid = self.ids[index], self.valid[index]
        if self.cache is not None:
            self.cache = self.cache.select(index)
        if rows is not None:
            self.cross = ClipKV(self.cross.kv, rows)


def _max_new(decoder: TextDecoder, prompt_len: int, max_new_tokens: int) -> int:
    room = decoder.context_length - prompt_len
    if room < 1:
        raise ConfigError(f"prompt of {prompt_len} tokens leaves no room in the context length {decoder.context_length}")
    return min(max_new_tokens, room)


@torch.no_grad()
def generate(
    decoder: TextDecoder,
    cross_kv: list[KV],
    prompts: list[list[int]],
    eos_id: int,
    pad_id: int = 0,
    max_new_tokens: int = 20,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    use_cache: bool = True,
    clip_index: Sequence[int] | None = None,
) -> list[list[int]]:
    """Continue every prompt; returns the new token ids per row (EOS and anything after dropped).

    cross_kv: per cross block (C, H, N, hd) K/V of C clips; prompt q is about clip ``clip_index[q]``
    (default: clip q, so C == len(prompts); or the one clip when C is 1). Every prompt and beam of a
    clip reads its K/V in place (no copy per row). Greedy when ``num_beams`` is 1; otherwise beam
    search that ranks finished hypotheses by ``sum log p / len ** length_penalty``.
    """
    num_clips = cross_kv[0][0].shape[0]
    if clip_index is None and num_clips == 1:
        clip_index = [0] * len(prompts)
    by_clip = group_by_clip(num_clips, len(prompts), clip_index, "prompts")
    order = [q for qs in by_clip.values() for q in qs]
    rows = tuple(len(by_clip.get(c, ())) for c in range(num_clips))
    ids, valid = left_pad([prompts[q] for q in order], pad_id, cross_kv[0][0].device)
    steps = _max_new(decoder, ids.shape[1], max_new_tokens)
    stepper = _Stepper(decoder, ClipKV(list(cross_kv), rows), use_cache)
    if num_beams <= 1:
        out = _greedy(stepper, ids, valid, eos_id, pad_id, steps)
    else:
        out = _beam(stepper, ids, valid, eos_id, steps, num_beams, length_penalty)
    result: list[list[int]] = [[] for _ in prompts]
    for row, q in enumerate(order):
        result[q] = out[row]
    return result


def group_by_clip(num_clips: int, num_items: int, clip_index: Sequence[int] | None,
                  what: str = "questions") -> dict[int, list[int]]:
    """Item indices per clip, clips in order: item q is about clip ``clip_index[q]`` (default: clip q)."""
    if clip_index is None:
        if num_items != num_clips:
            raise ConfigError(f"{num_clips} clips but {num_items} {what}")
        clip_index = range(num_clips)
    elif len(clip_index) != num_items:
        raise ConfigError(f"{len(clip_index)} clip indices for {num_items} {what}")
    by_clip: dict[int, list[int]] = {}
    for q, c in enumerate(clip_index):
        if not 0 <= int(c) < num_clips:
            raise ConfigError(f"clip_index[{q}] = {c} outside the {num_clips} clips")
        by_clip.setdefault(int(c), []).append(q)
    return dict(sorted(by_clip.items()))


def _greedy(stepper: _Stepper, ids: torch.Tensor, valid: torch.Tensor, eos_id: int, pad_id: int,
            steps: int) -> list[list[int]]:
    b = ids.shape[0]
    logits = stepper.start(ids, valid, steps)
    done = torch.zeros(b, dtype=torch.bool, device=ids.device)
    out: list[torch.Tensor] = []
    for step in range(steps):
        token = logits.argmax(-1)  # the log-softmax's argmax (up to float ties), without a second (B, vocab) tensor
        token = torch.where(done, torch.full_like(token, pad_id), token)
        out.append(token)
        done |= token == eos_id
        if bool(done.all()) or step == steps - 1:
            break
        logits = stepper.step(token)
    rows = torch.stack(out, dim=1).tolist() if out else [[] for _ in range(b)]
    return [row[: row.index(eos_id)] if eos_id in row else row for row in rows]


def _beam(stepper: _Stepper, ids: torch.Tensor, valid: torch.Tensor, eos_id: int, steps: int,
          num_beams: int, length_penalty: float) -> list[list[int]]:
    b, k = ids.shape[0], num_beams
    logp = stepper.start(ids, valid, steps).log_softmax(-1)  # (B, V): every beam starts from the same prompt
    vocab = logp.shape[-1]
    expand = torch.arange(b, device=ids.device).repeat_interleave(k)
    stepper.select(expand, tuple(r * k for r in stepper.cross.rows))
    scores = torch.full((b, k), float("-inf"), device=ids.device)
    scores[:, 0] = 0.0  # only one live beam at the start, so the first top-k picks distinct tokens
    logp = logp[expand]
    seqs: list[list[int]] = [[] for _ in range(b * k)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]

    def norm(score: float, length: int) -> float:
        return score / max(length, 1) ** length_penalty

    for step in range(steps):
        cand = (scores[:, :, None] + logp.view(b, k, vocab)).view(b, k * vocab)
        top_scores, top_idx = cand.topk(2 * k, dim=-1)
        next_rows, next_tokens, next_scores = [], [], []
        new_seqs: list[list[int]] = []
        for i in range(b):
            chosen = 0
            for s, idx in zip(top_scores[i].tolist(), top_idx[i].tolist()):
                beam, token = divmod(idx, vocab)
                row = i * k + beam
                if s == float("-inf"):
                    break
                if token == eos_id:
                    if len(finished[i]) < k or norm(s, len(seqs[row]) + 1) > min(f[0] for f in finished[i]):
                        finished[i].append((norm(s, len(seqs[row]) + 1), seqs[row]))
                        finished[i] = sorted(finished[i], key=lambda f: -f[0])[:k]
                    continue
                next_rows.append(row)
                next_tokens.append(token)
                next_scores.append(s)
                new_seqs.append(seqs[row] + [token])
                chosen += 1
                if chosen == k:
                    break
            while chosen < k:  # fewer than k live candidates: pad with dead beams
                next_rows.append(i * k)
                next_tokens.append(eos_id)
                next_scores.append(float("-inf"))
                new_seqs.append(seqs[i * k])
                chosen += 1
        seqs = new_seqs
        scores = torch.tensor(next_scores, device=ids.device).view(b, k)
        # like Hugging Face's early_stopping=True: a clip is done once it holds k finished hypotheses
        all_done = all(len(f) >= k for f in finished)
        if all_done or step == steps - 1:
            break
        index = torch.tensor(next_rows, device=ids.device)
        stepper.select(index)
        logp = stepper.step(torch.tensor(next_tokens, device=ids.device)).log_softmax(-1)

    results = []
    for i in range(b):
        hyps = list(finished[i])
        if len(hyps) < k:  # out of steps before k hypotheses finished: unfinished beams compete too
            for j in range(k):
                s = scores[i, j].item()
                if s > float("-inf"):
                    hyps.append((norm(s, len(seqs[i * k + j])), seqs[i * k + j]))
        results.append(max(hyps, key=lambda f: f[0])[1] if hyps else [])
    return results
