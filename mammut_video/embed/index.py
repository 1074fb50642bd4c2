"""``EmbeddingIndex(OUT).search(query, k)``: the nearest embeddings of a folder written by ``embed``.

    index = mv.EmbeddingIndex("emb/")
    for hit in index.search("a man is cooking", k=5):
        print(hit.rank, f"{hit.score:.3f}", hit.path, hit.start, hit.end)
    index.search_video("query.mp4", k=5)        # video to video
    index.search(vector, k=5)                   # any (E,) vector

Scores are cosine similarities (every stored embedding is L2-normalised, and so is the query).
The shards are read memory-mapped, ``chunk_rows`` rows at a time, keeping only the best ``k``
so far: memory stays bounded whatever the number of rows. Text and video queries are encoded by
the model recorded in the folder's ``settings.json`` (loaded on first use), so queries and
videos come from the same model; another checkpoint is refused unless its embedding width
matches and ``force`` is given.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mammut_video.embed.inputs import resolve_name
from mammut_video.embed.run import KIND, load_embedding_model
from mammut_video.embed.store import SHARDS_DIR, iter_chunks, read_row, shard_paths, shard_size
from mammut_video.errors import ConfigError, MammutVideoError
from mammut_video.runtime.rundir import SETTINGS_FILE, read_settings

log = logging.getLogger(__name__)

CHUNK_ROWS = 16384


class EmbeddingIndexError(MammutVideoError):
    """An embedding folder that cannot be searched as asked (not one, empty, another model)."""


@dataclass
class SearchHit:
    """One result: ``rank`` (1 = best), ``score`` (cosine similarity), the video's ``path`` as stored
    (relative to the embedded folder, or as the list wrote it) and ``file`` (where it is read from),
    the window ``start`` / ``end`` in seconds, and the whole index ``record`` (shard, row, window,
    duration, size, mtime, ...)."""

    rank: int
    score: float
    path: str
    file: Path
    start: float | None
    end: float | None
    record: dict = field(repr=False)

    @property
    def whole(self) -> bool:
        """Whether the row embeds a whole video (not a window, nor a segment a list gave)."""
        return self.record.get("windows") == 1 and self.record.get("segment") is None

    def span(self) -> str:
        """``0:05.0 - 0:10.0`` (the window or segment), or ``whole video (12.3 s)``."""
        if self.whole:
            return f"whole video ({self.record.get('duration') or 0:.1f} s)"
        return f"{format_time(self.start or 0.0)} - {format_time(self.end or 0.0)}"

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "score": round(self.score, 6), **self.record, "file": str(self.file)}


def format_time(seconds: float) -> str:
    """``83.5`` -> ``1:23.5``; ``3723`` -> ``1:02:03.0``."""
    minutes, sec = divmod(max(seconds, 0.0), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{sec:04.1f}" if hours else f"{minutes}:{sec:04.1f}"


class EmbeddingIndex:
    """The embeddings in ``out_dir`` (written by ``mammut-video embed`` / ``embed_folder``).

    ``checkpoint``: encode queries with this checkpoint instead of the recorded model; refused
    unless its embedding width matches and ``force`` is true (the two models' spaces differ).
    ``device``: where queries are encoded (default cpu: one query is fast there).
    """

    def __init__(self, out_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                 force: bool = False, device: str = "cpu", chunk_rows: int = CHUNK_ROWS) -> None:
        self.out_dir = Path(out_dir)
        self.settings = read_index_settings(self.out_dir)
        self.shards = shard_paths(self.out_dir)
        if not self.shards:
            raise EmbeddingIndexError(f"{self.out_dir} holds no embeddings yet (no shard in "
                                      f"{self.out_dir / SHARDS_DIR}): run `mammut-video embed` into it first")
        self.identity = query_model(self.settings, checkpoint, force)
        self.device = torch.device(device)
        self.chunk_rows = chunk_rows
        self._model: Any = None
        self._warned = False  # text_embedding_untrained() said once

    @property
    def width(self) -> int:
        """Embedding width E."""
        return int(self.settings["embed_dim"])

    def __len__(self) -> int:
        return sum(shard_size(p)[0] for p in self.shards)

    @property
    def model(self) -> Any:
        """The model that encodes queries (loaded on first use)."""
        if self._model is None:
            self._model = load_embedding_model(self.identity, self.device)
        return self._model

    def text_embedding_untrained(self) -> bool:
        """Whether the query model's provenance says its text embedding was never trained (a decoder
        imported fresh, or fine-tuned from random weights without the contrastive pass): text queries
        then rank at random."""
        from mammut_video.checkpoint.pretrained import text_embedding_trained

        return text_embedding_trained(getattr(self.model, "provenance", None) or {}) is False

    def encode_text(self, text: str) -> torch.Tensor:
        """The contrastive text embedding of ``text``: float32 (E,), L2-normalised."""
        if not self._warned and self.text_embedding_untrained():
            self._warned = True
            log.warning("checkpoint %s: its text embedding was never trained (a decoder imported fresh, or "
                        "fine-tuned without --contrastive-weight), so text queries rank at random; video queries "
                        "still work", self.identity.get("checkpoint"))
        with torch.inference_mode():
            return self.model.encode_text([text], normalize=True)[0].float().cpu()

    def encode_video(self, path: str | os.PathLike) -> torch.Tensor:
        """The embedding of a whole video file, sampled as the index was (its ``frames``): float32 (E,).

        Raises :class:`~mammut_video.video.VideoDecodeError` when the file cannot be read."""
        from mammut_video.video import read_clip

        clip = read_clip(path, int(self.settings["frames"]))
        with torch.inference_mode():
            video = self.model.preprocess(clip)[None].to(self.device)
            return self.model.encode_video(video, normalize=True).embedding[0].float().cpu()

    def search(self, query: str | torch.Tensor | np.ndarray, k: int = 10) -> list[SearchHit]:
        """The ``k`` rows nearest ``query``: a text (encoded by the contrastive text pass) or a vector (E,)."""
        vector = self.encode_text(query) if isinstance(query, str) else torch.as_tensor(query).float().flatten()
        return self.nearest(vector, k)

    def search_video(self, path: str | os.PathLike, k: int = 10) -> list[SearchHit]:
        """The ``k`` rows nearest the video file ``path`` (video-to-video search)."""
        return self.nearest(self.encode_video(path), k)

    def nearest(self, vector: torch.Tensor, k: int) -> list[SearchHit]:
        """The ``k`` rows with the highest cosine similarity to ``vector`` (E,), best first."""
        if vector.numel() != self.width:
            raise ConfigError(f"query vector has {vector.numel()} values; the embeddings in {self.out_dir} have "
                              f"{self.width}")
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        query = F.normalize(vector.float(), dim=0)
        scores, where = top_k(self.shards, query, k, self.chunk_rows)
        return self._hits(scores, where)

    def resolve(self, hit: SearchHit | str) -> Path:
        """Where the video of ``hit`` (or a stored path) is read from."""
        name = hit.path if isinstance(hit, SearchHit) else hit
        return resolve_name(Path(self.settings["root"]), name)

    def _hits(self, scores: list[float], where: list[tuple[int, int]]) -> list[SearchHit]:
        hits = []
        for rank, (score, (shard, row)) in enumerate(zip(scores, where), start=1):
            record = {**read_row(self.shards[shard], row), "shard": f"{SHARDS_DIR}/{self.shards[shard].name}",
                      "row": row}
            hits.append(SearchHit(rank, score, record["path"], self.resolve(record["path"]),
                                  record.get("start"), record.get("end"), record))
        return hits


# bound on |float16 score - exact score| for unit vectors: the query rounded to float16 (2^-11 of
# sum |x_i q_i| <= 1) plus the score rounded to float16 (2^-12 for |score| <= 1), with float32
# accumulation (checked once by _half_accumulates_in_float32); with margin
HALF_TOLERANCE = 1e-3


@functools.cache
def _half_accumulates_in_float32() -> bool:
    """Whether a float16 matrix-vector product on this CPU sums in float32 (4096 ones give 4096, not 2048)."""
    ones = torch.ones(1, 4096, dtype=torch.float16)
    return float((ones @ torch.ones(4096, dtype=torch.float16))[0]) == 4096.0


def chunk_scores(chunk: torch.Tensor, query: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact float32 scores of the rows of ``chunk`` (n, E) that may score at least ``floor``: (rows, scores).

    A float16 chunk is scored first in float16 (fast: no float32 copy of the chunk); only rows within
    :data:`HALF_TOLERANCE` of the best candidates are scored again in float32, so the result is the
    same as scoring every row in float32.
    """
    if chunk.dtype != torch.float16 or not _half_accumulates_in_float32():
        scores = chunk.float() @ query
        rows = torch.nonzero(scores >= floor).flatten()
        return rows, scores[rows]
    rough = (chunk @ query.half()).float()
    rows = torch.nonzero(rough + HALF_TOLERANCE >= floor).flatten()
    return rows, chunk[rows].float() @ query


def top_k(shards: list[Path], query: torch.Tensor, k: int,
          chunk_rows: int) -> tuple[list[float], list[tuple[int, int]]]:
    """Scores and ``(shard index, row)`` of the ``k`` best rows, reading ``chunk_rows`` rows at a time.

    query: float32 (E,). Each chunk (n, E) is scored (:func:`chunk_scores`) against the k-th best
    score so far, and its best rows join the best so far. Ties keep the earlier row.
    """
    best = torch.empty(0)
    ids = torch.empty(0, 2, dtype=torch.long)
    for chunk in iter_chunks(shards, chunk_rows):
        floor = float(best[-1]) if len(best) == k else -math.inf
        if floor == -math.inf and len(chunk.embeddings) >= k:  # this chunk's k-th best bounds the rest
            rough = (chunk.embeddings @ query.to(chunk.embeddings.dtype)).float()
            floor = float(torch.topk(rough, k).values[-1]) - HALF_TOLERANCE
        rows, scores = chunk_scores(chunk.embeddings, query, floor)
        best = torch.cat([best, scores])
        ids = torch.cat([ids, torch.stack([chunk.shard[rows], chunk.row[rows]], dim=1)])
        keep = _stable_top(best, ids, k)
        best, ids = best[keep], ids[keep]
    return best.tolist(), [tuple(r) for r in ids.tolist()]


def _stable_top(scores: torch.Tensor, ids: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` best scores, best first, ties broken by (shard, row): the same order on every run."""
    order = np.lexsort((ids[:, 1].numpy(), ids[:, 0].numpy(), -scores.numpy()))
    return torch.from_numpy(order[:k])


def read_index_settings(out_dir: Path) -> dict:
    """``settings.json`` of an embedding folder; :class:`EmbeddingIndexError` for anything else."""
    if not out_dir.exists():
        raise EmbeddingIndexError(f"{out_dir} not found (expected a folder written by `mammut-video embed`)")
    if not out_dir.is_dir():
        raise EmbeddingIndexError(f"{out_dir} is a file, not a folder written by `mammut-video embed`")
    settings = read_settings(out_dir)
    if settings is None or settings.get("kind") != KIND:
        what = "no settings.json" if settings is None else f"its {SETTINGS_FILE} is from another command"
        raise EmbeddingIndexError(f"{out_dir} is not a folder written by `mammut-video embed` ({what})")
    return settings


def query_model(settings: dict, checkpoint: str | os.PathLike | None, force: bool) -> dict:
    """The identity of the model that encodes queries (see ``embed.run.model_identity``).

    The recorded one by default (refused when its files changed, unless ``force``); ``checkpoint``
    only when its embedding width matches and ``force`` is given.
    """
    from mammut_video.checkpoint import read_checkpoint_config
    from mammut_video.eval.run import checkpoint_identity

    recorded = {k: settings[k] for k in ("checkpoint", "checkpoint_files", "preset", "seed") if k in settings}
    what = recorded.get("checkpoint") or f"preset {recorded.get('preset')}"
    if checkpoint is None:
        if "checkpoint" not in recorded:
            return recorded
        path = Path(recorded["checkpoint"])
        if not path.is_dir():
            raise EmbeddingIndexError(f"the checkpoint these embeddings were made with, {path}, is not there any "
                                      "more: pass --checkpoint DIR (the same model, moved) and --force")
        if checkpoint_identity(path) != {"checkpoint": str(path), "checkpoint_files": recorded["checkpoint_files"]}:
            if not force:
                raise EmbeddingIndexError(f"the files of checkpoint {path} changed since these embeddings were "
                                          "made (another model's queries would not match them): embed again, or "
                                          "pass --force")
            log.warning("checkpoint %s changed since the embeddings were made; searching anyway (--force)", path)
        return recorded
    path = Path(checkpoint).expanduser().resolve()
    width = int(read_checkpoint_config(path)["model"]["embed_dim"])
    if width != int(settings["embed_dim"]):
        raise EmbeddingIndexError(f"--checkpoint {path} makes {width}-d embeddings; the ones in this folder are "
                                  f"{settings['embed_dim']}-d (made with {what}): they cannot be compared")
    identity = checkpoint_identity(path)
    if identity != recorded and not force:
        raise EmbeddingIndexError(f"these embeddings were made with {what}, not --checkpoint {path}: another "
                                  "model's queries would not match them; pass --force to search anyway")
    return identity
