"""Text <-> video retrieval metrics from a similarity matrix: R@K, median and mean rank."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mammut_video.errors import ConfigError


def _gt_ranks(sim: torch.Tensor, gt: Sequence[Sequence[int]]) -> torch.Tensor:
    """1-based rank of the best-placed ground-truth column for each row.

    sim: (Q, N) scores of Q queries over N candidates; gt[q]: the correct column indices.
    Ties are counted pessimistically (a tie with a wrong candidate ranks below it).
    Returns (Q,) int64.
    """
    ranks = torch.empty(sim.shape[0], dtype=torch.long)
    for q, cols in enumerate(gt):
        if not cols:
            ranks[q] = sim.shape[1]
            continue
        row = sim[q]
        wrong = torch.ones_like(row, dtype=torch.bool)
        wrong[list(cols)] = False
        best = row[list(cols)].max()
        ranks[q] = 1 + int((row[wrong] >= best).sum())
    return ranks


def _summary(ranks: torch.Tensor, ks: Sequence[int]) -> dict:
    out = {f"R@{k}": 100.0 * float((ranks <= k).float().mean()) for k in ks}
    out["median_rank"] = float(np.median(ranks.numpy()))  # mean of the middle two, as CLIP4Clip
    out["mean_rank"] = float(ranks.float().mean())
    out["count"] = int(ranks.numel())
    return out


def retrieval_metrics(
    sim: torch.Tensor,
    text_to_video: Sequence[int] | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict:
    """Text->video and video->text retrieval metrics.

    sim: (num_texts, num_videos) similarity, text i against video j.
    text_to_video: (num_texts,) index of each text's video; default text i <-> video i.
    Video->text takes, for each video, the best rank among its texts (the usual protocol when a
    video has several captions). Returns ``{"text_to_video": {...}, "video_to_text": {...}}``
    each with R@k (percent), median_rank, mean_rank (1-based) and count.
    """
    sim = sim.detach().float().cpu()
    num_texts, num_videos = sim.shape
    if text_to_video is None:
        if num_texts != num_videos:
            raise ConfigError(f"similarity is {num_texts}x{num_videos}: pass text_to_video for a non-square matrix")
        text_to_video = list(range(num_texts))
    if len(text_to_video) != num_texts:
        raise ConfigError(f"text_to_video has {len(text_to_video)} entries for {num_texts} texts")
    t2v = _gt_ranks(sim, [[v] for v in text_to_video])
    video_texts: list[list[int]] = [[] for _ in range(num_videos)]
    for t, v in enumerate(text_to_video):
        video_texts[v].append(t)
    v2t = _gt_ranks(sim.T, video_texts)
    return {"text_to_video": _summary(t2v, ks), "video_to_text": _summary(v2t, ks)}
