"""Own checkpoint format: save -> load restores identical outputs; writes are atomic; weights
that do not fit fail with one error listing every problem."""

from __future__ import annotations

import json
import os
import stat

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


def _train_sentencepiece(tmp_path, lines: list[str], vocab_size: int) -> None:
    """Train tmp_path/sp.model on ``lines`` (ids: pad 0, unk 1, bos 2, eos 3)."""
    import sentencepiece as spm

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=vocab_size,
                                   pad_id=0, unk_id=1, bos_id=2, eos_id=3, minloglevel=2)


def test_sentencepiece_tokenizer_travels_with_the_checkpoint(tiny, tmp_path):
    _train_sentencepiece(tmp_path, [f"a person is cooking dish number {i} in a kitchen" for i in range(200)], 40)
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
    with pytest.raises(CheckpointError, match="nowhere: not found$"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file, not a checkpoint directory"):
        load_model(tmp_path / "file")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not a mammut-video checkpoint config"):
        load_model(tmp_path / "d")


def test_save_refuses_a_directory_with_other_files(tiny, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("precious")
    with pytest.raises(CheckpointError) as info:
        tiny.save_pretrained(str(victim))
    assert str(victim) in str(info.value) and "notes.txt" in str(info.value)
    assert (victim / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in victim.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim"]  # no temporary leftovers
    # a checkpoint someone added a file to is refused as well: the swap would delete it
    save_pretrained(tiny, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "eval_results.json").write_text("{}")
    with pytest.raises(CheckpointError, match="eval_results.json"):
        save_pretrained(tiny, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "eval_results.json").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        save_pretrained(tiny, tmp_path / "file")


def test_save_replaces_a_checkpoint_and_fills_an_empty_directory(tiny, tmp_path):
    (tmp_path / "empty").mkdir()
    save_pretrained(tiny, tmp_path / "empty")
    load_model(tmp_path / "empty")
    other = mv.create_model("mammut-video-tiny")
    save_pretrained(other, tmp_path / "empty")  # a checkpoint is replaced (atomically)
    assert torch.equal(load_model(tmp_path / "empty").visual.proj, other.visual.proj)
    # a SentencePiece checkpoint owns its tokenizer file too
    _train_sentencepiece(tmp_path, [f"a dog number {i} runs" for i in range(100)], 30)
    sp = mv.create_model("mammut-video-tiny", tokenizer={"type": "sentencepiece",
                                                         "model_file": str(tmp_path / "sp.model")})
    sp.save_pretrained(str(tmp_path / "sp_ckpt"))
    sp.save_pretrained(str(tmp_path / "sp_ckpt"))
    assert sorted(p.name for p in (tmp_path / "sp_ckpt").iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.model"]


def test_convert_refuses_an_output_directory_with_other_files(tmp_path, capsys):
    from mammut_video.commands import main

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("precious")
    (tmp_path / "vit.pth").write_bytes(b"never read: the output is checked first")
    assert main(["convert", "--from", "timm", str(tmp_path / "vit.pth"), "--out", str(victim)]) == 2
    err = capsys.readouterr().err
    assert "victim" in err and "notes.txt" in err and "Traceback" not in err
    assert (victim / "notes.txt").read_text() == "precious"
    # below a file: one line before any work (it was a FileExistsError traceback after converting)
    assert main(["convert", "--from", "timm", str(tmp_path / "vit.pth"), "--out", str(victim / "notes.txt" / "ck")]) == 2
    assert "notes.txt is a file, not a folder" in capsys.readouterr().err


def test_save_into_the_current_folder_is_refused_in_plain_words(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path), ".."):  # the swap would move the folder the user stands in
        with pytest.raises(CheckpointError, match="is the current folder .* a folder of its own"):
            tiny.save_pretrained(out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_checkpoint_permissions_follow_the_umask(tiny, tmp_path, umask):
    from mammut_video.runtime.rundir import atomic_write

    old = os.umask(umask)
    try:
        save_pretrained(tiny, tmp_path / "ckpt")
        save_pretrained(tiny, tmp_path / "ckpt")  # the replacing path too
        atomic_write(tmp_path / "single.json", lambda p: p.write_text("{}"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ckpt").stat().st_mode) == 0o777 & ~umask
    for path in (tmp_path / "ckpt" / "config.json", tmp_path / "ckpt" / "model.safetensors", tmp_path / "single.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
