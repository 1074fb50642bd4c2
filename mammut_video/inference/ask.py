"""Questions about one clip: open-ended answers, or candidate answers ranked by likelihood.

    import mammut_video as mv
    for a in mv.ask(mv.AskConfig("clip.mp4", ["what is the man doing?"], checkpoint="ckpt/")):
        print(a.question, a.answer)

The clip is decoded and encoded once for all the questions; with ``candidates`` every candidate
is scored for every question by the decoder's log-likelihood (the eval rank protocol) and the
answer is the best one, with the ``top_k`` best listed and their probability among the candidates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from mammut_video.errors import ConfigError, check_int, check_segment, require_checkpoint
from mammut_video.runtime.precision import check_device_and_precision

log = logging.getLogger(__name__)


@dataclass
class AskConfig:
    """Questions about one clip (``start`` / ``end`` in seconds select a segment; checked here, before
    the model is loaded).

    ``candidates``: a file (JSON list or one answer per line) or a list of answers to rank; None
    generates free answers (greedy, or beam search with ``num_beams``). ``frames``: default the
    checkpoint's. ``precision``: fp32 / bf16 / fp16 autocast, None for the device's default (fp32
    on the CPU, bf16 on CUDA). ``compile``: torch.compile the encoder and the decoder's cached
    step (same answers; the first call pays the compilation).
    """

    video: str | Path
    questions: list[str]
    checkpoint: str | Path
    candidates: str | Path | list[str] | None = None
    frames: int | None = None
    start: float | None = None
    end: float | None = None
    num_beams: int = 1
    max_new_tokens: int = 10
    top_k: int = 5
    device: str | None = None
    precision: str | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.questions, str):
            self.questions = [self.questions]
        require_checkpoint(self.checkpoint)
        if not self.questions:
            raise ConfigError("no question: give at least one")
        for i, q in enumerate(self.questions):
            if not str(q).strip():
                raise ConfigError(f"question {i + 1} is empty")
        for name in ("num_beams", "max_new_tokens", "top_k"):
            setattr(self, name, check_int(getattr(self, name), name))
        if self.frames is not None:
            self.frames = check_int(self.frames, "frames")
        check_device_and_precision(self.device, self.precision)
        self.start, self.end = check_segment(self.start, self.end)


@dataclass
class Answer:
    """One question's answer; with candidates, ``ranked`` holds the best ``(answer, log-likelihood,
    probability among the candidates)`` triples, best first."""

    question: str
    answer: str
    ranked: list[tuple[str, float, float]] = field(default_factory=list)


def _candidate_list(candidates: str | Path | list[str]) -> list[str]:
    from mammut_video.data import read_answer_file

    answers = read_answer_file(candidates) if isinstance(candidates, (str, Path)) else list(candidates)
    answers = list(dict.fromkeys(a.strip() for a in answers if a.strip()))
    if not answers:
        raise ConfigError("the candidate list holds no answers")
    return answers


def ask(config: AskConfig) -> list[Answer]:
    """Answer every question of ``config`` about its clip (see the module docstring)."""
    from mammut_video.eval.tasks import answer_questions
    from mammut_video.model import load_model
    from mammut_video.runtime.devices import resolve_device
    from mammut_video.runtime.precision import inference_autocast
    from mammut_video.video import read_clip

    candidates = _candidate_list(config.candidates) if config.candidates is not None else None
    device = resolve_device(config.device)
    model = load_model(str(config.checkpoint), map_location=device)
    if config.compile:
        model.compile_inference()
    frames = config.frames or model.config.num_frames
    clip = read_clip(config.video, frames, start=config.start, end=config.end)
    video = model.preprocess(clip)[None].to(device)
    questions = [str(q) for q in config.questions]
    with inference_autocast(device, config.precision):
        if candidates is None:
            free = answer_questions(model, video, [0] * len(questions), questions,
                                    max_new_tokens=config.max_new_tokens, num_beams=config.num_beams)
            return [Answer(q, a) for q, a in zip(questions, free)]
        scores = model.rank_answers(video, questions, candidates, clip_index=[0] * len(questions)).float()
    answers = []
    for q, row in zip(questions, scores):
        probs = row.softmax(-1)
        best = row.topk(min(config.top_k, len(candidates))).indices.tolist()
        answers.append(Answer(q, candidates[best[0]], [(candidates[k], float(row[k]), float(probs[k])) for k in best]))
    return answers
