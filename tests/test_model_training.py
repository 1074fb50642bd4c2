"""The model's training side: forward at contrastive weight 0, freezing, gradient checkpointing,
nested config overrides, and checkpoints saved before the learned temporal position table."""

from __future__ import annotations

import pytest
import torch

import mammut_video as mv
from mammut_video.model import create_model
from mammut_video.model.losses import caption_loss


def _batch(model, b: int = 2, frames: int = 4):
    torch.manual_seed(1)
    video = torch.randn(b, 3, frames, 112, 112)
    ids = model.tokenizer(["a red square moves left", "two circles"])[:, :9]  # padded to the longest row only
    return video, ids


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_create_model_merges_nested_overrides_into_the_preset():
    model = create_model("mammut-video-tiny", text={"layers": 2}, vision={"timm_kwargs": {"img_size": 112, "depth": 2}})
    cfg = model.config
    assert cfg.text.layers == 2 and cfg.text.width == 128 and cfg.text.context_length == 32
    assert len(model.text.resblocks) == 2 and len(model.text.cross_attn) == 1
    assert [t.name for t in cfg.vision.tubes] == ["motion", "image"] and len(model.visual.trunk.blocks) == 2
    assert create_model("mammut-video-tiny", num_frames=4).visual.time_embed.shape == (4, 192)


def test_forward_without_contrastive_pass_leaves_only_its_parameters_without_gradient():
    torch.manual_seed(0)
    model = create_model("mammut-video-tiny", num_frames=3)
    video, ids = _batch(model, frames=3)
    out = model(video, ids, contrastive=False)
    assert set(out) == {"logits", "targets"}
    caption_loss(out["logits"], out["targets"]).backward()
    no_grad = {n for n, p in model.named_parameters() if p.grad is None}
    unused = {n for n, _ in model.unused_parameters(3, contrastive=False)}
    # the 4-frame motion tube does not fit a 3-frame clip
    assert unused == {"visual.trunk.norm.weight", "visual.trunk.norm.bias", "visual.proj", "logit_scale",
                      "visual.tubes.motion.weight", "visual.tubes.motion.bias"}
    assert no_grad == unused
    assert {n for n, _ in model.unused_parameters(8)} == set()


def test_logits_only_at_labelled_positions_equal_the_full_pass():
    torch.manual_seed(0)
    model = create_model("mammut-video-tiny", num_frames=4).eval()
    video, ids = _batch(model)
    labels = torch.full_like(ids, -100)
    labels[:, 5:7] = ids[:, 5:7]
    with torch.no_grad():
        out = model(video, ids, labels)
        full, _ = model.text.forward_generative(ids, model.cross_kv(model.visual.forward_tokens(video)))
    assert out["logits"].shape == (4, model.config.text.vocab_size)
    torch.testing.assert_close(out["logits"], full[:, 4:6].reshape(4, -1))
    torch.testing.assert_close(caption_loss(out["logits"], out["targets"]), caption_loss(full, labels))


def test_contrastive_text_features_do_not_depend_on_batch_padding():
    torch.manual_seed(0)
    model = create_model("mammut-video-tiny", num_frames=4).eval()
    video, ids = _batch(model)
    with torch.no_grad():
        short = model(video, ids)["text_features"]
    torch.testing.assert_close(short, model.encode_text(model.tokenizer(["a red square moves left", "two circles"])))


@pytest.mark.parametrize("part", ["vision", "tubes", "text"])
def test_lock_freezes_exactly_its_part(part: str):
    model = create_model("mammut-video-tiny", num_frames=4)
    model.lock(**{part: True})
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    prefix = {"vision": ("visual.",), "tubes": ("visual.tubes.", "visual.trunk.patch_embed."), "text": ("text.",)}[part]
    assert frozen and frozen == {n for n, _ in model.named_parameters() if n.startswith(prefix)}


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = create_model("mammut-video-tiny", num_frames=4)
    video, ids = _batch(model)

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model.set_grad_checkpointing(checkpointing)
        out = model(video, ids)
        loss = caption_loss(out["logits"], out["targets"]) + mv.clip_loss(
            out["image_features"], out["text_features"], out["logit_scale"])
        loss.backward()
        return _grads(model)

    plain, checkpointed = grads(False), grads(True)
    assert model.text.grad_checkpointing and model.visual.trunk.grad_checkpointing
    used = {n for n, _ in model.named_parameters()} - {n for n, _ in model.unused_parameters(4)}
    assert plain.keys() == checkpointed.keys() == used
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_checkpoint_saved_before_the_temporal_table_keeps_its_sin_cos_positions(tmp_path):
    """A checkpoint without visual.time_embed (the fixed sin-cos era) loads with the table set to
    the sin-cos rows, so a clip of its num_frames frames gets exactly the old positions."""
    from safetensors.torch import load_file, save_file

    from mammut_video.model.tubes import active_tubes, bilinear_matrix, num_tokens, sincos_1d, tube_centres

    torch.manual_seed(0)
    model = create_model("mammut-video-tiny")
    model.save_pretrained(tmp_path / "old")
    weights = tmp_path / "old" / "model.safetensors"
    sd = load_file(str(weights))
    del sd["visual.time_embed"]
    save_file(sd, str(weights))

    loaded = mv.load_model(tmp_path / "old")
    v = loaded.visual
    t, h, w = 8, 112, 112
    n = num_tokens(v.tube_specs, t, h, w, cls_token=False)
    centres = torch.cat([tube_centres(s, t, h, w) for s in active_tubes(v.tube_specs, t, h, w)])
    with torch.no_grad():
        video_pos = v.add_positions(torch.zeros(1, n, v.width), t, h, w)[0, 1:]
        spatial = bilinear_matrix(centres[:, 1:], v.trunk.patch_embed.grid_size, (h, w)).float() @ v.trunk.pos_embed[0, 1:]
    old = sincos_1d(centres[:, 0], v.width).float()  # the fixed term of the old scheme, at each centre frame
    torch.testing.assert_close(video_pos, spatial + old, atol=1e-5, rtol=0)
    torch.testing.assert_close(v.time_embed, sincos_1d(torch.arange(8), v.width).float())
    # a current checkpoint keeps its own table
    model.save_pretrained(tmp_path / "new")
    assert torch.count_nonzero(mv.load_model(tmp_path / "new").visual.time_embed) == 0


def test_forward_with_rows_per_clip_equals_one_clip_per_row() -> None:
    # several questions about one clip: the clip is encoded once and its K/V shared, the same result
    # as feeding the clip once per question
    torch.manual_seed(0)
    model = mv.create_model("mammut-video-tiny", num_frames=4).eval()
    video = torch.randn(2, 3, 4, 112, 112)
    ids, labels = mv.build_qa_batch(model.tokenizer, ["what is it?", "how many?", "where?"], ["a", "two", "up"], 32)
    with torch.no_grad():
        grouped = model(video, ids, labels, rows=[2, 1])
        copied = model(video[torch.tensor([0, 0, 1])], ids, labels)
    torch.testing.assert_close(grouped["logits"], copied["logits"], atol=1e-5, rtol=1e-5)
    assert torch.equal(grouped["targets"], copied["targets"])
    torch.testing.assert_close(grouped["text_features"], copied["text_features"][[0, 2]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grouped["image_features"], copied["image_features"][[0, 2]], atol=1e-5, rtol=1e-5)
    with pytest.raises(mv.ConfigError, match="rows"):
        model(video, ids, labels, rows=[1, 1])
