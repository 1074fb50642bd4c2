"""The MaMMUT two-pass text decoder in the openMaMMUT layout (open_clip ``MultimodalTransformer``).

One transformer, two passes (docs/architecture.md, "Decoder"):

- contrastive: bidirectional self-attention (no mask at all, pads included), cross-attention
  blocks skipped, ``ln_final`` then the mean over all positions (``avg_all``) -> (B, W);
  upstream open_clip's variant (``TextConfig.pooling="avg"``, ``pad_mask=True``) keeps pads out of
  the mean and out of the attention keys;
- generative: causal self-attention, cross-attention block ``j`` right after self-attention layer
  ``i`` when ``i % cross_attn_ratio == 0``, ``ln_final`` then ``@ lm_head`` -> logits.

Blocks are pre-norm residual: ``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))`` (with
``has_mlp=False`` the self-attention layers that precede a cross block have no MLP). In a cross-attention
block the queries are ``ln_1(x)`` and keys/values are ``ln_1_kv(image_embs)`` where ``image_embs``
are the visual tokens already multiplied by ``map_viz2txt_kv``. Attention is
``nn.MultiheadAttention``-compatible (packed ``in_proj_weight`` (3W, W), scale ``head_dim**-0.5``).

For generation the decoder keeps a key/value cache (:class:`DecoderCache`): the self-attention
K/V of every layer live in buffers allocated once, and each step writes its token into the next
free slot, so every step has the same shapes and needs no host synchronisation. Cross-attention
K/V are computed once per clip (:meth:`TextDecoder.cross_kv`) and shared by every row that reads
the clip, questions and beams alike (:class:`ClipKV`): never copied per row.
"""

from __future__ import annotations

import itertools
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mammut_video.errors import ConfigError
from mammut_video.model.config import TextConfig

KV = tuple[torch.Tensor, torch.Tensor]  # (B, heads, L, head_dim) each
PREFILL_CHUNK_TOKENS = 256  # a prompt pass over more rows x tokens than this runs in row chunks
# compilations of the generation step before torch runs it eager: the kinds of step shape (batch, clips
# read and rows per clip each 1 or more, clip K/V views at offset 0 or further on) came to 7 over 80
# random eval-like batches, one below torch's default limit of 8
STEP_RECOMPILE_LIMIT = 32
Extend = Callable[[KV], KV]  # a layer's new self-attention K/V -> the K/V its queries attend to


@dataclass
class ClipKV:
    """Cross-attention K/V of C clips, each read by a run of consecutive decoder rows.

    ``kv``: per cross block, keys and values (C, H, N, hd). ``rows[c]``: how many consecutive rows
    read clip ``c`` (``sum(rows)`` = B; 0 allowed). The questions about one clip and the beams of
    one prompt share their clip's K/V this way, with no per-row copy (:meth:`Attention.attend_clips`).
    """

    kv: list[KV]
    rows: tuple[int, ...]
    # set by for_compiled_step() only, on a ClipKV of its own (never copied by dataclasses.replace)
    _grid: RowGrid | None = field(default=None, init=False, compare=False, repr=False)
    _step: ClipKV | None = field(default=None, init=False, compare=False, repr=False)
    _step_made: bool = field(default=False, init=False, compare=False, repr=False)

    @classmethod
    def of(cls, cross_kv: CrossKV, batch: int) -> ClipKV:
        """A list of per-row K/V (batch B, or 1 shared by all B rows) as a ClipKV; a ClipKV as it is."""
        if isinstance(cross_kv, ClipKV):
            return cross_kv
        clips = cross_kv[0][0].shape[0]
        return cls(list(cross_kv), (batch,) if clips == 1 else (1,) * clips)

    def take_rows(self, start: int, stop: int) -> ClipKV:
        """The clips that rows ``start:stop`` read, with just those rows (views of the K/V, no copy)."""
        bounds = list(itertools.accumulate(self.rows, initial=0))
        counts = [max(0, min(hi, stop) - max(lo, start)) for lo, hi in itertools.pairwise(bounds)]
        read = [c for c, n in enumerate(counts) if n]
        c0, c1 = read[0], read[-1] + 1  # clips read by no row between them stay, with 0 rows
        return ClipKV([(k[c0:c1], v[c0:c1]) for k, v in self.kv], tuple(counts[c0:c1]))

    def for_compiled_step(self, device: torch.device) -> ClipKV | None:
        """These rows as a compiled step reads them: only the clips that rows read (views), with the
        rows laid out as a :class:`RowGrid`; made at the first call, then kept. None when the grid
        would hold more than twice as many queries as there are rows (one clip with many rows beside
        clips with few): such steps run eager rather than attend for the padding."""
        if not self._step_made:
            part = self.take_rows(0, sum(self.rows))
            if len(part.rows) * max(part.rows) <= 2 * sum(part.rows):
                part._grid = RowGrid.of(part.rows, device)
                self._step = part
            self._step_made = True
        return self._step

    @property
    def layout(self) -> tuple[int, ...] | RowGrid:
        """How rows read clips: the grid of a :meth:`for_compiled_step` view, else ``rows``."""
        return self.rows if self._grid is None else self._grid


@dataclass
class RowGrid:
    """The rows of C clips in a (C, R) grid, R the most rows any clip has, as tensors.

    ``places`` (C, R): the row in each place (B, a row of zeros, where a clip has fewer than R
    rows); ``where`` (B,): each row's index in ``places.flatten()``. A compiled step reads these
    instead of the per-clip row counts, which it would have to specialise on (and compile again
    for every new mix of questions per clip). Made on the host once per generation and copied to
    the device; a plain list of K/V given to each step (not a :class:`ClipKV` kept across steps)
    would make it again every step.
    """

    places: torch.Tensor
    where: torch.Tensor

    @classmethod
    def of(cls, rows: tuple[int, ...], device: torch.device) -> RowGrid:
        width = max(max(rows), 1)
        places = torch.full((len(rows), width), sum(rows), dtype=torch.long)
        where = torch.empty(sum(rows), dtype=torch.long)
        start = 0
        for c, r in enumerate(rows):
            places[c, :r] = torch.arange(start, start + r)
            where[start: start + r] = torch.arange(c * width, c * width + r)
            start += r
        return cls(places.to(device), where.to(device))


CrossKV = list[KV] | ClipKV  # per-row K/V (batch B, or 1 for all rows), or clips shared by runs of rows


def real_tokens(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """ids (B, L) -> bool (B, L), True = not padding; an all-pad row keeps position 0 (as open_clip)."""
    valid = ids != pad_id
    valid[:, 0] |= ~valid.any(dim=1)
    return valid


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention`` parameter names, batch-first, cacheable."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, L, W) -> (B, H, L, hd)

    def project_kv(self, x: torch.Tensor) -> KV:
        """(B, L, W) -> keys and values (B, H, L, hd)."""
        w = self.in_proj_weight.shape[1]
        k, v = F.linear(x, self.in_proj_weight[w:], self.in_proj_bias[w:]).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, KV]:
        """Self-attention: (B, L, W) -> queries and keys/values (B, H, L, hd), from one product with the
        whole ``in_proj_weight``: under autocast a whole parameter is cast once and cached, a slice of it
        at every call (a decoding step would cast 3 W x W per layer again)."""
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return self._split(q), (self._split(k), self._split(v))

    def project_q(self, x: torch.Tensor) -> torch.Tensor:
        w = self.in_proj_weight.shape[1]
        return self._split(F.linear(x, self.in_proj_weight[:w], self.in_proj_bias[:w]))

    def attend(self, q: torch.Tensor, kv: KV, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """q (B, H, Lq, hd), kv (B, H, Lk, hd) -> (B, Lq, W). ``mask``: bool, True = may attend."""
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).flatten(2))

    def attend_clips(self, q: torch.Tensor, kv: KV, rows: tuple[int, ...] | RowGrid) -> torch.Tensor:
        """Unmasked attention of B query rows to C clips: q (B, H, L, hd), kv (C, H, N, hd), ``rows[c]``
        consecutive rows read clip c (or the same as a :class:`RowGrid`) -> (B, L, W).

        A clip's r rows are folded into one row of r * L queries. That is exact (without a mask no
        query depends on another) and reads each clip's K/V in place: no (B, H, N, hd) copy. With a
        grid every clip gets R rows' worth of queries (rows of zeros fill the gaps, their outputs
        dropped): one attention call whatever the row counts.
        """
        if isinstance(rows, RowGrid):
            return self.out_proj(_grid_attend(q, kv, rows))
        if len(set(rows)) == 1:
            return self.out_proj(_fold_attend(q, kv, rows[0]))
        parts = [_fold_attend(q_c, (kv[0][c: c + 1], kv[1][c: c + 1]), r)
                 for c, (q_c, r) in enumerate(zip(q.split(list(rows)), rows)) if r > 0]
        return self.out_proj(torch.cat(parts))


def _grid_attend(q: torch.Tensor, kv: KV, grid: RowGrid) -> torch.Tensor:
    """q (B, H, L, hd), kv (C, H, N, hd), rows in a (C, R) grid -> attention output (B, L, H * hd)."""
    c, r = grid.places.shape
    _, h, length, d = q.shape
    placed = torch.cat([q, q.new_zeros(1, h, length, d)])[grid.places.flatten()]  # (C * R, H, L, hd)
    folded = placed.view(c, r, h, length, d).transpose(1, 2).reshape(c, h, r * length, d)
    out = F.scaled_dot_product_attention(folded, kv[0], kv[1])  # (C, H, R * L, hd)
    return out.view(c, h, r, length, d).permute(0, 2, 3, 1, 4).reshape(c * r, length, h * d)[grid.where]


def _fold_attend(q: torch.Tensor, kv: KV, r: int) -> torch.Tensor:
    """q (C * r, H, L, hd) of C clips' rows, kv (C, H, N, hd) -> attention output (C * r, L, H * hd)."""
    folded = rearrange(q, "(c r) h l d -> c h (r l) d", r=r)
    out = F.scaled_dot_product_attention(folded, kv[0], kv[1])
    return rearrange(out, "c h (r l) d -> (c r) l (h d)", r=r)


class Block(nn.Module):
    """Pre-norm residual block; self-attention, or cross-attention when ``cross=True``."""

    def __init__(self, cfg: TextConfig, cross: bool = False, mlp: bool = True) -> None:
        super().__init__()
        width = cfg.width
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, cfg.heads)
        if cross:
            self.ln_1_kv = nn.LayerNorm(width)
        self.ln_2: nn.LayerNorm | None = None
        self.mlp: nn.Sequential | None = None
        if mlp:
            self.ln_2 = nn.LayerNorm(width)
            hidden = int(width * cfg.mlp_ratio)
            act = QuickGELU() if cfg.act == "quick_gelu" else nn.GELU()
            self.mlp = nn.Sequential(OrderedDict([
                ("c_fc", nn.Linear(width, hidden)), ("gelu", act), ("c_proj", nn.Linear(hidden, width))]))

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.mlp is None else x + self.mlp(self.ln_2(x))

    def forward_self(self, x: torch.Tensor, past: Extend | None, mask: torch.Tensor | None,
                     causal: bool) -> tuple[torch.Tensor, KV]:
        """Self-attention block. x (B, L, W); ``past`` maps the new K/V (B, H, L, hd) to all the K/V
        to attend (a cache writes them into its buffers), None: only these -> (x, attended K/V)."""
        q, kv = self.attn.project_qkv(self.ln_1(x))
        if past is not None:
            kv = past(kv)
        x = x + self.attn.attend(q, kv, mask, causal)
        return self._mlp(x), kv

    def image_kv(self, image_embs: torch.Tensor) -> KV:
        """Cross-attention keys/values from mapped visual tokens (B, N, W)."""
        return self.attn.project_kv(self.ln_1_kv(image_embs))

    def forward_cross(self, x: torch.Tensor, kv: KV, rows: tuple[int, ...] | RowGrid) -> torch.Tensor:
        """Cross-attention block. x (B, L, W); kv (C, H, N, hd) of C clips, ``rows[c]`` rows read clip c
        (or the same as a :class:`RowGrid`)."""
        x = x + self.attn.attend_clips(self.attn.project_q(self.ln_1(x)), kv, rows)
        return self._mlp(x)


@dataclass
class DecoderCache:
    """Self-attention K/V of every layer in preallocated buffers, which tokens are real, each row's next position.

    ``kv``: per layer, keys and values (B, H, capacity, hd); ``key_valid`` (B, capacity): the slot
    holds a real token (False for padding and for slots not written yet); ``next_pos`` (B,): each
    row's next text position; ``length``: slots written so far, the same for every row (kept on the
    host, so that no step has to ask the device). New tokens are written in place into the next
    free slots (:meth:`write`): the buffers never grow, every step has the same shapes.
    """

    kv: list[KV]
    key_valid: torch.Tensor
    next_pos: torch.Tensor
    length: int = 0

    @property
    def capacity(self) -> int:
        return self.key_valid.shape[1]

    def claim(self, n: int, device: torch.device) -> torch.Tensor:
        """Reserve the next ``n`` slots -> their indices (n,) (made on the device: no host-to-device copy)."""
        if self.length + n > self.capacity:
            raise ConfigError(f"the decoder cache holds {self.length} of {self.capacity} tokens: no room for "
                              f"{n} more (make it with room: TextDecoder.empty_cache)")
        slots = torch.arange(self.length, self.length + n, device=device)
        self.length += n
        return slots

    def write(self, layer: int, slots: torch.Tensor, kv: KV) -> KV:
        """New K/V (B, H, n, hd) of ``layer`` into ``slots`` (n,), in place -> the layer's whole buffers."""
        k, v = self.kv[layer]
        k.index_copy_(2, slots, kv[0].to(k.dtype))
        v.index_copy_(2, slots, kv[1].to(v.dtype))
        return k, v

    def take_rows(self, start: int, stop: int) -> DecoderCache:
        """Rows ``start:stop`` as a cache of views: writing into it writes into this one."""
        return DecoderCache([(k[start:stop], v[start:stop]) for k, v in self.kv], self.key_valid[start:stop],
                            self.next_pos[start:stop], self.length)

    def select(self, index: torch.Tensor) -> DecoderCache:
        """Reorder / repeat rows (beam search): a copy, the buffers keep their capacity."""
        return DecoderCache([(k[index], v[index]) for k, v in self.kv], self.key_valid[index],
                            self.next_pos[index], self.length)


class TextDecoder(nn.Module):
    """Token ids -> pooled contrastive feature (B, W) or next-token logits (B, L, vocab)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.context_length = cfg.context_length
        self.cross_attn_ratio = cfg.cross_attn_ratio
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.resblocks = nn.ModuleList(
            [Block(cfg, mlp=cfg.has_mlp or i % cfg.cross_attn_ratio != 0) for i in range(cfg.layers)])
        self.cross_attn = nn.ModuleList([Block(cfg, cross=True) for _ in range(cfg.layers // cfg.cross_attn_ratio)])
        self.ln_final = nn.LayerNorm(cfg.width)
        self.lm_head = nn.Parameter(torch.empty(cfg.width, cfg.vocab_size))
        self.grad_checkpointing = False  # recompute each block in the backward pass instead of storing it
        self.init_parameters()
        self._compile: dict[str, Any] | None = None  # torch.compile's arguments, once compile_steps() is called
        self._compiled_extend: Callable | None = None  # made at the first step after compile_steps()
        self._frozen: list[tuple[int, int]] | None = None  # the weights frozen into it (data_ptr, version)

    def init_parameters(self) -> None:
        # open_clip's text-tower init. openMaMMUT zero-initialises the vocab head; a random head is
        # used here so that a randomly initialised model still generates varied tokens (tests).
        width, layers = self.cfg.width, self.cfg.layers
        attn_std, proj_std, fc_std = width ** -0.5, width ** -0.5 * (2 * layers) ** -0.5, (2 * width) ** -0.5
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for block in [*self.resblocks, *self.cross_attn]:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            if block.mlp is not None:
                nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
                nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.lm_head, std=width ** -0.5)

    def run_block(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` (a block's forward), under activation checkpointing when it is on and autograd records."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def has_cross(self, layer: int) -> bool:
        return layer % self.cross_attn_ratio == 0

    def _embed(self, ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, L) -> (B, L, W); positions (B, L) default 0..L-1."""
        if ids.shape[1] > self.context_length and positions is None:
            raise ConfigError(f"text of length {ids.shape[1]} exceeds the context length {self.context_length}")
        if positions is None:
            return self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
        # positions are below the context length by construction (a cache holds at most that many
        # slots), so they are not checked here: reading them back would stop the device every step
        return self.token_embedding(ids) + self.positional_embedding[positions]

    def contrastive_tokens(self, ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
        """Contrastive pass up to ``ln_final``: ids (B, L) -> (B, L, W). Bidirectional, no cross-attention;
        with ``cfg.pad_mask`` no position attends to a pad key."""
        x = self._embed(ids)
        mask = real_tokens(ids, pad_id)[:, None, None, :] if self.cfg.pad_mask else None  # (B, 1, 1, L)
        for block in self.resblocks:
            x, _ = self.run_block(block.forward_self, x, None, mask, False)
        return self.ln_final(x)

    def forward_contrastive(self, ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
        """Contrastive pass: ids (B, L) -> pooled text feature (B, W) (``avg_all`` or pad-masked ``avg``)."""
        x = self.contrastive_tokens(ids, pad_id)
        if self.cfg.pooling == "avg_all":
            return x.mean(dim=1)
        valid = real_tokens(ids, pad_id).unsqueeze(-1).to(x.dtype)
        return (x * valid).sum(dim=1) / valid.sum(dim=1)

    def cross_kv(self, image_embs: torch.Tensor) -> list[KV]:
        """Mapped visual tokens (B, N, W) -> cross-attention K/V for every cross block (once per clip)."""
        return [block.image_kv(image_embs) for block in self.cross_attn]

    def forward_generative(
        self,
        ids: torch.Tensor,
        cross_kv: CrossKV,
        past: DecoderCache | None = None,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, DecoderCache]:
        """Generative pass with vocabulary logits at EVERY position: (logits (B, L, vocab), cache).

        Arguments as :meth:`generative_states`. Where only some positions are needed (the last one
        when generating, the labelled ones when training) take the states and apply :meth:`logits`
        to those positions only: the (B, L, vocab) tensor is the costly part at a 49k vocabulary.
        """
        states, cache = self.generative_states(ids, cross_kv, past, valid)
        return self.logits(states), cache

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """Final states (..., W) from :meth:`generative_states` -> vocabulary logits (..., vocab)."""
        return states @ self.lm_head

    def empty_cache(self, batch: int, capacity: int, device: torch.device) -> DecoderCache:
        """A cache with room for ``capacity`` tokens per row (at most the context length), in the dtype
        the K/V will come in (the autocast dtype under autocast)."""
        if not 1 <= capacity <= self.context_length:
            raise ConfigError(f"cache capacity {capacity} must be 1 to the context length {self.context_length}")
        dtype = self.lm_head.dtype
        if torch.is_autocast_enabled(device.type):
            dtype = torch.get_autocast_dtype(device.type)
        heads = self.cfg.heads
        shape = (batch, heads, capacity, self.cfg.width // heads)
        kv = [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
              for _ in self.resblocks]
        return DecoderCache(kv, torch.zeros(batch, capacity, dtype=torch.bool, device=device),
                            torch.zeros(batch, dtype=torch.long, device=device))

    def generative_states(
        self,
        ids: torch.Tensor,
        cross_kv: CrossKV,
        past: DecoderCache | None = None,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, DecoderCache]:
        """Generative pass: causal self-attention + cross-attention, up to ``ln_final``.

        ids (B, L) new tokens; cross_kv from :meth:`cross_kv` (batch B, or 1 to broadcast), or a
        :class:`ClipKV` (C clips shared by runs of rows); ``past`` the cache of earlier tokens, which
        these tokens are written into IN PLACE (it needs room: :meth:`empty_cache`; branch with
        :meth:`DecoderCache.select`, which copies); ``valid`` (B, L) bool marks real tokens (False for
        left padding, which then neither takes a position nor is attended to). Returns the final
        states (B, L, W) (after ``ln_final``; :meth:`logits` maps them to the vocabulary) and the
        cache including these tokens (``past`` itself, or a new one holding just these).
        """
        b, n = ids.shape
        cross = ClipKV.of(cross_kv, b)
        if sum(cross.rows) != b:
            raise ConfigError(f"cross-attention K/V for {sum(cross.rows)} rows, but {b} rows of text")
        if past is None:
            return self._fresh(ids, cross, valid)
        slots = past.claim(n, ids.device)
        if n == 1 and valid is None and self._compile is not None:  # a generation step, compiled
            step_cross = cross.for_compiled_step(ids.device)
            if step_cross is not None:
                return self._compiled_step(ids.device)(ids, step_cross, past, None, slots), past
        # eager: a prompt (its shapes change with every batch), or a step whose rows per clip are too
        # uneven for the compiled step's grid; in row chunks written into the same cache when it is
        # long, so that its activations (the MLP's 4x-wide hidden states above all) take a bounded
        # amount of memory beside the cache
        step = max(1, PREFILL_CHUNK_TOKENS // n)
        if b <= step:
            return self._extend(ids, cross, past, valid, slots), past
        return torch.cat([self._extend(ids[r: r + step], cross.take_rows(r, r + step), past.take_rows(r, r + step),
                                       None if valid is None else valid[r: r + step], slots)
                          for r in range(0, b, step)]), past

    def _fresh(self, ids: torch.Tensor, cross: ClipKV,
               valid: torch.Tensor | None) -> tuple[torch.Tensor, DecoderCache]:
        """The generative pass with no cache before: (states (B, L, W), a cache of exactly these L tokens)."""
        b, n = ids.shape
        if valid is None or bool(valid.all()):
            valid = torch.ones(b, n, dtype=torch.bool, device=ids.device)
            x, mask, causal = self._embed(ids), None, True  # plain causal attention, the fast path
        else:
            positions = (valid.long().cumsum(1) - 1).clamp(min=0)
            slots = torch.arange(n, device=ids.device)
            x, mask, causal = self._embed(ids, positions), _causal_mask(valid, slots)[:, None], False
        states, kv = self._blocks(x, cross, None, mask, causal)
        next_pos = valid.long().sum(1).clamp(min=1)
        return states, DecoderCache(kv, valid, next_pos, length=n)

    def _extend(self, ids: torch.Tensor, cross: ClipKV, cache: DecoderCache, valid: torch.Tensor | None,
                slots: torch.Tensor) -> torch.Tensor:
        """The generative pass for tokens written into ``slots`` (n,) of ``cache`` -> states (B, n, W).

        Fixed shapes and no host synchronisation, whatever was cached: this is the part that
        :meth:`compile_steps` compiles.
        """
        b, n = ids.shape
        if valid is None:
            valid = torch.ones(b, n, dtype=torch.bool, device=ids.device)
        positions = (cache.next_pos[:, None] + valid.long().cumsum(1) - 1).clamp(min=0)
        cache.key_valid.index_copy_(1, slots, valid)
        cache.next_pos.copy_(positions[:, -1] + 1)
        mask = _causal_mask(cache.key_valid, slots)[:, None]  # (B, 1, n, capacity)
        states, _ = self._blocks(self._embed(ids, positions), cross,
                                 lambda i: lambda kv: cache.write(i, slots, kv), mask, False)
        return states

    def tree_states(self, ids: torch.Tensor, depth: torch.Tensor, tree: torch.Tensor, cross_kv: CrossKV,
                    prefix: DecoderCache) -> torch.Tensor:
        """States of M prefix-tree nodes that continue every row's cached ``prefix`` (read, not written).

        ids (B, M) the nodes' tokens; depth (M,) 1 for a node right after the prefix; tree (M, M)
        bool: ``tree[i, j]`` when node j is node i or one of its ancestors (the nodes i attends to
        besides the prefix). Each node sits at the position after its ancestors, as if its branch
        had been fed alone (clamped to the context length: a branch beyond it is not scored).
        -> (B, M, W) after ``ln_final``.
        """
        b, m = ids.shape
        positions = (prefix.next_pos[:, None] + depth[None] - 1).clamp(max=self.context_length - 1)
        mask = torch.cat([prefix.key_valid[:, None, :].expand(b, m, -1), tree[None].expand(b, m, m)], dim=2)

        def after_prefix(i: int) -> Extend:
            k, v = prefix.kv[i]
            return lambda kv: (torch.cat([k, kv[0]], dim=2), torch.cat([v, kv[1]], dim=2))

        states, _ = self._blocks(self._embed(ids, positions), ClipKV.of(cross_kv, b), after_prefix,
                                 mask[:, None], False)
        return states

    def _blocks(self, x: torch.Tensor, cross: ClipKV, past: Callable[[int], Extend] | None,
                mask: torch.Tensor | None, causal: bool) -> tuple[torch.Tensor, list[KV]]:
        """The generative blocks: x (B, L, W) -> (states after ``ln_final``, each layer's attended K/V).
        ``past(i)`` extends layer i's new K/V (cache or prefix), None for none."""
        new_kv: list[KV] = []
        for i, block in enumerate(self.resblocks):
            x, kv = self.run_block(block.forward_self, x, past(i) if past is not None else None, mask, causal)
            new_kv.append(kv)
            if self.has_cross(i):
                j = i // self.cross_attn_ratio
                x = self.run_block(self.cross_attn[j].forward_cross, x, cross.kv[j], cross.layout)
        return self.ln_final(x), new_kv

    def compile_steps(self, **compile_kwargs: Any) -> None:
        """Compile the generation step (one new token per row into the cache) with ``torch.compile``
        from the next step on; the first steps at a new shape pay the compilation. Off until called.
        Prompts stay eager: their shapes change with every batch.

        ``compile_kwargs`` go to ``torch.compile``. Without any, a step on the CPU compiles with
        inductor's ``freezing`` and ``mode="max-autotune"``: the weights become constants of the
        compiled step, packed for its own matrix-vector kernels (B-16 greedy generation at batch 1:
        25.8 instead of 39.1 ms per token in the benchmark table), which keeps a second copy of them
        (B-16's resident size rose 1.35 GB, 0.1 GB without freezing). Frozen weights must not
        change: a step after they did raises :class:`ConfigError` (call this again to compile with
        the new ones). Elsewhere the default mode is used.

        The clips' row counts reach the compiled step as a :class:`RowGrid`
        (:meth:`ClipKV.for_compiled_step`), so a new mix of questions per clip is not a new
        program; new batch sizes and cache lengths make those sizes dynamic after the first change
        (torch.compile's automatic dynamic shapes, kept per function: a second decoder compiled in
        the same process starts from the sizes the first one made dynamic). Sizes of 1 and clip
        views at an offset are compiled apart, so the step runs under a recompile limit of
        ``STEP_RECOMPILE_LIMIT`` instead of torch's 8, past which it would run eager.
        """
        self._compile = dict(compile_kwargs)
        self._compiled_extend = None
        self._frozen = None

    def _compiled_step(self, device: torch.device) -> Callable:
        """The compiled :meth:`_extend` (made at the first step), refusing weights changed since it froze them.

        The freezing patch is process-wide while a step runs: compiled steps are not meant to run
        in several threads at once."""
        import torch._dynamo.config as dynamo_config
        import torch._inductor.config as inductor_config

        if self._compiled_extend is None:
            assert self._compile is not None
            freeze = not self._compile and device.type == "cpu"
            compiled = torch.compile(self._extend, **(self._compile or ({"mode": "max-autotune"} if freeze else {})))
            # freezing is read while dynamo traces as well as by inductor: torch.compile's options come too
            # late; autotuning would write ~40 lines of kernel timings to stderr at each compilation
            patches = dict(freezing=True, autotune_num_choices_displayed=0,
                           max_autotune_report_choices_stats=False) if freeze else {}
            if freeze:  # inductor's own use of a deprecated storage API, once per compilation
                warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)

            def compiled_step(*args: Any) -> torch.Tensor:
                with dynamo_config.patch(recompile_limit=STEP_RECOMPILE_LIMIT), inductor_config.patch(**patches):
                    return compiled(*args)
            self._compiled_extend = compiled_step
            self._frozen = self._weights_stamp() if freeze or inductor_config.freezing else None
        elif self._frozen is not None and self._frozen != self._weights_stamp():
            raise ConfigError("the decoder's weights changed after its compiled step froze them: call "
                              "compile_steps() again to compile with the new weights")
        return self._compiled_extend

    def _weights_stamp(self) -> list[tuple[int, int]]:
        """(data_ptr, version) of every parameter a step reads (not the vocabulary head, applied after
        it, nor the clips' K/V norms). An in-place change (optimizer step, ``load_state_dict``) bumps
        the version and ``.to()`` moves the data; a change through ``.data`` is not seen."""
        return [(p.data_ptr(), p._version) for name, p in self.named_parameters()
                if name != "lm_head" and ".ln_1_kv." not in name]


def _causal_mask(key_valid: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Queries in ``slots`` (n,) over keys (B, K) -> bool (B, n, K), True = may attend: real tokens at or
    before the query's slot. A padded query still attends to itself, so no row is fully masked (no NaNs)."""
    k_idx = torch.arange(key_valid.shape[1], device=key_valid.device)
    q_idx = slots[:, None]
    return (k_idx <= q_idx) & (key_valid[:, None, :] | (k_idx == q_idx))
