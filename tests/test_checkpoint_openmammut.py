"""openMaMMUT import: a small checkpoint in the LAION fork's key layout (and the upstream
open_clip one), built from open_clip's own blocks, must give the same image features, text
features and caption logits after conversion as the reference computation of
LAION-AI/open_clip_mammut (mammut_model.py / transformer.py), written out below."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mammut_video  # noqa: F401  (torchvision guard before open_clip)
from mammut_video.checkpoint import CheckpointError, from_openmammut, load_model, save_pretrained

VOCAB, CTX, WIDTH, LAYERS, RATIO = 500, 16, 128, 4, 2
V_WIDTH, V_LAYERS, PATCH, IMAGE = 128, 2, 16, 64


class _NoMLP(nn.Module):
    """Stands in for a missing MLP in open_clip's block (``x + mlp(ln_2(x))`` -> ``x``), no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


class RefText(nn.Module):
    """The fork's MultimodalTransformer (does_full_decoding=True), parameter names included.

    ``has_mlp=False`` (the fork's mammut_ViT-S-16 config): the self-attention layers followed by a
    cross-attention block have no MLP / ln_2 (``has_mlp=(not has_cross_attn) or has_mlp``).

    ``upstream=True``: open_clip's MultimodalDecoder instead (mlfoundations/open_clip transformer.py):
    vocab head ``lm_head``, a cross block after layer i when ``i % ratio == 0``, and in the
    contrastive pass optionally pads masked from attention (``pad_mask``, an additive
    (B * heads, L, L) mask as its ``_build_pad_mask``) and from the mean (``pooling="avg"``).
    """

    def __init__(self, has_mlp: bool = True, heads: int = WIDTH // 64, act: type = nn.GELU, layers: int = LAYERS,
                 ratio: int = RATIO, upstream: bool = False, pooling: str = "avg_all", pad_mask: bool = False) -> None:
        super().__init__()
        from open_clip.transformer import ResidualAttentionBlock

        self.heads, self.upstream, self.pooling, self.pad_mask = heads, upstream, pooling, pad_mask
        self.token_embedding = nn.Embedding(VOCAB, WIDTH)
        self.positional_embedding = nn.Parameter(torch.randn(CTX, WIDTH) * 0.02)
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(WIDTH, heads, act_layer=act) for _ in range(layers)])
        n_cross = len(range(0, layers, ratio)) if upstream else layers // ratio
        self.step = ratio if upstream else layers // n_cross
        if not has_mlp:
            for block in self.resblocks[::self.step]:
                block.ln_2, block.mlp = nn.Identity(), _NoMLP()
        self.cross_attn = nn.ModuleList(
            [ResidualAttentionBlock(WIDTH, heads, act_layer=act, is_cross_attention=True) for _ in range(n_cross)])
        self.ln_final = nn.LayerNorm(WIDTH)
        head = nn.Parameter(torch.randn(WIDTH, VOCAB) * WIDTH ** -0.5)
        if upstream:
            self.lm_head = head
        else:
            self.text_projection = head

    def head(self) -> torch.Tensor:
        return self.lm_head if self.upstream else self.text_projection

    def _valid(self, ids: torch.Tensor) -> torch.Tensor:
        valid = ids != 0
        valid[:, 0] |= ~valid.any(1)
        return valid

    def forward(self, ids: torch.Tensor, image_embs: torch.Tensor | None) -> torch.Tensor:
        x = self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
        mask = None
        if image_embs is not None:  # generative pass: causal, cross-attention after layer i % step == 0
            mask = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu_(1)
        elif self.pad_mask:
            keys = self._valid(ids)[:, None, :].expand(-1, ids.shape[1], -1)
            mask = torch.zeros(keys.shape).masked_fill(~keys, float("-inf")).repeat_interleave(self.heads, 0)
        for i, block in enumerate(self.resblocks):
            x = block(x, attn_mask=mask)
            if image_embs is not None and i % self.step == 0:
                x = self.cross_attn[i // self.step](x, k_x=image_embs, v_x=image_embs)
        return self.ln_final(x)

    def pooled(self, ids: torch.Tensor) -> torch.Tensor:
        x = self(ids, None)
        if self.pooling == "avg_all":
            return x.mean(1)
        w = self._valid(ids).unsqueeze(-1).float()
        return (x * w).sum(1) / w.sum(1)


class RefMammut(nn.Module):
    def __init__(self, has_mlp: bool = True, vision_heads: int = V_WIDTH // 64, act: type = nn.GELU,
                 **text_kwargs) -> None:
        super().__init__()
        from open_clip.transformer import VisionTransformer

        self.visual = VisionTransformer(IMAGE, PATCH, V_WIDTH, V_LAYERS, vision_heads, 4.0, output_dim=WIDTH,
                                        act_layer=act)
        self.text = RefText(has_mlp, act=act, **text_kwargs)
        self.map_viz2txt_kv = nn.Parameter(torch.randn(V_WIDTH, WIDTH) * V_WIDTH ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        with torch.no_grad():  # move LayerNorms off identity so a wrong mapping shows
            for m in self.modules():
                if isinstance(m, nn.LayerNorm):
                    m.weight.normal_(1.0, 0.2)
                    m.bias.normal_(0.0, 0.2)

    def encode_image(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pool_type='avg_all', final_ln_after_pool=True: (normalised features, all tokens incl. CLS)."""
        v = self.visual
        x = v.conv1(image).flatten(2).transpose(1, 2)
        x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + v.positional_embedding
        x = v.transformer(v.ln_pre(x))
        return F.normalize(v.ln_post(x.mean(1)) @ v.proj, dim=-1), x

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text.pooled(ids), dim=-1)

    def logits(self, ids: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(ids, tokens @ self.map_viz2txt_kv) @ self.text.head()


@pytest.fixture(scope="module")
def reference() -> RefMammut:
    torch.manual_seed(0)
    return RefMammut().eval()


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, IMAGE, IMAGE, generator=g)
    ids = torch.zeros(2, CTX, dtype=torch.long)
    ids[0, :6] = torch.tensor([VOCAB - 2, 5, 17, 99, 3, VOCAB - 1])
    ids[1, :4] = torch.tensor([VOCAB - 2, 42, 7, VOCAB - 1])
    return image, ids


def _diffs(model, ref: RefMammut) -> dict[str, float]:
    """Largest absolute difference of each output: visual tokens, image / text embeddings, caption logits."""
    image, ids = _inputs()
    with torch.no_grad():
        want_img, want_tokens = ref.encode_image(image)
        out = model.encode_video(image[:, :, None], normalize=True)
        logits, _ = model.text.forward_generative(ids, model.cross_kv(out.tokens))
        return {
            "tokens": float((out.tokens - want_tokens).abs().max()),
            "image": float((out.embedding - want_img).abs().max()),
            "text": float((model.encode_text(ids, normalize=True) - ref.encode_text(ids)).abs().max()),
            "logits": float((logits - ref.logits(ids, want_tokens)).abs().max()),
        }


def _compare(model, ref: RefMammut, check_scale: bool = True) -> None:
    diffs = _diffs(model, ref)
    assert max(diffs.values()) < 1e-4, diffs
    if check_scale:
        assert torch.equal(model.logit_scale, ref.logit_scale)


def test_fork_checkpoint_matches_reference(reference, tmp_path):
    # the file open_clip's trainer writes: {"epoch", "state_dict": {"module.*": ...}}
    sd = {f"module.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"epoch": 3, "name": "mammut", "state_dict": sd}, tmp_path / "epoch_3.pt")
    model = from_openmammut(tmp_path / "epoch_3.pt")
    cfg = model.config
    assert (cfg.vision.width, cfg.vision.patch_size, cfg.vision.image_size) == (V_WIDTH, PATCH, IMAGE)
    assert (cfg.text.width, cfg.text.layers, cfg.text.cross_attn_ratio, cfg.text.vocab_size) == (WIDTH, LAYERS, RATIO, VOCAB)
    assert cfg.tokenizer["type"] == "clip_bpe"
    _compare(model, reference)
    # and through the own format
    save_pretrained(model, tmp_path / "ckpt")
    _compare(load_model(tmp_path / "ckpt"), reference)


def test_lm_head_layout_with_ambiguous_cross_attn_ratio(reference, tmp_path):
    # open_clip's layout puts a cross block after layer i when i % ratio == 0: 2 blocks over 4
    # layers is ratio 2 (after 0, 2) or ratio 3 (after 0, 3). Guessing would be a silent wrong load.
    from safetensors.torch import save_file

    sd = {("text.lm_head" if k == "text.text_projection" else k): v.contiguous()
          for k, v in reference.state_dict().items()}
    path = tmp_path / "open_clip_model.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match="fit cross_attn_ratio 2 or 3.*--cross-attn-ratio"):
        from_openmammut(path)
    with pytest.raises(CheckpointError, match="cross_attn_ratio 3 does not divide 4 layers"):
        from_openmammut(path, cross_attn_ratio=3)
    _compare(from_openmammut(path, cross_attn_ratio=2), reference)


def test_fork_without_mlp_before_cross_blocks(tmp_path):
    # the fork's has_mlp=False (mammut_ViT-S-16): text.resblocks.{0,2}.mlp / ln_2 do not exist
    torch.manual_seed(2)
    ref = RefMammut(has_mlp=False).eval()
    sd = ref.state_dict()
    assert "text.resblocks.0.mlp.c_fc.weight" not in sd and "text.resblocks.0.ln_2.weight" not in sd
    assert "text.resblocks.1.mlp.c_fc.weight" in sd and "text.cross_attn.0.mlp.c_fc.weight" in sd
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "s16.pt")
    model = from_openmammut(tmp_path / "s16.pt")
    assert model.config.text.has_mlp is False and model.config.text.mlp_ratio == 4.0
    assert model.text.resblocks[0].mlp is None and model.text.resblocks[1].mlp is not None
    _compare(model, ref)
    save_pretrained(model, tmp_path / "ckpt")
    _compare(load_model(tmp_path / "ckpt"), ref)
    # a preset with MLPs everywhere is named as the mismatch
    with pytest.raises(CheckpointError, match="has_mlp"):
        from_openmammut(tmp_path / "s16.pt", preset="mammut-video-tiny")


def test_unknown_missing_and_mismatched_keys_are_listed_together(reference, tmp_path):
    sd = dict(reference.state_dict())
    sd["text.extra_gate"] = torch.zeros(3)
    del sd["text.cross_attn.1.ln_1_kv.weight"]
    sd["map_viz2txt_kv"] = torch.zeros(V_WIDTH, WIDTH + 1)
    torch.save(sd, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError) as info:
        from_openmammut(tmp_path / "broken.pt")
    msg = str(info.value)
    assert "broken.pt" in msg and "nothing was loaded" in msg
    assert "text.extra_gate" in msg
    assert "text.cross_attn.1.ln_1_kv.weight" in msg
    assert "map_viz2txt_kv" in msg


def test_preset_that_does_not_match_is_an_error(reference, tmp_path):
    torch.save(reference.state_dict(), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="vision width"):
        from_openmammut(tmp_path / "m.pt", preset="mammut-video-tiny")


def test_clip_checkpoint_is_not_mistaken_for_openmammut(tmp_path):
    torch.save({"visual.conv1.weight": torch.zeros(8, 3, 4, 4)}, tmp_path / "clip.pt")
    with pytest.raises(CheckpointError, match="map_viz2txt_kv"):
        from_openmammut(tmp_path / "clip.pt")


# ----------------------------------------------------------------------------- open_clip (upstream) layout


def _upstream(pooling: str = "avg_all", pad_mask: bool = False, seed: int = 3) -> RefMammut:
    # 6 layers, ratio 2: cross blocks after 0, 2, 4 -- the only ratio giving 3 blocks, so no ambiguity
    torch.manual_seed(seed)
    return RefMammut(layers=6, ratio=2, upstream=True, pooling=pooling, pad_mask=pad_mask).eval()


def _upstream_file(ref: RefMammut, path, **extra: torch.Tensor):
    sd = dict(ref.state_dict())
    sd["logit_scale"] = sd["logit_scale"].reshape(1)  # open_clip's nonscalar_logit_scale
    sd.update(extra)
    torch.save({"epoch": 2, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    return path


def test_upstream_layout_matches_its_decoder_with_either_contrastive_pass(tmp_path):
    released = _upstream()  # pool_type='avg_all', use_pad_mask=False: the openMaMMUT release
    masked = _upstream(pooling="avg", pad_mask=True)  # open_clip's MultimodalCfg defaults, same weights
    masked.load_state_dict(released.state_dict())
    path = _upstream_file(released, tmp_path / "mammut.pt", logit_bias=torch.tensor([-4.5]))
    assert "text.lm_head" in released.state_dict() and "text.text_projection" not in released.state_dict()

    model = from_openmammut(path)
    cfg = model.config.text
    assert (cfg.layers, cfg.cross_attn_ratio, cfg.pooling, cfg.pad_mask) == (6, 2, "avg_all", False)
    _compare(model, released, check_scale=False)
    assert model.logit_scale.shape == () and model.logit_scale.item() == released.logit_scale.item()
    assert model.config.logit_bias == -4.5 and model.logit_bias.item() == -4.5
    assert any("open_clip MultimodalDecoder" in n and "--text-pad-mask" in n for n in model.provenance["notes"])

    upstream = from_openmammut(path, text_pooling="avg", text_pad_mask=True)
    assert (upstream.config.text.pooling, upstream.config.text.pad_mask) == ("avg", True)
    _compare(upstream, masked, check_scale=False)
    # the two contrastive passes really differ on padded text, so each match above means something
    assert _diffs(model, masked)["text"] > 1e-3 and _diffs(upstream, released)["text"] > 1e-3
    # pad masking in attention alone (mean over all positions) also matches its reference
    half = _upstream(pooling="avg_all", pad_mask=True)
    half.load_state_dict(released.state_dict())
    _compare(from_openmammut(path, text_pad_mask=True), half, check_scale=False)

    save_pretrained(upstream, tmp_path / "ckpt")
    again = load_model(tmp_path / "ckpt")
    assert again.config.text.pad_mask and again.logit_bias.item() == -4.5
    _compare(again, masked, check_scale=False)


def test_upstream_linear_contrastive_projection_is_rejected(tmp_path):
    ref = _upstream()
    path = _upstream_file(ref, tmp_path / "linear.pt", **{"text.text_projection": torch.randn(WIDTH, 32)})
    with pytest.raises(CheckpointError, match=r"proj_type='linear'.*Not supported") as info:
        from_openmammut(path)
    assert "linear.pt" in str(info.value) and "(128, 32)" in str(info.value)


def test_fork_checkpoint_with_logit_bias_loads_it(reference, tmp_path):
    sd = dict(reference.state_dict())
    sd["logit_bias"] = torch.tensor(-10.0)
    torch.save(sd, tmp_path / "bias.pt")
    model = from_openmammut(tmp_path / "bias.pt")
    assert model.config.logit_bias == -10.0 and torch.equal(model.logit_bias, torch.tensor(-10.0))
    _compare(model, reference)
    with pytest.raises(CheckpointError, match=r"logit_bias has shape \(2,\), expected a scalar"):
        sd["logit_bias"] = torch.zeros(2)
        torch.save(sd, tmp_path / "bad_bias.pt")
        from_openmammut(tmp_path / "bad_bias.pt")


# ----------------------------------------------------------------------------- what the weights do not say


def test_heads_are_not_in_the_weights_and_can_be_given(tmp_path):
    # head width 32 in both towers (128 wide -> 4 heads); open_clip's default for width 128 is 2 heads
    torch.manual_seed(4)
    ref = RefMammut(vision_heads=4, heads=4).eval()
    torch.save(ref.state_dict(), tmp_path / "hw32.pt")
    default = from_openmammut(tmp_path / "hw32.pt")
    assert default.config.text.heads == 2
    diffs = _diffs(default, ref)
    assert diffs["tokens"] > 1e-3 and diffs["text"] > 1e-3
    only_vision = from_openmammut(tmp_path / "hw32.pt", vision_heads=4)
    assert _diffs(only_vision, ref)["tokens"] < 1e-4 and _diffs(only_vision, ref)["text"] > 1e-3
    model = from_openmammut(tmp_path / "hw32.pt", vision_heads=4, text_heads=4)
    assert model.config.text.heads == 4 and model.config.vision.timm_kwargs["num_heads"] == 4
    _compare(model, ref)
    with pytest.raises(CheckpointError, match="text width 128 is not divisible by 3 attention heads"):
        from_openmammut(tmp_path / "hw32.pt", text_heads=3)


def test_default_heads_follow_open_clip_configs():
    from mammut_video.checkpoint.arch import Arch, TextArch, VisionArch
    from mammut_video.checkpoint.convert import _inferred_config

    def vision(width: int) -> VisionArch:
        return VisionArch(width=width, depth=32, patch_size=14, image_size=224, mlp_ratio=4.0, pre_norm=True,
                          patch_bias=False)

    # ViT-H (mammut_ViT-H-14/16/32: width 1280, head_width 80), ViT-g 1408/88, ViT-bigG 1664/104, L 1024/64
    assert {w: vision(w).heads for w in (1280, 1408, 1664, 1024, 768)} == {
        1280: 16, 1408: 16, 1664: 16, 1024: 16, 768: 12}
    assert vision(1280).timm_spec()[1]["num_heads"] == 16
    text = TextArch(vocab_size=49408, context_length=77, width=1024, layers=24, cross_attn_ratio=2, mlp_ratio=4.0)
    assert text.heads == 16  # mammut_ViT-H-14 text_cfg: width 1024, heads 16
    config = _inferred_config(Arch(vision=vision(1280), text=text, embed_dim=1024), "openmammut")
    assert config.vision.timm_kwargs["num_heads"] == 16 and config.text.heads == 16
    assert TextArch(49408, 77, 1280, 32, 2, 4.0).heads == 20  # ViT-bigG text tower: 1280 wide, 20 heads


def test_quick_gelu_applies_to_both_towers(tmp_path):
    from open_clip.transformer import QuickGELU

    torch.manual_seed(5)
    ref = RefMammut(act=QuickGELU).eval()
    torch.save(ref.state_dict(), tmp_path / "qg.pt")
    model = from_openmammut(tmp_path / "qg.pt", quick_gelu=True)
    assert model.config.text.act == "quick_gelu" and model.config.vision.timm_kwargs["act_layer"] == "quick_gelu"
    _compare(model, ref)
    diffs = _diffs(from_openmammut(tmp_path / "qg.pt"), ref)  # GELU: every output moves
    assert min(diffs.values()) > 1e-4, diffs


def test_convert_command_takes_the_openmammut_options(tmp_path, capsys):
    from open_clip.transformer import QuickGELU

    from mammut_video.commands import main

    torch.manual_seed(6)
    ref = RefMammut(act=QuickGELU, layers=6, ratio=2, upstream=True, pooling="avg", pad_mask=True).eval()
    path = _upstream_file(ref, tmp_path / "up.pt")
    out = tmp_path / "ckpt"
    args = ["convert", "--from", "openmammut", str(path), "--out", str(out)]
    assert main(args + ["--quick-gelu", "--text-pooling", "avg", "--text-pad-mask", "--text-heads", "2",
                        "--vision-heads", "2"]) == 0
    assert "pad-masked attention on" in capsys.readouterr().out
    _compare(load_model(out), ref, check_scale=False)
    assert main(["info", str(out)]) == 0
    assert "contrastive pooling avg, pad-masked attention" in capsys.readouterr().out
    assert main(args + ["--cross-attn-ratio", "4"]) == 2
    assert "cross_attn_ratio 4" in capsys.readouterr().err
    for option in (["--text-pad-mask"], ["--text-heads", "2"], ["--text-pooling", "avg"], ["--quick-gelu"]):
        assert main(["convert", "--from", "timm", str(path), "--out", str(out)] + option) == 2
        assert "applies to --from" in capsys.readouterr().err


# ----------------------------------------------------------------------------- broken files


@pytest.mark.parametrize("key", [
    "visual.proj", "visual.positional_embedding", "visual.class_embedding",
    "visual.transformer.resblocks.0.mlp.c_fc.weight", "visual.transformer.resblocks.1.attn.in_proj_weight",
    "visual.ln_post.bias", "text.ln_final.weight", "text.positional_embedding", "text.resblocks.3.ln_2.bias",
    "text.text_projection",
])
def test_missing_keys_are_named_as_in_the_file(reference, tmp_path, capsys, key):
    from mammut_video.commands import main

    sd = dict(reference.state_dict())
    del sd[key]
    torch.save(sd, tmp_path / "holey.pt")
    with pytest.raises(CheckpointError) as info:
        from_openmammut(tmp_path / "holey.pt")
    msg = str(info.value)
    assert "holey.pt" in msg and f"    {key}\n" in msg + "\n", msg
    assert main(["convert", "--from", "openmammut", str(tmp_path / "holey.pt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
