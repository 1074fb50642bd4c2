"""The evaluations as tasks: each turns its split into clip units, predicts, scores and reports.

- :class:`QATask`: open-ended VideoQA, ``generate`` (decode an answer) or ``rank`` (pick the
  candidate answer with the highest decoder likelihood); questions are grouped by clip so
  each video is decoded and encoded once for all its questions (and, ranking, all candidates).
- :class:`CaptionTask`: one generated caption per video, scored with pycocoevalcap.
- :class:`RetrievalTask`: contrastive video embeddings, text embeddings of the captions,
  text->video and video->text ranks.

Every task offers what :func:`mammut_video.eval.evaluate` needs: ``key`` (the record field
naming an item), ``unit_name``, ``units()``, ``predict()``, ``failed()``, ``settings()`` (what,
besides checkpoint, data and frames, decides its predictions), ``score()`` and ``rows()`` (its
lines of the report table). Which task runs for which benchmark name is in
:mod:`mammut_video.eval.registry`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mammut_video.data.files import AnnotationError
from mammut_video.data.records import clip_key
from mammut_video.errors import ConfigError, check_int
from mammut_video.eval.caption_metrics import caption_metrics
from mammut_video.eval.qa_metrics import QAReference, answers_match, qa_accuracy
from mammut_video.eval.retrieval_metrics import retrieval_metrics

Row = tuple[str, str]


@dataclass
class ClipUnit:
    """One clip to decode (``video`` between ``start`` and ``end`` seconds) and the item keys it serves."""

    video: Path
    video_id: str
    keys: list[str]
    start: float | None = None
    end: float | None = None
    missing: bool = False  # the file is not on disk: its items are failed without decoding

    def restrict(self, keys: list[str]) -> ClipUnit:
        return dataclasses.replace(self, keys=list(keys))


def answer_questions(model: Any, video: torch.Tensor, clip_index: Sequence[int], questions: Sequence[str],
                     batch_size: int = 64, max_new_tokens: int = 10, num_beams: int = 1) -> list[str]:
    """Answer questions about shared clips, encoding each clip ONCE.

    video (B, C, T, H, W); question q is about clip ``clip_index[q]``; questions are decoded
    ``batch_size`` at a time, greedily or with ``num_beams`` beams. Equivalent to
    ``model.answer(video[clip_index], questions)`` without re-running the video encoder for every
    question of a clip (MSRVTT-QA has ~24 questions per video), and without copying a clip's
    cross-attention K/V per question or beam: all of them read the same K/V. Returns one answer
    string per question.
    """
    from mammut_video.model.generation import generate
    from mammut_video.text.prompts import qa_prompt_ids

    tok = model.tokenizer
    kv_clips = model.cross_kv(model.visual.forward_tokens(video))  # per cross block (B, H, N, hd)
    answers: list[str] = []
    for s in range(0, len(questions), batch_size):
        prompts = qa_prompt_ids(tok, list(questions[s : s + batch_size]))
        ids = generate(model.text, kv_clips, prompts, eos_id=tok.eot_id, pad_id=tok.pad_id,
                       max_new_tokens=max_new_tokens, num_beams=num_beams,
                       clip_index=clip_index[s : s + batch_size])
        answers += [tok.decode(i).strip() for i in ids]
    return answers


QA_MAX_NEW_TOKENS = 10  # answers are one or two words
CAPTION_MAX_NEW_TOKENS = 30


def answer_list_identity(candidates: Sequence[str]) -> dict:
    """``{"count", "sha256"}`` of a candidate list (order matters: it breaks score ties)."""
    digest = hashlib.sha256("\n".join(candidates).encode("utf-8")).hexdigest()
    return {"count": len(candidates), "sha256": digest}


def _first(records: Sequence[Any], limit: int | None) -> list:
    """The first ``limit`` records (all when ``limit`` is None; 0 is not "all")."""
    if limit is None:
        return list(records)
    return list(records[: check_int(limit, "limit")])


class QATask:
    """VideoQA over every question of a loaded ``QASplit`` (``split.records``)."""

    key = "question_id"
    unit_name = "question"

    def __init__(self, split: Any, protocol: str = "generate", candidates: Sequence[str] | None = None,
                 question_batch: int = 64, limit: int | None = None, rank_batch: int = 256):
        if protocol not in ("generate", "rank"):
            raise ConfigError(f"unknown QA protocol {protocol!r}: use 'generate' or 'rank'")
        if protocol == "rank" and not candidates:
            raise ConfigError("the rank protocol needs candidate answers (training answers or --answer-list)")
        check_int(question_batch, "question_batch")
        check_int(rank_batch, "rank_batch")
        self.split = split
        self.protocol = protocol
        self.candidates = list(dict.fromkeys(candidates or []))  # unique, order kept
        self.question_batch = question_batch
        self.rank_batch = rank_batch
        self.max_new_tokens = QA_MAX_NEW_TOKENS
        self.records = _first(split.records, limit)
        self.by_key: dict[str, Any] = {}
        for i, r in enumerate(self.records):
            key = str(r.question_id)
            if key in self.by_key:
                first = next(j for j, o in enumerate(self.records) if str(o.question_id) == key)
                raise AnnotationError(split.annotation_file, f"question id {r.question_id!r} is used by records "
                                      f"{first} and {i}; question ids must be unique")
            self.by_key[key] = r

    def settings(self) -> dict:
        """What, besides checkpoint, data and frames, decides this task's predictions."""
        if self.protocol == "generate":
            return {"protocol": "generate", "generation": {"max_new_tokens": self.max_new_tokens, "num_beams": 1}}
        return {"protocol": "rank", "answer_list": answer_list_identity(self.candidates)}

    def units(self) -> list[ClipUnit]:
        missing = {str(p) for p in self.split.missing_videos}
        groups: dict[tuple, ClipUnit] = {}
        for r in self.records:
            key = clip_key(r.video, r.start, r.end)
            unit = groups.get(key)
            if unit is None:
                unit = groups[key] = ClipUnit(r.video, str(r.video_id or r.video), [], r.start, r.end,
                                              missing=str(r.video) in missing)
            unit.keys.append(str(r.question_id))
        return list(groups.values())

    def _record(self, key: str, prediction: str | None, **extra: Any) -> dict:
        r = self.by_key[key]
        out = {"question_id": r.question_id, "video_id": str(r.video_id or r.video), "question": r.question,
               "answer": r.answer, "question_type": r.question_type, "prediction": prediction,
               "correct": prediction is not None and answers_match(prediction, r.answer)}
        out.update(extra)
        return out

    def predict(self, model: Any, video: torch.Tensor, units: Sequence[ClipUnit]) -> list[dict]:
        """video (len(units), C, T, H, W) -> one record per pending question of ``units``."""
        flat = [(i, k) for i, u in enumerate(units) for k in u.keys]
        clip_index = [i for i, _ in flat]
        questions = [self.by_key[k].question for _, k in flat]
        if self.protocol == "generate":
            answers = answer_questions(model, video, clip_index, questions, batch_size=self.question_batch,
                                       max_new_tokens=self.max_new_tokens)
            return [self._record(k, a) for (_, k), a in zip(flat, answers)]
        # rank: every clip encoded once, its cross K/V shared by all its questions and candidates
        scores = model.rank_answers(video, questions, self.candidates, batch_size=self.rank_batch,
                                    clip_index=clip_index)
        best = scores.argmax(dim=-1).tolist()
        return [self._record(k, self.candidates[b], score=float(scores[j, b]))
                for j, ((_, k), b) in enumerate(zip(flat, best))]

    def failed(self, unit: ClipUnit, error: str) -> list[dict]:
        return [self._record(k, None, error=error) for k in unit.keys]

    def score(self, model: Any, records: dict[str, dict]) -> dict:
        refs = [QAReference(str(r.question_id), r.answer, r.question_type) for r in self.records]
        preds = {k: rec["prediction"] for k, rec in records.items() if rec.get("prediction") is not None}
        return qa_accuracy(refs, preds)

    @staticmethod
    def rows(metrics: dict) -> list[Row]:
        """Accuracy overall and per question type, in per cent with the counts."""
        rows = [("accuracy", f"{metrics['accuracy']:.2f}  ({metrics['correct']}/{metrics['total']})")]
        rows += [(f"  {t}", f"{m['accuracy']:.2f}  ({m['correct']}/{m['total']})")
                 for t, m in metrics["per_type"].items()]
        rows.append(("no prediction", str(metrics["missing"])))
        return rows


class CaptionTask:
    """Captioning over every video of a loaded ``CaptionSplit``."""

    key = "video_id"
    unit_name = "video"

    def __init__(self, split: Any, limit: int | None = None, meteor: bool = True):
        self.split = split
        self.records = _first(split.records, limit)
        self.meteor = meteor
        self.max_new_tokens = CAPTION_MAX_NEW_TOKENS

    def settings(self) -> dict:
        return {"protocol": "generate", "generation": {"max_new_tokens": self.max_new_tokens, "num_beams": 1}}

    def units(self) -> list[ClipUnit]:
        missing = {str(p) for p in self.split.missing_videos}
        return [ClipUnit(r.video, str(r.video_id), [str(r.video_id)], r.start, r.end, str(r.video) in missing)
                for r in self.records]

    def predict(self, model: Any, video: torch.Tensor, units: Sequence[ClipUnit]) -> list[dict]:
        """video (len(units), C, T, H, W) -> one ``{"video_id", "caption"}`` record per unit."""
        captions = model.caption(video, max_new_tokens=self.max_new_tokens)
        return [{"video_id": u.video_id, "caption": c} for u, c in zip(units, captions)]

    def failed(self, unit: ClipUnit, error: str) -> list[dict]:
        return [{"video_id": unit.video_id, "caption": None, "error": error}]

    def score(self, model: Any, records: dict[str, dict]) -> dict:
        refs = {str(r.video_id): list(r.captions) for r in self.records}
        preds = {k: rec["caption"] for k, rec in records.items() if rec.get("caption") is not None}
        metrics = caption_metrics(refs, preds, meteor=self.meteor)
        return {"scores": metrics, "total": len(refs), "captioned": sum(1 for k in refs if k in preds),
                "missing": sum(1 for k in refs if k not in preds)}

    @staticmethod
    def rows(metrics: dict) -> list[Row]:
        """Each caption metric (x100, as papers report them) and how many videos were captioned."""
        rows = [(name, f"{100 * v:.2f}" if isinstance(v, float) else str(v)) for name, v in metrics["scores"].items()]
        rows.append(("videos", f"{metrics['captioned']}/{metrics['total']} captioned"))
        return rows


class RetrievalTask:
    """Text<->video retrieval over a ``CaptionSplit`` (MSR-VTT 1k-A: one caption per video)."""

    key = "video_id"
    unit_name = "video"

    def __init__(self, split: Any, limit: int | None = None, text_batch: int = 256):
        self.split = split
        self.records = _first(split.records, limit)
        self.text_batch = text_batch

    def settings(self) -> dict:
        return {"protocol": "contrastive"}

    def units(self) -> list[ClipUnit]:
        missing = {str(p) for p in self.split.missing_videos}
        return [ClipUnit(r.video, str(r.video_id), [str(r.video_id)], r.start, r.end, str(r.video) in missing)
                for r in self.records]

    def predict(self, model: Any, video: torch.Tensor, units: Sequence[ClipUnit]) -> list[dict]:
        """video (len(units), C, T, H, W) -> ``{"video_id", "embedding": [E floats]}`` per unit."""
        emb = F.normalize(model.encode_video(video).embedding.float(), dim=-1).cpu()
        return [{"video_id": u.video_id, "embedding": e.tolist()} for u, e in zip(units, emb)]

    def failed(self, unit: ClipUnit, error: str) -> list[dict]:
        return [{"video_id": unit.video_id, "embedding": None, "error": error}]

    @torch.no_grad()  # not inference_mode: autocast's weight casts are reused over the text batches
    def score(self, model: Any, records: dict[str, dict]) -> dict:
        """Similarity of every caption to every video; a video without an embedding ranks last."""
        texts = [c for r in self.records for c in r.captions]
        text_to_video = [v for v, r in enumerate(self.records) for _ in r.captions]
        text_emb = torch.cat([model.encode_text(texts[s : s + self.text_batch]).float().cpu()
                              for s in range(0, len(texts), self.text_batch)])
        text_emb = F.normalize(text_emb, dim=-1)
        video_emb = torch.zeros(len(self.records), text_emb.shape[1])
        have = torch.zeros(len(self.records), dtype=torch.bool)
        for v, r in enumerate(self.records):
            rec = records.get(str(r.video_id))
            if rec is not None and rec.get("embedding") is not None:
                video_emb[v] = torch.tensor(rec["embedding"])
                have[v] = True
        sim = text_emb @ video_emb.T
        sim[:, ~have] = float("-inf")
        metrics = retrieval_metrics(sim, text_to_video)
        metrics.update(total=len(self.records), embedded=int(have.sum()), missing=int((~have).sum()))
        return metrics

    @staticmethod
    def rows(metrics: dict) -> list[Row]:
        """R@1/5/10, median and mean rank in each direction, and how many videos were embedded."""
        rows = []
        for direction, name in (("text_to_video", "t->v"), ("video_to_text", "v->t")):
            m = metrics[direction]
            recalls = "  ".join(f"{k} {v:.1f}" for k, v in m.items() if k.startswith("R@"))
            rows.append((name, f"{recalls}  MdR {m['median_rank']:.1f}  MnR {m['mean_rank']:.1f}"))
        rows.append(("videos", f"{metrics['embedded']}/{metrics['total']} embedded"))
        return rows
