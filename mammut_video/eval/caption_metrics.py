"""Caption metrics through pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr (CIDEr-D).

Captions are PTB-tokenised first (Java), then the whole split is scored in ONE call: CIDEr's
document frequencies come from the reference set passed in, so scoring shards or batches
separately would change the number. SPICE needs Stanford models downloaded at first use and
cannot run offline; it is reported as unavailable, never as 0.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence

from mammut_video._native import native_stderr_silenced
from mammut_video.errors import ConfigError, MammutVideoError

SPICE_UNAVAILABLE = "unavailable (needs Stanford CoreNLP models downloaded at first use)"
METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


class CaptionMetricsError(MammutVideoError):
    """Caption scoring cannot run: no Java, or pycocoevalcap's Java tools failed."""


def require_java() -> None:
    """Raise :class:`CaptionMetricsError` unless a ``java`` executable is on PATH."""
    if shutil.which("java") is None:
        raise CaptionMetricsError(
            "caption metrics need Java: pycocoevalcap's PTB tokenisation (and METEOR) run on the JVM and no "
            "`java` is on PATH; install a Java runtime (e.g. openjdk-17-jre-headless) and run again")


def caption_metrics(
    references: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    meteor: bool = True,
) -> dict:
    """Score one predicted caption per video against its reference captions.

    references: video key -> reference captions (the whole split); predictions: video key ->
    caption. A video without a prediction is scored with an empty caption (counts as wrong).
    Returns the pycocoevalcap values (fractions in [0, 1], CIDEr unbounded) under
    ``METRIC_NAMES`` plus ``"SPICE": SPICE_UNAVAILABLE``; METEOR is omitted when
    ``meteor=False``.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if not references:
        raise ConfigError("no reference captions to score against")
    require_java()
    empty = [k for k, caps in references.items() if not caps]
    if empty:
        raise ConfigError(f"videos without reference captions: {empty[:5]}")
    keys = list(references)
    try:
        tokenizer = PTBTokenizer()
        with native_stderr_silenced():  # Java's "PTBTokenizer tokenized N tokens at ..." lines
            gts = tokenizer.tokenize({k: [{"caption": c} for c in references[k]] for k in keys})
            res = tokenizer.tokenize({k: [{"caption": predictions.get(k, "")}] for k in keys})
    except (OSError, subprocess.CalledProcessError) as err:
        raise CaptionMetricsError(f"PTB tokenisation (Java, pycocoevalcap) failed: {err}") from None

    out: dict = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out.update({f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)})
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        try:
            scorer = Meteor()
            out["METEOR"] = float(scorer.compute_score(gts, res)[0])
        except (OSError, ValueError, subprocess.CalledProcessError) as err:
            raise CaptionMetricsError(f"METEOR (Java, pycocoevalcap) failed: {err}; --no-meteor skips it") from None
        del scorer  # its __del__ stops the Java process
    out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    out["SPICE"] = SPICE_UNAVAILABLE
    return out
