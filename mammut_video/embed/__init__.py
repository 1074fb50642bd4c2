"""Embeddings of a folder of videos, and search over them.

    from mammut_video.embed import EmbedConfig, EmbeddingIndex, embed_folder
    summary = embed_folder(EmbedConfig("videos/", out="emb/", checkpoint="ckpt/", clip_seconds=10))
    print(summary.line())
    hits = EmbeddingIndex("emb/").search("a man is cooking", k=5)

- :mod:`.inputs`: the inputs of a folder or list file, and the windows of a video.
- :mod:`.store`: self-describing shard files (a shard and its index rows in one atomic rename),
  ``index.jsonl`` / ``errors.jsonl`` merged at the end of a run.
- :mod:`.run`: ``embed_folder(config)`` on the sharded resumable loop of ``mammut_video.runtime``.
- :mod:`.index`: ``EmbeddingIndex``: chunked, memory-mapped top-k search; text, video or vector queries.
- :mod:`.html`: a search result as a self-contained page of frame strips.

Names load lazily so that the command line's ``--help`` does not pull in torch.
"""

from __future__ import annotations

from mammut_video._lazy import lazy_exports

_EXPORTS = {
    "EmbedConfig": ".config", "EmbedSummary": ".config",
    "embed_folder": ".run",
    "EmbeddingIndex": ".index", "SearchHit": ".index", "EmbeddingIndexError": ".index",
    "write_results_html": ".html",
    "list_inputs": ".inputs", "VideoInput": ".inputs", "WindowPlan": ".inputs", "InputListError": ".inputs",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
