"""MammutVideo: sparse-tube video encoder + MaMMUT two-pass decoder, and the ``create_model`` factory.

Top-level parameters (openMaMMUT names): ``visual.*`` (see :mod:`.encoder`), ``text.*`` (see
:mod:`.decoder`), ``map_viz2txt_kv`` (vision_width, text_width), ``logit_scale`` (the parameter
is in log space, init log(1/0.07); ``forward`` returns it exponentiated, as open_clip does) and,
when ``config.logit_bias`` is set, ``logit_bias``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mammut_video.errors import ConfigError
from mammut_video.model.config import MammutVideoConfig
from mammut_video.model.decoder import KV, ClipKV, TextDecoder
from mammut_video.model.encoder import VideoEncoder
from mammut_video.model.generation import generate, group_by_clip
from mammut_video.model.losses import next_token_targets
from mammut_video.model.presets import get_preset


@dataclass
class VideoOutput:
    """``tokens``: (B, N, Dv) visual tokens incl. CLS, before ``ln_post``; ``embedding``: (B, E)."""

    tokens: torch.Tensor
    embedding: torch.Tensor


class MammutVideo(nn.Module):
    def __init__(self, config: MammutVideoConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = VideoEncoder(config.vision, config.embed_dim, config.num_frames)
        self.text = TextDecoder(config.text)
        self.map_viz2txt_kv = nn.Parameter(torch.randn(config.vision.width, config.text.width) * config.vision.width ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if config.logit_bias is not None:
            self.logit_bias = nn.Parameter(torch.tensor(float(config.logit_bias)))
        else:
            self.logit_bias = None
        self._tokenizer: Any = None
        self._transforms: dict[bool, Any] = {}

    # ----------------------------------------------------------------- helpers
    @property
    def tokenizer(self) -> Any:
        """The tokenizer named by ``config.tokenizer`` (built on first use, padding to the model's context).

        A checkpoint loader whose tokenizer needs files (SentencePiece) sets it: ``model.tokenizer = tok``.
        """
        if self._tokenizer is None:
            from mammut_video.text import build_tokenizer

            spec = {**self.config.tokenizer, "context_length": self.config.text.context_length}
            self._tokenizer = build_tokenizer(spec)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value: Any) -> None:
        self._tokenizer = value

    def _text_tokenizer(self) -> Any:
        """The tokenizer, for turning text into ids this model embeds: one whose ids run past the model's
        vocabulary (a weights-only checkpoint with a small vocabulary) is refused here, not by an IndexError."""
        tok, vocab = self.tokenizer, self.config.text.vocab_size
        if getattr(tok, "vocab_size", 0) > vocab:
            raise ConfigError(f"the tokenizer ({self.config.tokenizer.get('type')}) has {tok.vocab_size} tokens but "
                              f"the model's vocabulary only {vocab}: give the tokenizer the model was trained with")
        return tok

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def clip_transform(self, train: bool = False) -> Any:
        """This model's clip transform, uint8 (T, H, W, C) -> float (C, T, H, W): a small picklable
        object to hand to DataLoader workers (``preprocess`` would pickle the whole model)."""
        if train not in self._transforms:
            from mammut_video.video import build_clip_transform

            v = self.config.vision
            self._transforms[train] = build_clip_transform(v.image_size, v.mean, v.std, train)
        return self._transforms[train]

    def preprocess(self, clip: torch.Tensor, train: bool = False) -> torch.Tensor:
        """uint8 clip (T, H, W, C) -> float (C, T, H, W) resized, cropped and normalised for this model."""
        return self.clip_transform(train)(clip)

    def save_pretrained(self, path: str) -> None:
        """Write ``config.json`` + ``model.safetensors`` + tokenizer files to a directory."""
        from mammut_video.checkpoint import save_pretrained

        save_pretrained(self, path)

    @property
    def pad_id(self) -> int:
        """Padding id of this model's tokenizer (CLIP BPE pads with 0, known without building it)."""
        if self._tokenizer is None and self.config.tokenizer.get("type") == "clip_bpe":
            return 0
        return int(self.tokenizer.pad_id)

    def _ids(self, texts: Sequence[str] | torch.Tensor) -> torch.Tensor:
        if isinstance(texts, torch.Tensor):
            return texts.to(self.device)
        texts = [texts] if isinstance(texts, str) else list(texts)  # a str is one text, not its characters
        return self._text_tokenizer()(texts, context_length=self.config.text.context_length).to(self.device)

    # ----------------------------------------------------------------- encoders
    def encode_video(self, video: torch.Tensor, normalize: bool = False) -> VideoOutput:
        """video (B, C, T, H, W) or images (B, C, H, W) -> VideoOutput(tokens (B, N, Dv), embedding (B, E),
        L2-normalised if asked). Every method taking ``video`` also takes images (one-frame clips)."""
        tokens, embedding = self.visual(video)
        if normalize:
            embedding = F.normalize(embedding, dim=-1)
        return VideoOutput(tokens, embedding)

    def encode_text(self, texts: Sequence[str] | torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Strings or ids (B, L) -> contrastive text embedding (B, E) (bidirectional pass, no video)."""
        ids = self._ids(texts)
        feats = self.text.forward_contrastive(ids, pad_id=self.pad_id)
        return F.normalize(feats, dim=-1) if normalize else feats

    def cross_kv(self, tokens: torch.Tensor) -> list[KV]:
        """Visual tokens (B, N, Dv) -> cross-attention K/V of every cross block, computed once per clip."""
        return self.text.cross_kv(tokens @ self.map_viz2txt_kv)

    def forward(self, video: torch.Tensor, text_ids: torch.Tensor, labels: torch.Tensor | None = None,
                contrastive: bool = True, rows: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """Both passes on the same ids (MaMMUT), for training.

        video (B, C, T, H, W); text_ids (B, L), any L up to the context length (a batch padded to
        its longest row is enough). ``labels`` (B, L) follow ``mammut_video.text``'s convention: the
        token at each supervised position, -100 elsewhere; without them every non-pad token is
        supervised. Vocabulary logits are computed only where they are scored: the position
        before each supervised token. Returns

        - ``logits`` (M, V): next-token logits at those M positions (row-major order), and
          ``targets`` (M,): the supervised tokens they predict (``model.losses.caption_loss``);
        - with ``contrastive`` (default): ``image_features`` (B, E) and ``text_features`` (B, E)
          (unnormalised; the text pass reads the ids padded to the context length, exactly as
          ``encode_text`` does), ``logit_scale`` = exp(the parameter), as open_clip returns it, and
          ``logit_bias`` when the model has one. ``contrastive=False`` runs neither the contrastive
          pass nor the visual pooling head (QA / caption training at contrastive weight 0), so
          their parameters get no gradient.

        ``rows``: several texts per clip. ``rows[c]`` consecutive rows of ``text_ids`` are about clip
        ``c`` (``sum(rows)`` = the number of rows): each clip is encoded once and its cross-attention
        K/V are shared by its rows, not copied; the contrastive pass then pairs each clip with its
        first row. Default: one row per clip.
        """
        pad_id = self.pad_id
        if labels is None:
            labels = text_ids.masked_fill(text_ids == pad_id, -100)
        elif labels.shape != text_ids.shape:
            raise ConfigError(f"labels {tuple(labels.shape)} must have the shape of text_ids {tuple(text_ids.shape)}")
        tokens = self.visual.forward_tokens(video)
        cross: Any = self.cross_kv(tokens)
        first_rows = text_ids
        if rows is not None:
            rows = tuple(int(r) for r in rows)
            if len(rows) != video.shape[0] or sum(rows) != text_ids.shape[0] or min(rows) < 1:
                raise ConfigError(f"rows {rows}: one count >= 1 per clip ({video.shape[0]}) adding up to the "
                                  f"{text_ids.shape[0]} text rows")
            cross = ClipKV(cross, rows)
            starts = torch.tensor((0, *rows[:-1]), device=text_ids.device).cumsum(0)
            first_rows = text_ids[starts]
        states, _ = self.text.generative_states(text_ids, cross)
        where, targets = next_token_targets(labels)
        out = {"logits": self.text.logits(states[where]), "targets": targets}
        if contrastive:
            out["image_features"] = self.visual.pool(tokens)
            out["text_features"] = self.text.forward_contrastive(self._full_context(first_rows), pad_id=pad_id)
            out["logit_scale"] = self.logit_scale.exp()
            if self.logit_bias is not None:
                out["logit_bias"] = self.logit_bias
        return out

    def _full_context(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, L) padded on the right to the context length, as the tokenizer pads them."""
        missing = self.config.text.context_length - ids.shape[1]
        return F.pad(ids, (0, missing), value=self.pad_id) if missing > 0 else ids

    # ----------------------------------------------------------------- training helpers
    def lock(self, vision: bool = False, tubes: bool = False, text: bool = False) -> None:
        """Freeze parts for training (``requires_grad=False``); what is not named stays as it is.

        ``vision``: the whole video encoder (tubes, ViT, position tables, pooling head);
        ``tubes``: only the tokenizer: every tube including the image tube (the patch embedding);
        ``text``: the whole decoder (embeddings, blocks, vocabulary head). ``map_viz2txt_kv`` and
        ``logit_scale`` stay trainable.
        """
        parts: list[nn.Module] = []
        if vision:
            parts.append(self.visual)
        if tubes:
            parts += [self.visual.tubes, self.visual.trunk.patch_embed]
        if text:
            parts.append(self.text)
        for part in parts:
            part.requires_grad_(False)

    def unused_parameters(self, num_frames: int, contrastive: bool = True) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) that a training step on clips of ``num_frames`` frames never uses: the tubes
        too long for such a clip and, without the contrastive pass, the parameters only it uses (the
        visual pooling head ``ln_post`` / ``proj``, ``logit_scale``, ``logit_bias``; the text side
        shares every block with the generative pass). DDP needs them frozen or it waits for their
        gradients."""
        from mammut_video.model.tubes import active_tubes

        size = self.config.vision.image_size
        active = {t.name for t in active_tubes(self.visual.tube_specs, num_frames, size, size)}
        unused = {f"visual.tubes.{name}." for name in self.visual.tubes if name not in active}
        if not contrastive:
            unused |= {"visual.trunk.norm.", "visual.proj", "logit_scale", "logit_bias"}
        return [(n, p) for n, p in self.named_parameters() if n.startswith(tuple(unused))]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the ViT blocks (timm's ``checkpoint_seq``) and the decoder blocks in the backward
        pass instead of keeping their activations: less memory, about one more forward of compute."""
        self.visual.trunk.set_grad_checkpointing(enable)
        self.text.grad_checkpointing = enable

    def compile_inference(self, **compile_kwargs: Any) -> None:
        """Compile the inference hot paths with ``torch.compile`` (opt-in): the video encoder's
        ``forward_tokens`` and the decoder's cached pass (every generation step). The tokens stay the
        same in fp32; the first calls at each new shape pay the compilation (tens of seconds a shape
        for B-16 on a CPU). ``compile_kwargs`` go to ``torch.compile``; without any, the decoder's
        step on a CPU has its weights frozen in (faster, more memory, and they must not change
        afterwards: :meth:`TextDecoder.compile_steps`)."""
        # an instance attribute shadows the method, so every caller of forward_tokens (forward too) gets it
        self.visual.forward_tokens = torch.compile(self.visual.forward_tokens, **compile_kwargs)
        self.text.compile_steps(**compile_kwargs)

    # ----------------------------------------------------------------- generation
    @contextmanager
    def inference(self) -> Iterator[None]:
        """Eval mode (no dropout) and no autograd for the duration; the model's mode is restored after.

        Generation and ranking run inside it whatever mode the model is in (a model fresh from
        ``create_model`` is in training mode).
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def generate(self, video: torch.Tensor, prompts: list[list[int]], **gen_kwargs: Any) -> list[list[int]]:
        """video (B, C, T, H, W), one prompt (token ids) per clip -> new token ids per clip.

        gen_kwargs: ``max_new_tokens``, ``num_beams``, ``length_penalty``, ``use_cache``.
        """
        video = self.visual.checked_input(video)
        if len(prompts) != video.shape[0]:
            raise ConfigError(f"{video.shape[0]} clips but {len(prompts)} prompts")
        tok = self._text_tokenizer()
        with self.inference():
            kv = self.cross_kv(self.visual.forward_tokens(video))
            return generate(self.text, kv, prompts, eos_id=tok.eot_id, pad_id=tok.pad_id, **gen_kwargs)

    def caption(self, video: torch.Tensor, **gen_kwargs: Any) -> list[str]:
        """video (B, C, T, H, W) -> one caption per clip."""
        gen_kwargs.setdefault("max_new_tokens", 30)
        tok = self._text_tokenizer()
        video = self.visual.checked_input(video)
        out = self.generate(video, [[tok.sot_id] for _ in range(video.shape[0])], **gen_kwargs)
        return [tok.decode(ids).strip() for ids in out]

    def answer(self, video: torch.Tensor, questions: str | Sequence[str], **gen_kwargs: Any) -> list[str]:
        """video (B, C, T, H, W), one question per clip -> open-ended answers (QA prompt of ``mammut_video.text``).

        A single string is one question (for a batch of one clip).
        """
        from mammut_video.text.prompts import qa_prompt_ids

        questions = [questions] if isinstance(questions, str) else list(questions)
        video = self.visual.checked_input(video)
        if len(questions) != video.shape[0]:
            raise ConfigError(f"{video.shape[0]} clips but {len(questions)} questions")
        gen_kwargs.setdefault("max_new_tokens", 10)
        tok = self._text_tokenizer()
        out = self.generate(video, qa_prompt_ids(tok, questions, self.config.text.context_length), **gen_kwargs)
        return [tok.decode(ids).strip() for ids in out]

    def rank_answers(self, video: torch.Tensor, questions: str | Sequence[str], candidates: Sequence[str],
                     batch_size: int = 64, length_normalize: bool = False,
                     clip_index: Sequence[int] | None = None) -> torch.Tensor:
        """Score every candidate answer for every question by decoder likelihood.

        video (B, C, T, H, W); Q questions, question q being about clip ``clip_index[q]`` (default:
        clip q, so Q == B; a single string is one question); K candidates -> (Q, K) on the CPU:
        the summed log-probability of the candidate's tokens plus the final EOT after the QA prompt
        (divided by that token count when ``length_normalize``).

        Work is shared as far as it is exact: each clip goes through the video encoder ONCE and its
        cross-attention K/V are computed once and read in place by all its questions and
        candidates; each question's prompt runs once and every candidate reads its cache; the
        candidates' shared prefixes are fed once (:mod:`mammut_video.model.ranking`). Prompts go
        ``batch_size`` at a time, with about ``batch_size`` (question, prefix) positions per pass.
        """
        from mammut_video.model.ranking import AnswerTrie, score_answers
        from mammut_video.text.prompts import qa_prompt_ids

        questions = [questions] if isinstance(questions, str) else list(questions)  # not its characters
        candidates = [candidates] if isinstance(candidates, str) else list(candidates)
        video = self.visual.checked_input(video)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if not candidates:
            raise ConfigError("no candidate answers to rank")
        by_clip = group_by_clip(video.shape[0], len(questions), clip_index)
        with self.inference():
            tok = self._text_tokenizer()
            kv_clips = self.cross_kv(self.visual.forward_tokens(video))  # per cross block (B, H, N, hd)
            prompts = qa_prompt_ids(tok, questions, self.config.text.context_length)
            trie = AnswerTrie([tok.encode(c) + [tok.eot_id] for c in candidates])
            scores = torch.empty(len(questions), len(candidates))
            for c, clip_questions in by_clip.items():
                kv_clip = [(k[c: c + 1], v[c: c + 1]) for k, v in kv_clips]
                total, count = score_answers(self.text, kv_clip, [prompts[q] for q in clip_questions], trie,
                                             tok.pad_id, batch_size)
                scores[clip_questions] = total / count if length_normalize else total
            return scores


NESTED_CONFIGS = ("vision", "text")


def create_model(name_or_config: str | MammutVideoConfig | dict, **overrides: Any) -> MammutVideo:
    """Build a randomly initialised model from a preset name, a config or a config dict.

    ``overrides`` replace top-level config fields (``num_frames=16``, ``tokenizer={...}``); a dict
    given for ``vision`` or ``text`` is merged into that part of the config, so
    ``create_model("mammut-video-tiny", text={"layers": 2})`` keeps the preset's width, vocabulary
    and the rest (a ``tubes`` list replaces the preset's tubes as a whole).
    """
    if isinstance(name_or_config, str):
        config = get_preset(name_or_config)
    elif isinstance(name_or_config, dict):
        config = MammutVideoConfig.from_dict(name_or_config)
    else:
        config = MammutVideoConfig.from_dict(name_or_config.to_dict())
    if overrides:
        merged = config.to_dict()
        for key, value in overrides.items():
            nested = key in NESTED_CONFIGS and isinstance(value, dict)
            merged[key] = {**merged[key], **value} if nested else value
        config = MammutVideoConfig.from_dict(merged)
    return MammutVideo(config)
