"""Tube tokenizer + timm encoder: token counts, T = 1 equivalence with timm, inflation rule."""

from __future__ import annotations

import pytest
import torch

import mammut_video  # noqa: F401  (torchvision guard before timm)
from mammut_video.model import create_model, get_preset
from mammut_video.model.tubes import active_tubes, bilinear_matrix, inflate_kernel, num_tokens


@pytest.fixture(scope="module")
def b16():
    torch.manual_seed(0)
    return create_model("mammut-video-B-16").eval()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("mammut-video-tiny").eval()


@pytest.mark.parametrize("frames,expected", [(1, 197), (8, 295), (16, 295), (32, 540), (64, 1177)])
def test_b16_token_counts(frames, expected):
    # 32 frames: a 2x7x7 + b 3x7x7 + c 2x7x7 + image 14x14 = 539, + CLS (docs/architecture.md, "Tubes").
    # 8/16 frames: tube b (16 frames at offset 4) does not fit and is skipped.
    # 64 frames: a 4x7x7 + b 8x7x7 + c 4x7x7 + image 2x14x14 = 1176, + CLS.
    tubes = get_preset("mammut-video-B-16").vision.tubes
    assert num_tokens(tubes, frames, 224, 224) == expected


@pytest.mark.parametrize("frames,expected", [(8, 295), (16, 295), (64, 1177)])
def test_b16_encoder_output_has_the_configured_token_count(frames, expected):
    # the real forward (shapes only, on the meta device) agrees with the counts above
    with torch.device("meta"):
        model = create_model("mammut-video-B-16")
        tokens = model.visual.forward_tokens(torch.empty(1, 3, frames, 224, 224))
    assert tokens.shape == (1, expected, 768)


def test_b16_forward_gives_540_tokens(b16):
    x = torch.randn(1, 3, 32, 224, 224)
    with torch.inference_mode():
        out = b16.encode_video(x)
    assert out.tokens.shape == (1, 540, 768)
    assert out.embedding.shape == (1, 768)


@pytest.mark.slow
def test_image_equals_timm_vit_b16(b16):
    """T = 1 through the tube encoder == timm's vit_base_patch16_224 forward_features (same weights)."""
    import timm

    torch.manual_seed(1)
    ref = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, global_pool="").eval()
    b16.visual.trunk.load_state_dict(ref.state_dict())
    image = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        expected = ref.forward_features(image)
        tokens = b16.visual.forward_tokens(image[:, :, None])
        got = b16.visual.ln_post(tokens)
    assert got.shape == expected.shape == (2, 197, 768)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_image_equals_timm_small_vit(tiny):
    """Same check on the tiny preset's body (fast): timm vit_tiny_patch16_224 at 112 px, depth 4."""
    import timm

    torch.manual_seed(2)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, global_pool="",
                            img_size=112, depth=4).eval()
    tiny.visual.trunk.load_state_dict(ref.state_dict())
    image = torch.randn(3, 3, 112, 112)
    with torch.inference_mode():
        expected = ref.forward_features(image)
        got = tiny.visual.ln_post(tiny.visual.forward_tokens(image[:, :, None]))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def _sparse_tiny():
    """The tiny ViT with a sparse tube table with offsets and three spatial kernel sizes (the B-16
    layout, its time axis scaled to 8 frames): 131 tokens + CLS."""
    import dataclasses

    from mammut_video.model.config import TubeSpec

    sparse = [TubeSpec("a", (2, 8, 8), (4, 32, 32), (0, 0, 0)), TubeSpec("b", (4, 4, 4), (2, 32, 32), (1, 8, 8)),
              TubeSpec("c", (1, 12, 12), (4, 32, 32), (0, 16, 16)), TubeSpec("image", (1, 16, 16), (8, 16, 16))]
    return create_model("mammut-video-tiny", vision={"tubes": [dataclasses.asdict(t) for t in sparse]})


@pytest.mark.parametrize("tubes", ["preset", "sparse"])
def test_constant_clip_every_tube_matches_image_tube(tubes, tiny):
    if tubes == "sparse":
        tiny = _sparse_tiny()
    # perturb the image kernel first so inflation is exercised on arbitrary weights
    with torch.no_grad():
        tiny.visual.trunk.patch_embed.proj.weight.normal_()
        tiny.visual.inflate_tubes()
    colour = torch.tensor([0.3, -1.2, 0.7]).view(1, 3, 1, 1, 1)
    clip = colour.expand(1, 3, 8, 112, 112).contiguous()
    with torch.inference_mode():
        tokens = tiny.visual.tokenize(clip)[0]  # (N, D), before positions
    counts = [int(torch.tensor(t.grid(8, 112, 112)).prod()) for t in active_tubes(tiny.visual.tube_specs, 8, 112, 112)]
    assert len(counts) == (2 if tubes == "preset" else 4) and sum(counts) == tokens.shape[0]
    image_token = tokens[-1]  # the image tube is last in both tables
    torch.testing.assert_close(tokens, image_token.expand_as(tokens), atol=1e-4, rtol=1e-5)
    # a non-constant clip does NOT give equal tokens (the test above can fail)
    with torch.inference_mode():
        varied = tiny.visual.tokenize(torch.randn(1, 3, 8, 112, 112))[0]
    assert not torch.allclose(varied, varied[-1].expand_as(varied), atol=1e-2)


@pytest.mark.parametrize("kernel", [(8, 8, 8), (16, 4, 4), (4, 12, 12), (2, 20, 20)])
def test_inflation_preserves_kernel_sum(kernel):
    w = torch.randn(5, 3, 16, 16)
    inflated = inflate_kernel(w, kernel)
    assert inflated.shape == (5, 3, *kernel)
    torch.testing.assert_close(inflated.sum(dim=(2, 3, 4)), w.sum(dim=(2, 3)), atol=1e-4, rtol=1e-5)


def test_bilinear_positions_exact_at_cells_and_interpolated_between():
    table = torch.randn(14 * 14, 4, dtype=torch.float64)
    centres = torch.tensor([[8.0, 8.0], [8.0 + 16 * 3, 8.0 + 16 * 5], [16.0, 8.0]], dtype=torch.float64)
    pos = bilinear_matrix(centres, (14, 14), (224, 224)) @ table
    assert torch.equal(pos[0], table[0])
    assert torch.equal(pos[1], table[3 * 14 + 5])
    torch.testing.assert_close(pos[2], (table[0] + table[14]) / 2)


def test_zero_temporal_table_gives_video_tokens_the_image_positions(tiny):
    # a video model made from image weights starts from the image model's positions: the same frame
    # repeated gives the image tube's tokens at t = 0 exactly the image's tokens
    frame = torch.randn(1, 3, 1, 112, 112)
    assert [t for t in tiny.visual.tube_specs if t.name == "image"][0].stride[0] == 8
    clip = frame.expand(1, 3, 8, 112, 112)
    assert torch.count_nonzero(tiny.visual.time_embed) == 0 and tiny.visual.time_embed.shape == (8, 192)
    with torch.inference_mode():
        video = tiny.visual.add_positions(tiny.visual.tokenize(clip), 8, 112, 112)
        image = tiny.visual.add_positions(tiny.visual.tokenize(frame), 1, 112, 112)
    assert torch.equal(video[0, -49:], image[0, -49:])
    assert torch.equal(video[0, 0], image[0, 0])  # CLS


def test_temporal_table_is_sampled_at_the_centre_frame():
    # 4 rows, 8-frame clip: frame c reads row coordinate (c + 0.5) * 4 / 8 - 0.5, linearly
    from mammut_video.model.tubes import linear_matrix

    m = linear_matrix(torch.tensor([0.0, 1.0, 2.0, 3.0, 7.0]), 4, 8)
    expected = torch.tensor([[1, 0, 0, 0], [0.75, 0.25, 0, 0], [0.25, 0.75, 0, 0], [0, 0.75, 0.25, 0],
                             [0, 0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(m, expected)
    assert torch.equal(linear_matrix(torch.arange(8.0), 8, 8), torch.eye(8, dtype=torch.float64))


def test_every_tube_token_takes_its_centre_position():
    """Each token's position = the 2D table bilinearly sampled at its tube centre
    (idx * stride + offset + kernel // 2) + the temporal table's row of the centre frame; checked
    against torch's grid_sample and direct indexing, for every tube of a sparse table with offsets
    (the B-16 layout, its time axis scaled to 8 frames) on the tiny ViT."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    v = _sparse_tiny().visual
    with torch.no_grad():
        v.trunk.pos_embed.normal_()
        v.time_embed.normal_()
    t, h, w = 8, 112, 112
    specs = active_tubes(v.tube_specs, t, h, w)
    n = num_tokens(v.tube_specs, t, h, w, cls_token=False)
    with torch.inference_mode():
        pos = v.add_positions(torch.zeros(1, n, v.width), t, h, w)[0, 1:].double()
    gh, gw = v.trunk.patch_embed.grid_size
    table = v.trunk.pos_embed[0, 1:].detach().double().T.reshape(1, -1, gh, gw)
    time_table = v.time_embed.detach().double()
    row = 0
    for spec in specs:
        nt, nh, nw = spec.grid(t, h, w)
        for it in range(nt):
            for ih in range(nh):
                for iw in range(nw):
                    ct, cy, cx = (i * s + o + k // 2 for i, s, o, k in
                                  zip((it, ih, iw), spec.stride, spec.offset, spec.kernel))
                    # grid_sample, align_corners=False: -1 / +1 are the outer edges of the table
                    where = torch.tensor([[[[2 * cx / w - 1, 2 * cy / h - 1]]]], dtype=torch.float64)
                    spatial = F.grid_sample(table, where, mode="bilinear", padding_mode="border",
                                            align_corners=False)[0, :, 0, 0]
                    temporal = time_table[ct]
                    torch.testing.assert_close(pos[row], spatial + temporal, atol=1e-5, rtol=0,
                                               msg=f"tube {spec.name} token {(it, ih, iw)}")
                    row += 1
    assert row == n == 131


def test_an_image_batch_is_taken_as_one_frame_clips():
    torch.manual_seed(3)
    model = create_model("mammut-video-tiny").eval()
    images = torch.randn(2, 3, 112, 112)
    ids = model.tokenizer(["a red square", "two circles"])
    with torch.inference_mode():
        as_images, as_clips = model.encode_video(images), model.encode_video(images[:, :, None])
        logits_images = model(images, ids)["logits"]
        logits_clips = model(images[:, :, None], ids)["logits"]
        captions = model.caption(images, max_new_tokens=3)
    assert as_images.tokens.shape == (2, 50, 192)
    assert torch.equal(as_images.tokens, as_clips.tokens) and torch.equal(as_images.embedding, as_clips.embedding)
    assert torch.equal(logits_images, logits_clips)
    assert captions == model.caption(images[:, :, None], max_new_tokens=3)
    with pytest.raises(ValueError, match=r"images \(B, 3, H, W\), got shape \(3, 112, 112\)"):
        model.encode_video(torch.randn(3, 112, 112))


def test_per_frame_baseline_is_each_frame_through_the_image_vit(tiny):
    # the benchmark's baseline: frame k's tokens are the plain ViT output for frame k, in order
    torch.manual_seed(3)
    x = torch.randn(2, 3, 3, 112, 112)
    with torch.inference_mode():
        out = tiny.visual.forward_per_frame(x)
        frames = [tiny.visual.trunk.forward_features(x[:, :, k]) for k in range(3)]
    n = frames[0].shape[1]
    assert out.shape == (2, 3 * n, frames[0].shape[-1])
    for k, ref in enumerate(frames):
        torch.testing.assert_close(out[:, k * n:(k + 1) * n], ref)
