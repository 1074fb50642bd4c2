"""Two-pass decoder: masks, layout, nn.MultiheadAttention compatibility, video independence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mammut_video  # noqa: F401
from mammut_video.model import TextConfig, create_model
from mammut_video.model.decoder import TextDecoder

CFG = TextConfig(vocab_size=97, context_length=24, width=64, heads=4, layers=4, cross_attn_ratio=2)


@pytest.fixture(scope="module")
def decoder() -> TextDecoder:
    torch.manual_seed(0)
    return TextDecoder(CFG).eval()


def _image_kv(decoder: TextDecoder, b: int, n: int = 9, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return decoder.cross_kv(torch.randn(b, n, CFG.width, generator=g))


def test_layout_matches_openmammut(decoder):
    assert len(decoder.resblocks) == 4 and len(decoder.cross_attn) == 2
    assert [decoder.has_cross(i) for i in range(4)] == [True, False, True, False]
    names = set(decoder.state_dict())
    for name in ["token_embedding.weight", "positional_embedding", "lm_head", "ln_final.weight",
                 "resblocks.3.attn.in_proj_weight", "resblocks.3.attn.out_proj.bias", "resblocks.0.mlp.c_fc.weight",
                 "cross_attn.1.ln_1_kv.weight", "cross_attn.1.mlp.c_proj.weight", "cross_attn.0.attn.in_proj_bias"]:
        assert name in names
    assert decoder.lm_head.shape == (64, 97)
    assert decoder.resblocks[0].attn.in_proj_weight.shape == (192, 64)


def test_generative_pass_is_causal(decoder):
    ids = torch.randint(0, 97, (2, 12))
    kv = _image_kv(decoder, 2)
    with torch.no_grad():
        base, _ = decoder.forward_generative(ids, kv)
        for t in (0, 5, 10):
            changed = ids.clone()
            changed[:, t + 1] = (changed[:, t + 1] + 1) % 97
            out, _ = decoder.forward_generative(changed, kv)
            torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], atol=1e-5, rtol=0)
            assert not torch.allclose(out[:, t + 1], base[:, t + 1], atol=1e-4)


def test_generative_pass_uses_the_video(decoder):
    ids = torch.randint(0, 97, (1, 6))
    with torch.no_grad():
        a, _ = decoder.forward_generative(ids, _image_kv(decoder, 1, seed=1))
        b, _ = decoder.forward_generative(ids, _image_kv(decoder, 1, seed=2))
    assert not torch.allclose(a, b, atol=1e-4)


def test_contrastive_pass_is_bidirectional(decoder):
    ids = torch.randint(1, 97, (2, 10))
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 97
    with torch.no_grad():
        a = decoder.contrastive_tokens(ids)
        b = decoder.contrastive_tokens(changed)
    assert not torch.allclose(a[:, 0], b[:, 0], atol=1e-5)


def test_contrastive_pooling_avg_all_includes_pads(decoder):
    ids = torch.tensor([[5, 6, 7, 0, 0, 0]])
    with torch.no_grad():
        tokens = decoder.contrastive_tokens(ids)
        pooled = decoder.forward_contrastive(ids)
    torch.testing.assert_close(pooled, tokens.mean(1))


def test_attention_matches_torch_multihead_attention(decoder):
    block = decoder.resblocks[1]
    mha = nn.MultiheadAttention(64, 4, batch_first=True).eval()
    mha.load_state_dict(block.attn.state_dict())
    x = torch.randn(2, 7, 64)
    causal = torch.ones(7, 7, dtype=torch.bool).triu(1)  # True = masked, for nn.MultiheadAttention
    with torch.no_grad():
        expected = mha(x, x, x, attn_mask=causal, need_weights=False)[0]
        q, kv = block.attn.project_q(x), block.attn.project_kv(x)
        got = block.attn.attend(q, kv, causal=True)
        # cross-attention: queries from text, keys/values from other tokens
        y = torch.randn(2, 11, 64)
        expected_x = mha(x, y, y, need_weights=False)[0]
        got_x = block.attn.attend(block.attn.project_q(x), block.attn.project_kv(y))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_x, expected_x, atol=1e-5, rtol=1e-5)


def test_left_padding_does_not_change_logits(decoder):
    ids = torch.randint(1, 97, (1, 5))
    kv = _image_kv(decoder, 1)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    valid = torch.tensor([[False] * 3 + [True] * 5])
    with torch.no_grad():
        alone, _ = decoder.forward_generative(ids, kv)
        pad, _ = decoder.forward_generative(padded, kv, valid=valid)
    torch.testing.assert_close(pad[:, 3:], alone, atol=1e-5, rtol=0)


def test_contrastive_text_features_do_not_depend_on_video():
    torch.manual_seed(0)
    model = create_model("mammut-video-tiny").eval()
    ids = torch.randint(1, 1000, (2, 32))
    with torch.no_grad():
        a = model(torch.randn(2, 3, 8, 112, 112), ids)
        b = model(torch.randn(2, 3, 8, 112, 112), ids)
    torch.testing.assert_close(a["text_features"], b["text_features"])
    torch.testing.assert_close(a["text_features"], model.encode_text(ids))
    assert not torch.allclose(a["logits"], b["logits"], atol=1e-4)
    assert not torch.allclose(a["image_features"], b["image_features"], atol=1e-4)
    # no label given: every token after the first is a target, scored from the position before it
    assert a["logits"].shape == (2 * 31, 49408) and torch.equal(a["targets"], ids[:, 1:].reshape(-1))
    # returned as its name says: the inverse temperature, exp of the log-space parameter (open_clip)
    assert a["logit_scale"].ndim == 0 and a["logit_scale"].item() == pytest.approx(1 / 0.07)


# ------------------------------------------------------------------ the preallocated cache, shared clips, tree
def _cached_logits(decoder, ids, valid, kv, capacity):
    """Prompt (all but the last 3 tokens) into an empty cache, then the rest one token per step."""
    from mammut_video.model.decoder import DecoderCache

    cache = decoder.empty_cache(ids.shape[0], capacity, ids.device)
    buffers = [k.data_ptr() for k, _ in cache.kv]
    states, out = decoder.generative_states(ids[:, :-3], kv, cache, valid[:, :-3])
    assert isinstance(out, DecoderCache) and out is cache
    steps = [states]
    for t in range(ids.shape[1] - 3, ids.shape[1]):
        states, cache = decoder.generative_states(ids[:, t: t + 1], kv, cache)
        steps.append(states)
    assert [k.data_ptr() for k, _ in cache.kv] == buffers  # written in place, never grown or copied
    assert all(k.shape[2] == capacity for k, _ in cache.kv)
    return decoder.logits(torch.cat(steps, dim=1))


def test_cached_steps_equal_the_full_pass_with_left_padding(decoder):
    ids = torch.randint(1, 97, (2, 9))
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[1, :3] = False  # row 1: a shorter prompt, left-padded
    ids[1, :3] = 0
    kv = _image_kv(decoder, 2)
    with torch.no_grad():
        cached = _cached_logits(decoder, ids, valid, kv, capacity=12)
        full, _ = decoder.forward_generative(ids, kv, valid=valid)
        alone, _ = decoder.forward_generative(ids[1:, 3:], [(k[1:], v[1:]) for k, v in kv])
    torch.testing.assert_close(cached[0], full[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached[1, 3:], alone[0], atol=1e-5, rtol=1e-5)


def test_full_cache_refuses_more_tokens(decoder):
    kv = _image_kv(decoder, 1)
    with torch.no_grad():
        _, cache = decoder.generative_states(torch.tensor([[5, 6]]), kv)  # no room: exactly these two
        with pytest.raises(ValueError, match="no room for 1 more"):
            decoder.generative_states(torch.tensor([[7]]), kv, cache)
        with pytest.raises(ValueError, match="capacity 25"):
            decoder.empty_cache(1, 25, torch.device("cpu"))  # context length 24


def test_shared_clip_kv_equals_a_copy_per_row(decoder):
    from mammut_video.model.decoder import ClipKV

    ids = torch.randint(1, 97, (6, 5))
    kv = _image_kv(decoder, 3)
    for rows in [(2, 2, 2), (1, 0, 5), (3, 1, 2)]:
        clip_of_row = torch.tensor([c for c, r in enumerate(rows) for _ in range(r)])
        with torch.no_grad():
            shared, _ = decoder.forward_generative(ids, ClipKV(kv, rows))
            copied, _ = decoder.forward_generative(ids, [(k[clip_of_row], v[clip_of_row]) for k, v in kv])
        torch.testing.assert_close(shared, copied, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="for 5 rows, but 6 rows"):
        decoder.forward_generative(ids, ClipKV(kv, (1, 2, 2)))


def test_tree_nodes_equal_each_branch_fed_alone(decoder):
    """Nodes a, a-b, a-b-c, d after a prompt: each attends to the prompt and its own ancestors only."""
    prompt = torch.tensor([[3, 4, 5, 6]])
    tokens = torch.tensor([[10, 11, 12, 13]])  # a, b (after a), c (after a b), d
    depth = torch.tensor([1, 2, 3, 1])
    tree = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    kv = _image_kv(decoder, 1)
    with torch.no_grad():
        _, cache = decoder.generative_states(prompt, kv)
        nodes = decoder.tree_states(tokens, depth, tree, kv, cache)
        abc, _ = decoder.generative_states(torch.cat([prompt, tokens[:, :3]], dim=1), kv)
        d, _ = decoder.generative_states(torch.cat([prompt, tokens[:, 3:]], dim=1), kv)
    torch.testing.assert_close(nodes[:, :3], abc[:, 4:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nodes[:, 3], d[:, 4], atol=1e-5, rtol=1e-5)


def test_a_cached_step_compiles_without_graph_breaks(decoder):
    """No host sync (reading a tensor's value: .item(), int(), bool()) and no data-dependent Python
    branch in a cached step: either would break the graph (and stop a GPU every step)."""
    import torch._dynamo

    from mammut_video.model.decoder import ClipKV

    kv = ClipKV(_image_kv(decoder, 2), (1, 1)).for_compiled_step(torch.device("cpu"))  # as compiled steps get it
    with torch.no_grad():
        cache = decoder.empty_cache(2, 8, torch.device("cpu"))
        decoder.generative_states(torch.tensor([[5, 6, 7], [0, 8, 9]]), kv, cache,
                                  torch.tensor([[True, True, True], [False, True, True]]))
        slots = cache.claim(1, torch.device("cpu"))
        explained = torch._dynamo.explain(decoder._extend)(torch.tensor([[3], [4]]), kv, cache, None, slots)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_cached_steps_under_autocast_cast_no_self_attention_weight_again(decoder):
    """Under bf16 autocast a whole parameter is cast once and cached, a slice of one at every call:
    self-attention projects q, k, v with the whole ``in_proj_weight``, so decoding steps re-cast
    only the cross blocks' query slices, not 3 W x W per layer."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class CastShapes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.shapes: Counter = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten._to_copy.default, torch.ops.aten.to.dtype) and args[0].dim() == 2:
                self.shapes[tuple(args[0].shape)] += 1
            return func(*args, **(kwargs or {}))

    kv = _image_kv(decoder, 1)
    w = CFG.width
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        cache = decoder.empty_cache(1, 8, torch.device("cpu"))
        decoder.generative_states(torch.tensor([[5, 6, 7]]), kv, cache)  # the first pass casts (and caches)
        with CastShapes() as casts:
            for token in (8, 9, 10):
                decoder.generative_states(torch.tensor([[token]]), kv, cache)
    weight_casts = {shape: n for shape, n in casts.shapes.items() if shape[-1] == w and shape[0] >= w}
    assert weight_casts == {(w, w): 3 * len(decoder.cross_attn)}, weight_casts
