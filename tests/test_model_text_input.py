"""``encode_text`` takes one string, a list of strings, or token ids."""

from __future__ import annotations

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
