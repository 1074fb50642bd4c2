"""timm and open_clip imports: reference models at random init, saved as those libraries do,
converted, and compared token for token (an image goes through exactly the pretrained ViT)."""

from __future__ import annotations

import pytest
import torch

import mammut_video  # noqa: F401  (torchvision guard before timm/open_clip)
from mammut_video.checkpoint import CheckpointError, from_open_clip, from_timm
from mammut_video.commands import main
from mammut_video.model.tubes import inflate_kernel


def _timm_vit():
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=64, depth=2, num_classes=10).eval()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_vit_imports_exactly(tmp_path, suffix):
    ref = _timm_vit()
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    else:
        torch.save(ref.state_dict(), path)
    model = from_timm(path)
    assert (model.config.vision.width, model.config.vision.image_size) == (192, 64)
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = model.encode_video(image[:, :, None]).tokens
        assert (model.visual.ln_post(tokens) - ref.forward_features(image)).abs().max() < 1e-5
    patch = model.visual.trunk.patch_embed.proj
    assert torch.equal(patch.weight, ref.patch_embed.proj.weight)
    for spec in model.visual.tube_specs:
        if spec.name != "image":
            assert torch.equal(model.visual.tubes[spec.name].weight, inflate_kernel(patch.weight, spec.kernel))
    assert "text decoder" in model.provenance["fresh"]


def test_timm_preset_mismatch_names_the_difference(tmp_path):
    torch.save(_timm_vit().state_dict(), tmp_path / "vit.pth")
    with pytest.raises(CheckpointError, match="vision width: weights 192, preset 768"):
        from_timm(tmp_path / "vit.pth", preset="mammut-video-B-16")


def _open_clip_model():
    from open_clip.model import CLIP

    torch.manual_seed(0)
    return CLIP(
        embed_dim=64,
        vision_cfg={"image_size": 64, "layers": 2, "width": 128, "patch_size": 16},
        text_cfg={"context_length": 16, "vocab_size": 300, "width": 64, "heads": 1, "layers": 1},
    ).eval()


def _clip_tokens(visual, image):
    x = visual.conv1(image).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + visual.positional_embedding
    return visual.transformer(visual.ln_pre(x))


def test_open_clip_training_checkpoint_imports_exactly(tmp_path):
    ref = _open_clip_model()
    wrapped = {"epoch": 1, "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}
    torch.save(wrapped, tmp_path / "epoch_1.pt")
    model = from_open_clip(tmp_path / "epoch_1.pt")
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = model.encode_video(image[:, :, None]).tokens
        assert (tokens - _clip_tokens(ref.visual, image)).abs().max() < 1e-5
    assert torch.equal(model.visual.proj, ref.visual.proj)
    assert torch.equal(model.visual.ln_post.weight, ref.visual.ln_post.weight)
    assert model.config.embed_dim == 64 and model.config.text.width == 64


def test_coca_visual_tower_imports(tmp_path):
    from open_clip.coca_model import CoCa

    torch.manual_seed(0)
    ref = CoCa(
        embed_dim=64,
        multimodal_cfg={"context_length": 16, "vocab_size": 300, "width": 64, "heads": 1, "layers": 1},
        text_cfg={"context_length": 16, "vocab_size": 300, "width": 64, "heads": 1, "layers": 1},
        vision_cfg={"image_size": 64, "layers": 2, "width": 128, "patch_size": 16,
                    "attentional_pool": True, "attn_pooler_heads": 2, "output_tokens": True},
    ).eval()
    torch.save(ref.state_dict(), tmp_path / "coca.pt")
    model = from_open_clip(tmp_path / "coca.pt")
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        tokens = model.encode_video(image[:, :, None]).tokens
        assert (tokens - _clip_tokens(ref.visual, image)).abs().max() < 1e-5
    assert "visual.proj" in model.provenance["fresh"]


def test_convert_and_info_commands(tmp_path, capsys):
    torch.save(_timm_vit().state_dict(), tmp_path / "vit.pth")
    out = tmp_path / "ckpt"
    assert main(["convert", "--from", "timm", str(tmp_path / "vit.pth"), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "freshly initialised" in said and "text decoder" in said
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "weights from: timm" in info and "vit.pth" in info and "tokenizer:" in info
    assert "vision trunk (ViT)" in info
    assert main(["convert", "--from", "timm", str(tmp_path / "missing.pth"), "--out", str(out)]) == 2
    assert "missing.pth" in capsys.readouterr().err


def _open_clip_hw32():
    """A CLIP whose vision tower has head_width 32: 128 wide -> 4 heads (open_clip's default for 128 is 2)."""
    from open_clip.model import CLIP

    torch.manual_seed(1)
    return CLIP(
        embed_dim=64,
        vision_cfg={"image_size": 64, "layers": 2, "width": 128, "head_width": 32, "patch_size": 16},
        text_cfg={"context_length": 16, "vocab_size": 300, "width": 64, "heads": 1, "layers": 1},
    ).eval()


def test_open_clip_heads_come_from_the_option_not_the_weights(tmp_path, capsys):
    ref = _open_clip_hw32()
    assert ref.visual.transformer.resblocks[0].attn.num_heads == 4
    torch.save(ref.state_dict(), tmp_path / "hw32.pt")
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = _clip_tokens(ref.visual, image)
        default = from_open_clip(tmp_path / "hw32.pt")
        assert default.config.vision.timm_kwargs["num_heads"] == 2
        assert (default.encode_video(image[:, :, None]).tokens - want).abs().max() > 1e-3
        model = from_open_clip(tmp_path / "hw32.pt", vision_heads=4)
        assert (model.encode_video(image[:, :, None]).tokens - want).abs().max() < 1e-5
    assert any("vision 4 (given)" in note for note in model.provenance["notes"])
    # through the command line and the saved checkpoint
    out = tmp_path / "ckpt"
    assert main(["convert", "--from", "open_clip", str(tmp_path / "hw32.pt"), "--out", str(out),
                 "--vision-heads", "4"]) == 0
    capsys.readouterr()
    with torch.no_grad():
        assert (mammut_video.load_model(out).encode_video(image[:, :, None]).tokens - want).abs().max() < 1e-5
    with pytest.raises(CheckpointError, match="vision width 128 is not divisible by 3 attention heads"):
        from_open_clip(tmp_path / "hw32.pt", vision_heads=3)
    torch.save(_timm_vit().state_dict(), tmp_path / "vit.pth")
    with pytest.raises(CheckpointError, match="vision attention heads: weights 4, preset 3"):
        from_timm(tmp_path / "vit.pth", preset="mammut-video-tiny", vision_heads=4)  # the preset's ViT has 3


def test_timm_heads_option(tmp_path):
    import timm

    torch.manual_seed(2)
    ref = timm.create_model("vit_tiny_patch16_224", img_size=64, depth=2, num_heads=6, num_classes=0).eval()
    torch.save(ref.state_dict(), tmp_path / "vit6.pth")
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for heads, close in ((None, False), (6, True)):
            model = from_timm(tmp_path / "vit6.pth", vision_heads=heads)
            diff = (model.visual.ln_post(model.encode_video(image[:, :, None]).tokens) - ref.forward_features(image))
            assert (diff.abs().max() < 1e-5) == close


def _without(sd: dict, key: str) -> dict:
    sd = dict(sd)
    del sd[key]
    return sd


@pytest.mark.parametrize("key", [
    "visual.proj", "visual.positional_embedding", "visual.class_embedding", "visual.conv1.weight",
    "visual.transformer.resblocks.0.mlp.c_fc.weight", "visual.transformer.resblocks.1.attn.out_proj.weight",
    "visual.transformer.resblocks.1.ln_2.weight", "visual.ln_pre.bias", "visual.ln_post.weight",
])
def test_open_clip_missing_key_is_one_error_in_the_files_names(tmp_path, capsys, key):
    torch.save(_without(_open_clip_model().state_dict(), key), tmp_path / "holey.pt")
    with pytest.raises(CheckpointError) as info:
        from_open_clip(tmp_path / "holey.pt")
    assert "holey.pt" in str(info.value) and key in str(info.value), str(info.value)
    assert main(["convert", "--from", "open_clip", str(tmp_path / "holey.pt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err


@pytest.mark.parametrize("key", ["blocks.0.mlp.fc1.weight", "blocks.1.norm1.weight", "norm.bias", "cls_token"])
def test_timm_missing_key_is_one_error_in_the_files_names(tmp_path, key):
    torch.save(_without(_timm_vit().state_dict(), key), tmp_path / "holey.pth")
    with pytest.raises(CheckpointError) as info:
        from_timm(tmp_path / "holey.pth")
    msg = str(info.value)
    assert "holey.pth" in msg and ("class token" in msg if key == "cls_token" else f"    {key}" in msg), msg
    assert "visual.trunk." not in msg


def test_convert_never_prints_a_traceback(tmp_path, capsys, monkeypatch):
    import mammut_video.checkpoint.convert as convert_module

    sd = _open_clip_model().state_dict()
    sd["visual.positional_embedding"] = torch.zeros(17)  # 1-D: not a position table
    torch.save(sd, tmp_path / "odd.pt")
    assert main(["convert", "--from", "open_clip", str(tmp_path / "odd.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "visual.positional_embedding has shape (17,)" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["convert", "--from", "openmammut", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "junk.pt" in capsys.readouterr().err
    whole = (tmp_path / "odd.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])  # a download cut short
    assert main(["convert", "--from", "open_clip", str(tmp_path / "cut.pt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cut.pt: cannot read weights (RuntimeError: PytorchStreamReader failed reading zip archive" in err
    assert err.endswith((".)", "...)")) and len(err.splitlines()) == 1  # a sentence, not cut mid-word

    def boom(*args, **kwargs):
        raise IndexError("tuple index out of range")

    monkeypatch.setitem(convert_module.CONVERTERS, "timm", boom)  # whatever a future source file trips over
    assert main(["convert", "--from", "timm", str(tmp_path / "odd.pt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "odd.pt: cannot convert (IndexError: tuple index out of range)" in err and "Traceback" not in err
