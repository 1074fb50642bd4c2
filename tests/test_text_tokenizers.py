"""Tokenizers: CLIP BPE matches open_clip exactly; SentencePiece trains, round-trips, saves."""

from __future__ import annotations

import json

import pytest
import torch

import mammut_video  # noqa: F401  (torchvision guard before open_clip)
from mammut_video.text import ClipBpeTokenizer, SentencePieceTokenizer, Tokenizer, build_tokenizer

CORPUS = [
    "a dog runs in the park",
    "a man is playing a guitar on stage",
    "two women are cooking food in a kitchen",
    "what is the dog doing?",
    "who is singing a song?",
    "a cat sleeps on a red sofa",
    "people dance at a party",
    "a boy rides a bike down the street",
] * 10

TEXTS = [
    "a dog runs",
    "What is the MAN doing?",
    "Hello,   World!! it's fine &amp; dandy",
    "café naïve — unicode ✓",
    "word " * 120,  # longer than the context
    "",
]


@pytest.fixture(scope="module")
def clip_tok() -> ClipBpeTokenizer:
    return ClipBpeTokenizer()


@pytest.fixture(scope="module")
def sp_tok(tmp_path_factory: pytest.TempPathFactory) -> SentencePieceTokenizer:
    out = tmp_path_factory.mktemp("spm") / "captions"
    return SentencePieceTokenizer.train(CORPUS, out, vocab_size=48)


@pytest.fixture(params=["clip", "sp"])
def tok(request: pytest.FixtureRequest, clip_tok: ClipBpeTokenizer, sp_tok: SentencePieceTokenizer) -> Tokenizer:
    return clip_tok if request.param == "clip" else sp_tok


def test_clip_bpe_ids_match_open_clip(clip_tok: ClipBpeTokenizer) -> None:
    import open_clip

    ours = clip_tok(TEXTS)
    assert ours.shape == (len(TEXTS), 77) and ours.dtype == torch.long
    assert torch.equal(ours, open_clip.tokenize(TEXTS))
    assert torch.equal(ours, open_clip.get_tokenizer("ViT-B-32")(TEXTS))
    assert torch.equal(clip_tok(TEXTS, context_length=12), open_clip.tokenize(TEXTS, context_length=12))


def test_clip_bpe_special_ids(clip_tok: ClipBpeTokenizer) -> None:
    assert (clip_tok.vocab_size, clip_tok.sot_id, clip_tok.eot_id, clip_tok.pad_id) == (49408, 49406, 49407, 0)
    assert clip_tok.context_length == 77
    row = clip_tok("a dog runs")[0]
    assert row[0] == 49406 and row[4] == 49407 and row[5:].eq(0).all()


def test_clip_bpe_decode_is_clean_text(clip_tok: ClipBpeTokenizer) -> None:
    ids = clip_tok(["A Dog  RUNS", "what is the man doing ?", "a dog, a cat."])
    assert clip_tok.batch_decode(ids) == ["a dog runs", "what is the man doing?", "a dog, a cat."]
    assert clip_tok.decode(ids[0].tolist()) == "a dog runs"
    assert clip_tok.decode(clip_tok.encode("a dog runs")) == "a dog runs"


def test_clip_bpe_decode_keeps_token_zero_inside_text(clip_tok: ClipBpeTokenizer) -> None:
    # Id 0 is both CLIP's pad and the byte "!": only trailing zeros are padding.
    a = clip_tok.encode("a")
    assert clip_tok.decode([clip_tok.sot_id, 0, *a, 0, 0]) == "!a"
    assert clip_tok.decode([clip_tok.sot_id, 0, *a, clip_tok.eot_id, 0]) == "!a"


def test_sentencepiece_special_ids(sp_tok: SentencePieceTokenizer) -> None:
    assert (sp_tok.pad_id, sp_tok.sot_id, sp_tok.eot_id) == (0, 2, 3)
    assert sp_tok.vocab_size == 48
    row = sp_tok("a dog runs")[0]
    n = len(sp_tok.encode("a dog runs"))
    assert row[0] == 2 and row[n + 1] == 3 and row[n + 2 :].eq(0).all()


def test_sentencepiece_round_trip(sp_tok: SentencePieceTokenizer) -> None:
    for text in ["a dog runs in the park", "who is singing a song?", "a cat rides a bike"]:
        assert sp_tok.decode(sp_tok(text)[0]) == text
        assert sp_tok.decode(sp_tok.encode(text)) == text


def test_sentencepiece_training_is_deterministic(tmp_path) -> None:
    a = SentencePieceTokenizer.train(CORPUS, tmp_path / "a", vocab_size=48)
    b = SentencePieceTokenizer.train(CORPUS, tmp_path / "b", vocab_size=48)
    assert (tmp_path / "a.model").read_bytes() == (tmp_path / "b.model").read_bytes()
    assert a.encode("a boy plays guitar") == b.encode("a boy plays guitar")


def test_sentencepiece_trains_from_a_file(tmp_path, sp_tok: SentencePieceTokenizer) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n")
    from_file = SentencePieceTokenizer.train(corpus, tmp_path / "file", vocab_size=48)
    assert from_file.encode("a dog runs in the park") == sp_tok.encode("a dog runs in the park")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        SentencePieceTokenizer.train(tmp_path / "missing.txt", tmp_path / "x", vocab_size=48)


def test_sentencepiece_rejects_model_without_pad(tmp_path) -> None:
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "nopad"), vocab_size=40, minloglevel=2
    )
    with pytest.raises(ValueError, match=r"nopad\.model.*pad"):
        SentencePieceTokenizer(tmp_path / "nopad.model")


def test_truncation_keeps_eot_last(tok: Tokenizer) -> None:
    ids = tok(["a dog runs in the park " * 20, "a cat"], context_length=8)
    assert ids.shape == (2, 8)
    assert ids[0, 0] == tok.sot_id and ids[0, -1] == tok.eot_id
    assert (ids[0, 1:-1] != tok.eot_id).all()


def test_batch_padding(tok: Tokenizer) -> None:
    texts = ["a dog runs in the park", "a cat"]
    ids = tok(texts, context_length=20)
    for row, text in zip(ids, texts):
        n = len(tok.encode(text))
        assert row[0] == tok.sot_id and row[n + 1] == tok.eot_id
        assert row[n + 2 :].eq(tok.pad_id).all()
    assert tok.batch_decode(ids) == [tok.decode(r) for r in ids]


def test_save_build_round_trip(tok: Tokenizer, tmp_path) -> None:
    spec = tok.save(tmp_path)
    spec = json.loads(json.dumps(spec))  # JSON-able
    rebuilt = build_tokenizer(spec, tmp_path)
    assert type(rebuilt) is type(tok)
    assert (rebuilt.vocab_size, rebuilt.pad_id, rebuilt.sot_id, rebuilt.eot_id) == (
        tok.vocab_size, tok.pad_id, tok.sot_id, tok.eot_id,
    )
    texts = ["a dog runs in the park", "who is singing?"]
    assert torch.equal(rebuilt(texts), tok(texts))


def test_build_tokenizer_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown tokenizer type 'wordpiece'"):
        build_tokenizer({"type": "wordpiece"})
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        build_tokenizer({"type": "sentencepiece", "model_file": "tokenizer.model"}, tmp_path)
    assert build_tokenizer({"type": "clip_bpe", "context_length": 32}).context_length == 32
