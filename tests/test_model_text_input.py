"""``encode_text`` takes one string, a list of strings, or token ids."""

from __future__ import annotations

import pytest
import torch

import mammut_video as mv


def test_a_string_is_one_text_not_its_characters():
    torch.manual_seed(0)
    model = mv.create_model("mammut-video-tiny").eval()
    with torch.no_grad():
        one = model.encode_text("a dog")
        listed = model.encode_text(["a dog"])
        ids = model.encode_text(model.tokenizer(["a dog"], context_length=model.config.text.context_length))
    assert one.shape == (1, model.config.embed_dim)
    assert torch.equal(one, listed) and torch.equal(one, ids)
    assert model.encode_text(("a dog", "a cat")).shape == (2, model.config.embed_dim)


def test_the_usual_video_input_mistakes_are_one_clear_error():
    """A clip without its batch dimension, frames not through preprocess, a list, an empty batch: each a
    ConfigError saying what to do (they were conv / einops errors, or answers for 3 'clips')."""
    from mammut_video.errors import ConfigError

    torch.manual_seed(0)
    model = mv.create_model("mammut-video-tiny", num_frames=2).eval()
    clip = torch.randint(0, 255, (2, 120, 160, 3), dtype=torch.uint8)
    x = model.preprocess(clip)  # (3, 2, 112, 112)
    cases = [
        (lambda: model.encode_video(x), r"got shape \(3, 2, 112, 112\); one preprocessed clip .* clip\[None\]"),
        (lambda: model.answer(x, "what?"), r"clip\[None\]"),
        (lambda: model.caption(clip[None]), r"got torch.uint8 \(1, 2, 120, 160, 3\); clips go through model.preprocess"),
        (lambda: model.encode_video([x]), r"got list"),
        (lambda: model.encode_video(x[None][:0]), r"an empty batch"),
        (lambda: model.rank_answers(x, "what?", ["a"]), r"clip\[None\]"),
    ]
    for call, pattern in cases:
        with pytest.raises(ConfigError, match=pattern):
            call()
    with torch.no_grad():  # another float dtype is cast to the weights'; a single question is one question
        assert torch.equal(model.encode_video(x[None].double()).tokens, model.encode_video(x[None]).tokens)
        assert model.rank_answers(x[None], "what?", ["a", "b"]).shape == (1, 2)


def test_a_vocabulary_smaller_than_the_tokenizer_is_refused_at_first_use():
    from mammut_video.errors import ConfigError

    model = mv.create_model("mammut-video-tiny", text={"vocab_size": 10})  # the CLIP BPE tokenizer has 49,408
    with pytest.raises(ConfigError, match="has 49408 tokens but the model's vocabulary only 10"):
        model.caption(torch.randn(1, 3, 2, 112, 112))  # was an IndexError from the embedding table


def test_shapes_on_the_meta_device_with_another_input_dtype():
    with torch.device("meta"):
        model = mv.create_model("mammut-video-tiny", num_frames=2)
    x = torch.randn(1, 3, 2, 112, 112, device="meta", dtype=torch.bfloat16)
    assert model.encode_video(x).tokens.shape == (1, 50, 192)  # autocast has no "meta": that check is skipped
