"""Read a model's size off its weights, so ``convert`` needs no preset from the user.

Widths, depths, patch size, image size, MLP ratio, vocabulary and context length are all
visible in tensor shapes. Attention heads are not: they are taken as ``width // 64`` (true of
every ViT and CLIP / openMaMMUT text tower published with these layouts); pass ``--preset``
for anything else.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from mammut_video.checkpoint.files import CheckpointError, StateDict

HEAD_DIM = 64


def _count(state_dict: StateDict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state_dict if (m := rx.match(k))})


@dataclass
class VisionArch:
    """ViT body facts; ``timm_model`` is the timm family the weights were trained in."""

    width: int
    depth: int
    patch_size: int
    image_size: int
    mlp_ratio: float
    pre_norm: bool
    patch_bias: bool
    quick_gelu: bool = False

    @property
    def heads(self) -> int:
        return max(1, self.width // HEAD_DIM)

    def timm_spec(self) -> tuple[str, dict]:
        """(timm model name, kwargs) that build this body with random weights."""
        base = "vit_base_patch16_clip_224" if self.pre_norm else "vit_base_patch16_224"
        kwargs = {
            "embed_dim": self.width, "depth": self.depth, "num_heads": self.heads,
            "patch_size": self.patch_size, "img_size": self.image_size, "mlp_ratio": self.mlp_ratio,
        }
        if self.quick_gelu:
            kwargs["act_layer"] = "quick_gelu"
        # timm's two ViT families: CLIP towers (ln_pre, bias-free patch conv) and the original
        if self.pre_norm == self.patch_bias:
            raise CheckpointError(
                f"unsupported ViT variant (ln_pre/norm_pre: {self.pre_norm}, patch bias: {self.patch_bias})")
        return base, kwargs


@dataclass
class TextArch:
    """MaMMUT decoder facts."""

    vocab_size: int
    context_length: int
    width: int
    layers: int
    cross_attn_ratio: int
    mlp_ratio: float
    has_mlp: bool = True  # False: layers followed by a cross block have no MLP (fork ``has_mlp``)

    @property
    def heads(self) -> int:
        return max(1, self.width // HEAD_DIM)


@dataclass
class Arch:
    vision: VisionArch
    text: TextArch | None = None
    embed_dim: int | None = None
    notes: list[str] = field(default_factory=list)


def _grid_side(num_positions: int, source: str) -> int:
    side = math.isqrt(num_positions)
    if side * side != num_positions:
        raise CheckpointError(f"{source}: position table of {num_positions} patches is not a square grid")
    return side


def timm_vision_arch(sd: StateDict, source: str) -> VisionArch:
    """Facts of a timm VisionTransformer state dict (keys ``patch_embed.proj.weight``, ``blocks.N``)."""
    if "patch_embed.proj.weight" not in sd or "pos_embed" not in sd:
        raise CheckpointError(f"{source}: not a timm ViT state dict (no patch_embed.proj.weight / pos_embed)")
    if "cls_token" not in sd or "reg_token" in sd:
        raise CheckpointError(f"{source}: only ViTs with a class token and no register tokens are supported")
    w = sd["patch_embed.proj.weight"]
    if w.ndim != 4:
        raise CheckpointError(f"{source}: patch_embed.proj.weight has shape {tuple(w.shape)}, expected (D, 3, P, P)")
    width, patch = w.shape[0], w.shape[-1]
    n_pos = sd["pos_embed"].shape[1] - 1  # class token position at 0
    return VisionArch(
        width=width, depth=_count(sd, r"blocks\.(\d+)\."), patch_size=patch,
        image_size=_grid_side(n_pos, source) * patch,
        mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / width,
        pre_norm="norm_pre.weight" in sd, patch_bias="patch_embed.proj.bias" in sd,
    )


def clip_vision_arch(sd: StateDict, source: str, prefix: str = "visual.") -> VisionArch:
    """Facts of an open_clip / OpenAI-CLIP ``visual`` tower (``conv1``, ``transformer.resblocks``)."""
    key = f"{prefix}conv1.weight"
    if key not in sd:
        raise CheckpointError(f"{source}: no {key}; not an open_clip / OpenAI-CLIP ViT visual tower")
    w = sd[key]
    width, patch = w.shape[0], w.shape[-1]
    n_pos = sd[f"{prefix}positional_embedding"].shape[0] - 1
    return VisionArch(
        width=width, depth=_count(sd, rf"{re.escape(prefix)}transformer\.resblocks\.(\d+)\."),
        patch_size=patch, image_size=_grid_side(n_pos, source) * patch,
        mlp_ratio=sd[f"{prefix}transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
        pre_norm=f"{prefix}ln_pre.weight" in sd, patch_bias=f"{prefix}conv1.bias" in sd,
    )


def mammut_text_arch(sd: StateDict, source: str) -> TextArch:
    """Facts of an openMaMMUT ``text`` decoder (``text.resblocks``, ``text.cross_attn``)."""
    # layer 0 always precedes a cross block, so its MLP is missing exactly when the fork's
    # has_mlp was False; cross blocks always have one
    for key in ("text.token_embedding.weight", "text.positional_embedding", "text.resblocks.0.attn.in_proj_weight",
                "text.cross_attn.0.mlp.c_fc.weight"):
        if key not in sd:
            raise CheckpointError(f"{source}: no {key}; not an openMaMMUT checkpoint")
    vocab, width = sd["text.token_embedding.weight"].shape
    layers = _count(sd, r"text\.resblocks\.(\d+)\.")
    n_cross = _count(sd, r"text\.cross_attn\.(\d+)\.")
    if n_cross == 0 or layers % n_cross:
        raise CheckpointError(f"{source}: {n_cross} cross-attention blocks do not evenly interleave {layers} layers")
    return TextArch(
        vocab_size=vocab, context_length=sd["text.positional_embedding"].shape[0], width=width,
        layers=layers, cross_attn_ratio=layers // n_cross,
        mlp_ratio=sd["text.cross_attn.0.mlp.c_fc.weight"].shape[0] / width,
        has_mlp="text.resblocks.0.mlp.c_fc.weight" in sd,
    )
