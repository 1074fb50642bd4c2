"""AdamW with parameter groups, and linear warm-up then cosine decay (by steps or by time).

No weight decay on what should not shrink towards zero (open_clip's and timm's rules together):
norms and biases (every parameter of fewer than 2 dimensions, tubes' biases included), position
tables (the ViT's ``pos_embed`` and ``cls_token`` as timm's ``no_weight_decay()`` names them, the
temporal table, the decoder's positional embedding), ``logit_scale`` and ``logit_bias``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

NO_DECAY_NAMES = ("visual.time_embed", "text.positional_embedding", "logit_scale", "logit_bias")


def no_weight_decay(model: nn.Module) -> set[str]:
    """Names of the trainable parameters kept out of weight decay."""
    trunk_names = {f"visual.trunk.{n}" for n in model.visual.trunk.no_weight_decay()}
    return {n for n, p in model.named_parameters()
            if p.requires_grad and (p.ndim < 2 or n in trunk_names or n in NO_DECAY_NAMES)}


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: a decayed group and an undecayed one (:func:`no_weight_decay`)."""
    skip = no_weight_decay(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if n not in skip], "weight_decay": weight_decay},
              {"params": [p for n, p in named if n in skip], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.98), eps=1e-6)


class WarmupCosine:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine from 1 to 0.

    Progress after warm-up is ``(step - warmup) / (total - warmup)``, or, for a run bounded only by
    time (``total`` None), ``time_fraction``: the share of the time budget used, set by the loop
    before each step. A callable object, so ``LambdaLR.state_dict()`` saves it.
    """

    def __init__(self, warmup: int, total: int | None) -> None:
        self.warmup, self.total = warmup, total
        self.time_fraction = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.total is None:
            progress = self.time_fraction
        else:
            progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def build_schedule(optimizer: torch.optim.Optimizer, warmup: int,
                   total: int | None) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + cosine (:class:`WarmupCosine`); ``warmup`` is cut to half of ``total`` on short runs."""
    if total is not None:
        warmup = min(warmup, total // 2)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total))
