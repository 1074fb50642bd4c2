"""Clip transforms: shapes, small and portrait frames, one crop per clip, normalisation."""

from __future__ import annotations

import pytest
import torch

from mammut_video.video import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, ClipTransform, build_clip_transform


def random_clip(t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("hw", [(240, 320), (144, 176), (320, 180), (224, 224)])
def test_output_shape_and_dtype(train, hw):
    out = build_clip_transform(224, CLIP_MEAN, CLIP_STD, train=train)(random_clip(4, *hw))
    assert out.shape == (3, 4, 224, 224) and out.dtype == torch.float32
    assert out.is_contiguous() and torch.isfinite(out).all()


def test_single_image_is_one_frame():
    out = build_clip_transform(32, train=False)(random_clip(1, 40, 50)[0])
    assert out.shape == (3, 1, 32, 32)


def test_eval_crop_is_centred_and_deterministic():
    # a left-right symmetric landscape frame stays symmetric only under a centred crop
    # (240x360 -> 112x168: an even margin of 28 px each side)
    col = torch.arange(360).sub(179.5).abs().mul(255 / 180).to(torch.uint8)
    clip = col.view(1, 1, 360, 1).expand(2, 240, 360, 3).contiguous()
    tf = build_clip_transform(112, IMAGENET_MEAN, IMAGENET_STD, train=False)
    out = tf(clip)
    assert torch.allclose(out, out.flip(-1), atol=0.05)
    assert torch.equal(out, tf(clip))


def test_train_uses_one_crop_and_flip_for_all_frames():
    frame = random_clip(1, 96, 128)
    clip = frame.expand(6, -1, -1, -1).contiguous()  # identical frames
    tf = build_clip_transform(64, train=True)
    outs = []
    for seed in range(8):
        torch.manual_seed(seed)
        out = tf(clip)
        for t in range(1, 6):  # a per-frame crop or flip would make frames differ
            assert torch.equal(out[:, 0], out[:, t])
        outs.append(out)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # but clips do get random crops


def test_train_flip_happens_and_can_be_turned_off():
    clip = random_clip(2, 64, 64)
    flat = build_clip_transform(64, train=False)(clip)
    kinds = set()
    for seed in range(30):
        torch.manual_seed(seed)
        # area 1 on a square frame: the whole frame, so the output is the input, flipped or not
        out = build_clip_transform(64, train=True, scale=(1.0, 1.0))(clip)
        kinds.add("flipped" if torch.allclose(out, flat.flip(-1)) else
                  "plain" if torch.allclose(out, flat) else "other")
    assert kinds == {"flipped", "plain"}
    no_flip = build_clip_transform(64, train=True, scale=(1.0, 1.0), hflip=False)
    assert all(torch.allclose(no_flip(clip), flat) for _ in range(10))


@pytest.mark.parametrize("mean, std", [(CLIP_MEAN, CLIP_STD), (IMAGENET_MEAN, IMAGENET_STD)])
def test_normalisation_values(mean, std):
    clip = torch.zeros(2, 50, 60, 3, dtype=torch.uint8)
    clip[..., 0], clip[..., 1], clip[..., 2] = 0, 128, 255
    out = ClipTransform(32, mean, std, train=False)(clip)
    for c, v in enumerate((0, 128, 255)):
        assert torch.allclose(out[c], torch.tensor((v / 255 - mean[c]) / std[c]), atol=1e-5)


def test_constants_match_timm():
    from timm.data import constants

    assert CLIP_MEAN == constants.OPENAI_CLIP_MEAN and CLIP_STD == constants.OPENAI_CLIP_STD
    assert IMAGENET_MEAN == constants.IMAGENET_DEFAULT_MEAN
    assert IMAGENET_STD == constants.IMAGENET_DEFAULT_STD


def test_rejects_wrong_input():
    tf = build_clip_transform(32)
    with pytest.raises(ValueError, match="uint8"):
        tf(torch.zeros(2, 40, 40, 3))
    with pytest.raises(ValueError, match="T, H, W, 3"):
        tf(torch.zeros(2, 3, 40, 40, dtype=torch.uint8))
