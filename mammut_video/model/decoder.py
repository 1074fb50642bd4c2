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

For generation the decoder keeps a key/value cache: self-attention K/V grow by one step at a
time, cross-attention K/V are computed once per clip (:meth:`TextDecoder.cross_kv`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mammut_video.errors import ConfigError
from mammut_video.model.config import TextConfig

KV = tuple[torch.Tensor, torch.Tensor]  # (B, heads, L, head_dim) each


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

    def project_q(self, x: torch.Tensor) -> torch.Tensor:
        w = self.in_proj_weight.shape[1]
        return self._split(F.linear(x, self.in_proj_weight[:w], self.in_proj_bias[:w]))

    def attend(self, q: torch.Tensor, kv: KV, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """q (B, H, Lq, hd), kv (B, H, Lk, hd) -> (B, Lq, W). ``mask``: bool, True = may attend."""
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).flatten(2))


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

    def forward_self(self, x: torch.Tensor, past: KV | None, mask: torch.Tensor | None,
                     causal: bool) -> tuple[torch.Tensor, KV]:
        """Self-attention block. x (B, L, W); past K/V (B, H, P, hd) or None -> (x, K/V incl. past)."""
        h = self.ln_1(x)
        q = self.attn.project_q(h)
        kv = self.attn.project_kv(h)
        if past is not None:
            kv = (torch.cat([past[0], kv[0]], dim=2), torch.cat([past[1], kv[1]], dim=2))
        x = x + self.attn.attend(q, kv, mask, causal)
        return self._mlp(x), kv

    def image_kv(self, image_embs: torch.Tensor) -> KV:
        """Cross-attention keys/values from mapped visual tokens (B, N, W)."""
        return self.attn.project_kv(self.ln_1_kv(image_embs))

    def forward_cross(self, x: torch.Tensor, kv: KV) -> torch.Tensor:
        x = x + self.attn.attend(self.attn.project_q(self.ln_1(x)), kv)
        return self._mlp(x)


@dataclass
class DecoderCache:
    """Self-attention K/V per layer, which cached keys are real tokens, and each row's next position."""

    kv: list[KV]
    key_valid: torch.Tensor  # (B, P) bool
    next_pos: torch.Tensor  # (B,) long

    def select(self, index: torch.Tensor) -> "DecoderCache":
        """Reorder / repeat rows (beam search)."""
        return DecoderCache([(k[index], v[index]) for k, v in self.kv], self.key_valid[index], self.next_pos[index])


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
        if int(positions.max()) >= self.context_length:
            raise ConfigError(f"text position {int(positions.max())} exceeds the context length {self.context_length}")
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
        cross_kv: list[KV],
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

    def generative_states(
        self,
        ids: torch.Tensor,
        cross_kv: list[KV],
        past: DecoderCache | None = None,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, DecoderCache]:
        """Generative pass: causal self-attention + cross-attention, up to ``ln_final``.

        ids (B, L) new tokens; cross_kv from :meth:`cross_kv` (batch B, or 1 to broadcast); ``past``
        the cache of earlier tokens; ``valid`` (B, L) bool marks real tokens (False for left padding,
        which then neither takes a position nor is attended to). Returns the final states (B, L, W)
        (after ``ln_final``; :meth:`logits` maps them to the vocabulary) and the cache including
        these tokens.
        """
        b, n = ids.shape
        if valid is None:
            valid = torch.ones(b, n, dtype=torch.bool, device=ids.device)
        start = past.next_pos if past is not None else torch.zeros(b, dtype=torch.long, device=ids.device)
        positions = (start[:, None] + valid.long().cumsum(1) - 1).clamp(min=0)
        key_valid = valid if past is None else torch.cat([past.key_valid, valid], dim=1)
        p = key_valid.shape[1] - n

        mask, causal = None, False
        if past is None and bool(valid.all()):
            causal = True  # plain causal attention, the fast path
            x = self._embed(ids)
        else:
            x = self._embed(ids, positions)
            if n > 1 or not bool(key_valid.all()):
                q_idx = torch.arange(p, p + n, device=ids.device)[:, None]
                k_idx = torch.arange(p + n, device=ids.device)[None, :]
                # a padded query still attends to itself, so no row is fully masked (no NaNs)
                mask = (k_idx <= q_idx) & (key_valid[:, None, :] | (k_idx == q_idx))
                mask = mask[:, None]  # (B, 1, n, p + n)

        new_kv: list[KV] = []
        for i, block in enumerate(self.resblocks):
            x, kv = self.run_block(block.forward_self, x, past.kv[i] if past is not None else None, mask, causal)
            new_kv.append(kv)
            if self.has_cross(i):
                j = i // self.cross_attn_ratio
                x = self.run_block(self.cross_attn[j].forward_cross, x, cross_kv[j])
        cache = DecoderCache(new_kv, key_valid, positions[:, -1] + 1)
        return self.ln_final(x), cache
