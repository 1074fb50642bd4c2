"""openMaMMUT import: a small checkpoint in the LAION fork's key layout (and the upstream
open_clip one), built from open_clip's own blocks, must give the same image features, text
features and caption logits after conversion as the reference computation of
LAION-AI/open_clip_mammut (mammut_model.py / transformer.py), written out below."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import pytest
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
    """

    def __init__(self, has_mlp: bool = True) -> None:
        super().__init__()
        from open_clip.transformer import ResidualAttentionBlock

        self.token_embedding = nn.Embedding(VOCAB, WIDTH)
        self.positional_embedding = nn.Parameter(torch.randn(CTX, WIDTH) * 0.02)
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(WIDTH, WIDTH // 64) for _ in range(LAYERS)])
        if not has_mlp:
            for block in self.resblocks[::RATIO]:
                block.ln_2, block.mlp = nn.Identity(), _NoMLP()
        self.cross_attn = nn.ModuleList(
            [ResidualAttentionBlock(WIDTH, WIDTH // 64, is_cross_attention=True) for _ in range(LAYERS // RATIO)])
        self.ln_final = nn.LayerNorm(WIDTH)
        self.text_projection = nn.Parameter(torch.randn(WIDTH, VOCAB) * WIDTH ** -0.5)

    def forward(self, ids: torch.Tensor, image_embs: torch.Tensor | None) -> torch.Tensor:
        x = self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
        mask = None
        if image_embs is not None:  # generative pass: causal, cross-attention after layer i % step == 0
            mask = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu_(1)
        step = LAYERS // len(self.cross_attn)
        for i, block in enumerate(self.resblocks):
            x = block(x, attn_mask=mask)
            if image_embs is not None and i % step == 0:
                x = self.cross_attn[i // step](x, k_x=image_embs, v_x=image_embs)
        return self.ln_final(x)


class RefMammut(nn.Module):
    def __init__(self, has_mlp: bool = True) -> None:
        super().__init__()
        from open_clip.transformer import VisionTransformer

        self.visual = VisionTransformer(IMAGE, PATCH, V_WIDTH, V_LAYERS, V_WIDTH // 64, 4.0, output_dim=WIDTH)
        self.text = RefText(has_mlp)
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
        return F.normalize(self.text(ids, None).mean(1), dim=-1)

    def logits(self, ids: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(ids, tokens @ self.map_viz2txt_kv) @ self.text.text_projection


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


def _compare(model, ref: RefMammut) -> None:
    image, ids = _inputs()
    with torch.no_grad():
        want_img, want_tokens = ref.encode_image(image)
        out = model.encode_video(image[:, :, None], normalize=True)
        assert (out.tokens - want_tokens).abs().max() < 1e-4
        assert (out.embedding - want_img).abs().max() < 1e-4
        assert (model.encode_text(ids, normalize=True) - ref.encode_text(ids)).abs().max() < 1e-4
        logits, _ = model.text.forward_generative(ids, model.cross_kv(out.tokens))
        assert (logits - ref.logits(ids, want_tokens)).abs().max() < 1e-4
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


def test_upstream_layout_with_lm_head_and_safetensors(reference, tmp_path):
    from safetensors.torch import save_file

    sd = {("text.lm_head" if k == "text.text_projection" else k): v.contiguous()
          for k, v in reference.state_dict().items()}
    save_file(sd, str(tmp_path / "open_clip_model.safetensors"))
    _compare(from_openmammut(tmp_path / "open_clip_model.safetensors"), reference)


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
