"""Caption metrics equal pycocoevalcap called directly on the same data (one shared run)."""

from __future__ import annotations

import pytest

from mammut_video.eval.caption_metrics import SPICE_UNAVAILABLE, caption_metrics

REFERENCES = {
    "video0": ["A man is cooking pasta in a kitchen.", "someone cooks food", "a chef prepares a meal"],
    "video1": ["Two dogs run on the grass.", "dogs are running outside", "a pair of dogs play in a park"],
    "video2": ["a woman sings on stage", "a singer performs a song", "a lady is singing"],
    "video3": ["a car drives down a road", "traffic on a highway", "a red car is driving"],
}
PREDICTIONS = {
    "video0": "a man is cooking in a kitchen",
    "video1": "two dogs are running",
    "video2": "a man is playing guitar",
    # video3 has no prediction: scored as an empty caption
}


def _direct() -> dict:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
    res = tok.tokenize({k: [{"caption": PREDICTIONS.get(k, "")}] for k in REFERENCES})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {
        **{f"BLEU-{i + 1}": b for i, b in enumerate(bleu)},
        "METEOR": Meteor().compute_score(gts, res)[0],
        "ROUGE-L": Rouge().compute_score(gts, res)[0],
        "CIDEr": Cider().compute_score(gts, res)[0],
    }


@pytest.fixture(scope="module")
def both() -> tuple[dict, dict]:
    return caption_metrics(REFERENCES, PREDICTIONS), _direct()


@pytest.mark.slow
def test_equals_pycocoevalcap_direct(both: tuple[dict, dict]) -> None:
    ours, direct = both
    for name, value in direct.items():
        assert ours[name] == pytest.approx(value, abs=1e-9), name
    assert 0 < ours["CIDEr"] and 0 < ours["BLEU-1"] <= 1


@pytest.mark.slow
def test_spice_reported_unavailable_not_zero(both: tuple[dict, dict]) -> None:
    assert both[0]["SPICE"] == SPICE_UNAVAILABLE


def test_without_meteor_is_fast_and_complete() -> None:
    out = caption_metrics(REFERENCES, PREDICTIONS, meteor=False)
    assert "METEOR" not in out
    assert {"BLEU-4", "ROUGE-L", "CIDEr"} <= set(out)


def test_empty_references_rejected() -> None:
    with pytest.raises(ValueError, match="without reference"):
        caption_metrics({"video0": []}, {"video0": "a dog"}, meteor=False)


def test_java_problems_raise_caption_metrics_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import subprocess

    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from mammut_video.eval.caption_metrics import CaptionMetricsError

    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "java" else which(name, *a, **k))
    with pytest.raises(CaptionMetricsError, match=r"need Java.*PTB tokenisation"):
        caption_metrics(REFERENCES, PREDICTIONS, meteor=False)
    monkeypatch.undo()

    def crash(self, captions):
        raise subprocess.CalledProcessError(1, ["java", "-cp", "stanford-corenlp-3.4.1.jar"])

    monkeypatch.setattr(PTBTokenizer, "tokenize", crash)
    with pytest.raises(CaptionMetricsError, match="PTB tokenisation .* failed"):
        caption_metrics(REFERENCES, PREDICTIONS, meteor=False)


def test_java_tokenizer_chatter_stays_off_the_terminal(capfd: pytest.CaptureFixture[str]) -> None:
    """The PTB tokenizer's Java process wrote "PTBTokenizer tokenized N tokens at ..." to descriptor 2
    at every scoring, so each validation of a caption fine-tune printed two stray lines."""
    caption_metrics(REFERENCES, PREDICTIONS, meteor=False)
    assert "PTBTokenizer" not in capfd.readouterr().err
