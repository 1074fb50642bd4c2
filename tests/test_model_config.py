"""Config round-trip, presets, the state-dict contract, L-14 layout on the meta device."""

from __future__ import annotations

import json

import pytest
import torch

import mammut_video as mv
from mammut_video.model import MammutVideoConfig, TubeSpec, VisionConfig, create_model, get_preset, list_presets
from mammut_video.model.tubes import num_tokens


def test_presets_listed():
    assert list_presets() == ["mammut-video-tiny", "mammut-video-B-16", "mammut-video-L-14"]
    assert mv.list_presets() == list_presets()
    with pytest.raises(ValueError, match="unknown model preset"):
        get_preset("mammut-video-XXL")


@pytest.mark.parametrize("name", ["mammut-video-tiny", "mammut-video-B-16", "mammut-video-L-14"])
def test_config_round_trips_through_json(name):
    config = get_preset(name)
    again = MammutVideoConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.name == name


def test_config_validation():
    with pytest.raises(ValueError, match="embed_dim"):
        create_model("mammut-video-tiny", embed_dim=64)
    with pytest.raises(ValueError, match="image tube"):
        VisionConfig(tubes=[TubeSpec("image", (1, 8, 8), (1, 8, 8))])
    with pytest.raises(ValueError, match="named 'image'"):
        VisionConfig(tubes=[TubeSpec("a", (2, 16, 16), (2, 16, 16))])
    with pytest.raises(ValueError, match="unknown model config keys"):
        MammutVideoConfig.from_dict({"frames": 3})


def test_overrides_and_state_dict_contract():
    model = create_model("mammut-video-tiny", num_frames=4, logit_bias=-10.0)
    assert model.config.num_frames == 4 and model.config.name == "mammut-video-tiny"
    sd = model.state_dict()
    for key in ["visual.trunk.cls_token", "visual.trunk.pos_embed", "visual.trunk.patch_embed.proj.weight",
                "visual.trunk.norm.weight", "visual.trunk.blocks.3.attn.qkv.weight", "visual.tubes.motion.weight",
                "visual.tubes.motion.bias", "visual.proj", "text.lm_head", "text.cross_attn.1.ln_1_kv.weight",
                "map_viz2txt_kv", "logit_scale", "logit_bias"]:
        assert key in sd, key
    assert "visual.tubes.image.weight" not in sd  # the image tube IS trunk.patch_embed.proj
    assert not any(k.startswith("visual.ln_post") for k in sd)  # ln_post IS trunk.norm
    assert model.visual.ln_post is model.visual.trunk.norm
    assert sd["visual.tubes.motion.weight"].shape == (192, 3, 4, 16, 16)
    assert sd["map_viz2txt_kv"].shape == (192, 128)
    assert model.logit_scale.item() == pytest.approx(2.6592600)  # log(1 / 0.07)


def test_l14_layout_on_meta_device():
    with torch.device("meta"):
        model = create_model("mammut-video-L-14")
    sd = model.state_dict()
    assert sd["visual.trunk.pos_embed"].shape == (1, 257, 1024)
    assert sd["visual.trunk.patch_embed.proj.weight"].shape == (1024, 3, 14, 14)
    assert "visual.trunk.patch_embed.proj.bias" not in sd and "visual.tubes.a.bias" not in sd  # CLIP: no bias
    assert "visual.trunk.norm_pre.weight" in sd  # ln_pre
    assert sd["visual.tubes.a.weight"].shape == (1024, 3, 8, 7, 7)
    assert sd["visual.proj"].shape == (1024, 768)
    assert sd["text.lm_head"].shape == (768, 49408)
    assert sd["text.positional_embedding"].shape == (77, 768)
    assert len(model.text.resblocks) == 12 and len(model.text.cross_attn) == 6
    assert sd["map_viz2txt_kv"].shape == (1024, 768)
    # tubes scaled by 14/16: a 2x8x8 + b 3x8x8 + c 2x8x8 + image 16x16 = 704, + CLS
    assert num_tokens(model.config.vision.tubes, 32, 224, 224) == 705
    assert num_tokens(model.config.vision.tubes, 1, 224, 224) == 257


def test_a_field_of_the_wrong_type_is_named():
    from mammut_video.errors import ConfigError

    config = get_preset("mammut-video-tiny").to_dict()
    for part, key, value, message in [("text", "width", "768", "text.width must be int, got str '768'"),
                                      ("vision", "image_size", 112.0, "vision.image_size must be int, got float"),
                                      ("text", "pad_mask", "no", "text.pad_mask must be bool"),
                                      (None, "num_frames", True, "model.num_frames must be int, got bool")]:
        bad = json.loads(json.dumps(config))
        (bad[part] if part else bad)[key] = value
        with pytest.raises(ConfigError, match=message):  # the first was "not all arguments converted ..."
            MammutVideoConfig.from_dict(bad)
