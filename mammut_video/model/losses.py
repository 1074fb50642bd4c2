"""Training losses: softmax contrastive (CLIP), focal contrastive (MaMMUT), token cross-entropy.

Contrastive losses compare every video with every text of the batch; under torch.distributed
(initialised, world size > 1) the embeddings of all ranks are gathered first, as open_clip's
``gather_features(..., local_loss=False, gather_with_grad=False)``: other ranks' embeddings
enter as constants and gradients flow through the local shard, so each rank gets the exact
gradient of the global-batch loss with respect to its own embeddings.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mammut_video.errors import ConfigError

IGNORE_INDEX = -100
MAX_LOGIT_SCALE = 100.0


def gather_embeddings(video_emb: torch.Tensor, text_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' embeddings, (B_r, E) each -> (sum of B_r, E) each, rank order; identity when not distributed.

    Ranks may pass different B_r (a clip that failed to decode leaves a batch short). Only the
    local rows carry gradient.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return video_emb, text_emb
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [torch.zeros(1, dtype=torch.long, device=video_emb.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([video_emb.shape[0]], device=video_emb.device))
    longest = int(max(sizes))
    gathered = []
    for emb in (video_emb, text_emb):
        padded = F.pad(emb.detach(), (0, 0, 0, longest - emb.shape[0])).contiguous()
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        parts = [p[: int(n)] for p, n in zip(parts, sizes)]
        parts[rank] = emb
        gathered.append(torch.cat(parts, dim=0))
    return gathered[0], gathered[1]


def pair_logits(
    video_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Video-text similarity logits (N, N): logit_scale (clamped to 100) * cos + bias.

    ``video_emb``, ``text_emb``: (N, E), any norm (L2-normalised here). ``logit_scale`` is the
    inverse temperature itself, 1 / tau (what ``MammutVideo.forward`` and open_clip's models
    return: the exponential of the learnable log-space parameter, init 1 / 0.07). Row i = video i.
    """
    if video_emb.shape != text_emb.shape or video_emb.dim() != 2:
        raise ConfigError(f"video_emb and text_emb must both be (B, E), got {tuple(video_emb.shape)} and {tuple(text_emb.shape)}")
    scale = torch.as_tensor(logit_scale, dtype=video_emb.dtype, device=video_emb.device).clamp(max=MAX_LOGIT_SCALE)
    logits = scale * F.normalize(video_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    if logit_bias is not None:
        logits = logits + logit_bias
    return logits


def clip_loss(
    video_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Symmetric softmax InfoNCE (CLIP): mean of video->text and text->video cross-entropy.

    ``video_emb``, ``text_emb``: (B, E), pair i matches pair i. Returns a scalar.
    """
    video_emb, text_emb = gather_embeddings(video_emb, text_emb)
    logits = pair_logits(video_emb, text_emb, logit_scale, logit_bias)
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def focal_contrastive_loss(
    video_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
    gamma: float = 2.0,
    alpha: float | None = None,
) -> torch.Tensor:
    """Focal contrastive loss: a sigmoid focal loss over all B x B video-text pairs.

    MaMMUT (Kuo et al., arXiv 2303.16839, "focal contrastive loss") takes it from RO-ViT
    (Kim, Angelova, Kuo, "Region-Aware Pretraining for Open-Vocabulary Object Detection with
    Vision Transformers", CVPR 2023), which replaces the softmax cross-entropy of contrastive
    learning with the focal loss (Lin et al., 2017):

        L = -1/B * sum_i sum_j (1 - p_ij)^gamma * log(p_ij),
        p_ij = sigmoid(s_ij) if i == j else 1 - sigmoid(s_ij),   s_ij = v_i . l_j / tau,

    v, l the L2-normalised video and text embeddings and 1 / tau = ``logit_scale``. Every pair
    is an independent binary problem (positives on the diagonal), so the video->text and
    text->video directions give the same sum. ``alpha`` (RetinaNet's class weight: alpha on
    positives, 1 - alpha on negatives) is off by default, as in the formula above;
    ``logit_bias`` (SigLIP-style, e.g. -10) offsets the B^2 - B negatives at start. Under
    torch.distributed B is the global batch. Returns a scalar.

    Written from the equation above; not checked against a reference implementation.
    """
    video_emb, text_emb = gather_embeddings(video_emb, text_emb)
    logits = pair_logits(video_emb, text_emb, logit_scale, logit_bias)
    targets = torch.eye(logits.shape[0], dtype=logits.dtype, device=logits.device)
    nll = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # -log(p_ij), stable
    p_true = torch.exp(-nll)
    loss = (1 - p_true) ** gamma * nll
    if alpha is not None:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss.sum() / logits.shape[0]


def next_token_targets(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the next-token loss is taken: ``labels`` (B, L) -> (rows, cols) of the M predicting
    positions and the (M,) tokens they predict. Position i predicts ``labels[:, i + 1]`` (the
    shift convention of ``mammut_video.text``), so only positions before a supervised token count.
    """
    rows, cols = torch.nonzero(labels[:, 1:] != ignore_index, as_tuple=True)
    return (rows, cols), labels[:, 1:][rows, cols]


def caption_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                 reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy over the supervised tokens (mean, or "sum").

    Two layouts: ``logits`` (M, V) with ``labels`` (M,), the targets of those M positions (what
    ``MammutVideo.forward`` returns as ``logits`` / ``targets``: only scored positions); or the
    generative pass over every position, ``logits`` (B, L, V) with ``labels`` (B, L) as built by
    ``mammut_video.text.build_caption_batch`` / ``build_qa_batch`` (shifted here by
    :func:`next_token_targets`). A batch with no supervised token gives 0 (with grad).
    """
    if logits.dim() == 3 and labels.shape == logits.shape[:2]:
        where, labels = next_token_targets(labels, ignore_index)
        logits = logits[where]
    elif logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ConfigError(f"logits must be (M, V) with labels (M,), or (B, L, V) with labels (B, L); got "
                          f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    total = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")
    if reduction == "sum":
        return total
    return total / (labels != ignore_index).sum().clamp(min=1)


class MammutLoss(nn.Module):
    """Contrastive + captioning loss with open_clip's default weights (caption 2.0, contrastive 1.0).

    ``contrastive`` is "softmax" (:func:`clip_loss`) or "focal" (:func:`focal_contrastive_loss`).
    A part whose weight is 0 is skipped (its inputs may then be None), e.g. QA fine-tuning on
    answers only. Returns ``{"contrastive_loss", "caption_loss"}`` (unweighted, for logging;
    present when computed) and ``"loss"``, the weighted sum to back-propagate.
    """

    def __init__(
        self,
        caption_weight: float = 2.0,
        contrastive_weight: float = 1.0,
        contrastive: str = "softmax",
        focal_gamma: float = 2.0,
        focal_alpha: float | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if contrastive not in ("softmax", "focal"):
            raise ConfigError(f"contrastive must be 'softmax' or 'focal', got {contrastive!r}")
        if caption_weight == 0 and contrastive_weight == 0:
            raise ConfigError("caption_weight and contrastive_weight are both 0: nothing to train")
        self.caption_weight = caption_weight
        self.contrastive_weight = contrastive_weight
        self.contrastive = contrastive
        self.focal_gamma = focal_gamma
        self.focal_alpha = focal_alpha
        self.ignore_index = ignore_index

    def forward(
        self,
        video_emb: torch.Tensor | None,
        text_emb: torch.Tensor | None,
        logit_scale: torch.Tensor | float | None,
        logits: torch.Tensor | None,
        labels: torch.Tensor | None,
        logit_bias: torch.Tensor | float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Embeddings (B, E), ``logit_scale`` = 1 / tau, decoder ``logits`` and their ``labels`` in either
        layout of :func:`caption_loss` (``MammutVideo.forward``'s ``logits`` / ``targets``, or
        (B, L, V) / (B, L))."""
        out: dict[str, torch.Tensor] = {}
        total: torch.Tensor | float = 0.0
        if self.contrastive_weight:
            if video_emb is None or text_emb is None or logit_scale is None:
                raise ConfigError("contrastive_weight > 0 needs video_emb, text_emb and logit_scale")
            if self.contrastive == "softmax":
                part = clip_loss(video_emb, text_emb, logit_scale, logit_bias)
            else:
                part = focal_contrastive_loss(
                    video_emb, text_emb, logit_scale, logit_bias, gamma=self.focal_gamma, alpha=self.focal_alpha
                )
            out["contrastive_loss"] = part
            total = total + self.contrastive_weight * part
        if self.caption_weight:
            if logits is None or labels is None:
                raise ConfigError("caption_weight > 0 needs logits and labels")
            part = caption_loss(logits, labels, self.ignore_index)
            out["caption_loss"] = part
            total = total + self.caption_weight * part
        out["loss"] = total  # type: ignore[assignment]
        return out

    def extra_repr(self) -> str:
        return (
            f"contrastive={self.contrastive!r}, contrastive_weight={self.contrastive_weight}, "
            f"caption_weight={self.caption_weight}" + (f", focal_gamma={self.focal_gamma}" if self.contrastive == "focal" else "")
        )

