"""Own checkpoint format: save -> load restores identical outputs; writes are atomic; weights
that do not fit fail with one error listing every problem."""

from __future__ import annotations

import json

import pytest
import torch

import mammut_video as mv
from mammut_video.checkpoint import CheckpointError, load_model, load_state_dict_strict, save_pretrained


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return mv.create_model("mammut-video-tiny").eval()


def test_roundtrip_gives_identical_outputs(tiny, tmp_path):
    tiny.save_pretrained(str(tmp_path / "ckpt"))
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} >= {"config.json", "model.safetensors"}
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert meta["model"]["name"] == "mammut-video-tiny" and meta["provenance"]["source"] == "mammut-video"
    loaded = mv.load_model(str(tmp_path / "ckpt"))
    video = torch.randn(1, 3, 8, 112, 112)
    ids = tiny.tokenizer(["a dog runs on the grass"], context_length=tiny.config.text.context_length)
    with torch.no_grad():
        a, b = tiny(video, ids), loaded(video, ids)
    for key in ("image_features", "text_features", "logits"):
        assert torch.equal(a[key], b[key]), key


def test_sentencepiece_tokenizer_travels_with_the_checkpoint(tiny, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"a person is cooking dish number {i} in a kitchen" for i in range(200)))
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=40,
                                   pad_id=0, unk_id=1, bos_id=2, eos_id=3, minloglevel=2)
    model = mv.create_model("mammut-video-tiny", tokenizer={"type": "sentencepiece",
                                                            "model_file": str(tmp_path / "sp.model")})
    model.save_pretrained(str(tmp_path / "ckpt"))
    (tmp_path / "sp.model").unlink()  # the checkpoint must not depend on the original file
    loaded = mv.load_model(str(tmp_path / "ckpt"))
    assert loaded.tokenizer("a kitchen").tolist() == model.tokenizer("a kitchen").tolist()


def test_crash_during_save_leaves_previous_checkpoint_intact(tiny, tmp_path, monkeypatch):
    import safetensors.torch

    save_pretrained(tiny, tmp_path / "ckpt")
    before = (tmp_path / "ckpt" / "model.safetensors").read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(tiny, tmp_path / "ckpt")
    with pytest.raises(OSError):
        save_pretrained(tiny, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    assert (tmp_path / "ckpt" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary leftovers
    load_model(tmp_path / "ckpt")


def test_strict_load_lists_every_problem_and_loads_nothing(tiny):
    sd = {k: v.clone() for k, v in tiny.state_dict().items()}
    sd["visual.extra"] = torch.zeros(1)
    del sd["text.ln_final.bias"]
    sd["logit_scale"] = torch.zeros(2)
    target = mv.create_model("mammut-video-tiny")
    before = target.visual.proj.detach().clone()
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(target, sd, source="my.safetensors")
    msg = str(info.value)
    assert "my.safetensors" in msg
    assert "unknown keys (1)" in msg and "visual.extra" in msg
    assert "missing keys (1)" in msg and "text.ln_final.bias" in msg
    assert "shape mismatches (1)" in msg and "logit_scale: file (2,) vs model ()" in msg
    assert torch.equal(target.visual.proj, before)


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not a mammut-video checkpoint config"):
        load_model(tmp_path / "d")
