"""Read a model's size off its weights, so ``convert`` needs no preset from the user.

Widths, depths, patch size, image size, MLP ratio, vocabulary and context length are all
visible in tensor shapes. Attention heads are not: by default they follow open_clip's own
model configs (``head_width`` 64, except the wide ViTs: ViT-H 1280/80, ViT-g 1408/88,
ViT-bigG 1664/104, ViT-e 1792/112, SO400M 1152/72 -> 16 heads each; timm's ViT-H/g/G agree);
``convert --vision-heads/--text-heads`` override that for anything else.

Missing structural keys are reported in the source file's own names, all at once
(:func:`require`), never as a bare ``KeyError``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from mammut_video.checkpoint.files import CheckpointError, StateDict

HEAD_DIM = 64
# width -> head width where open_clip's configs (model_configs/*.json ``head_width``) differ from 64
VISION_HEAD_WIDTH = {1152: 72, 1280: 80, 1408: 88, 1664: 104, 1792: 112}
TEXT_HEAD_WIDTH = {1152: 72}  # text towers: heads = width // 64 (ViT-bigG text 1280 -> 20), SO400M 1152 -> 16
_SHOW = 12


def default_heads(width: int, head_width: dict[int, int]) -> int:
    """open_clip's attention heads for a tower of this width (``width // head_width``)."""
    return max(1, width // head_width.get(width, HEAD_DIM))


def require(sd: StateDict, keys: Iterable[str], source: str, what: str) -> None:
    """Raise one :class:`CheckpointError` listing every key of ``keys`` (file names) not in ``sd``."""
    missing = [k for k in keys if k not in sd]
    if missing:
        shown = "\n".join(f"    {k}" for k in missing[:_SHOW])
        more = f"\n    ... and {len(missing) - _SHOW} more" if len(missing) > _SHOW else ""
        raise CheckpointError(f"{source}: incomplete {what}; missing keys ({len(missing)}):\n{shown}{more}")


def _shape(sd: StateDict, key: str, ndim: int, source: str, expected: str) -> tuple[int, ...]:
    shape = tuple(sd[key].shape)
    if len(shape) != ndim:
        raise CheckpointError(f"{source}: {key} has shape {shape}, expected {expected}")
    return shape


def _count(state_dict: StateDict, pattern: str) -> int:
    """Highest index + 1 of the numbered blocks matching ``pattern`` (a gap shows up as missing keys)."""
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in state_dict if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def check_heads(width: int, heads: int, what: str, source: str) -> None:
    """Raise :class:`CheckpointError` unless ``heads`` divides ``width``."""
    if heads < 1 or width % heads:
        raise CheckpointError(f"{source}: {what} width {width} is not divisible by {heads} attention heads")


@dataclass
class VisionArch:
    """ViT body facts. ``num_heads``: given by the user (None: open_clip's default for the width)."""

    width: int
    depth: int
    patch_size: int
    image_size: int
    mlp_ratio: float
    pre_norm: bool
    patch_bias: bool
    quick_gelu: bool = False
    num_heads: int | None = None

    @property
    def heads(self) -> int:
        return self.num_heads or default_heads(self.width, VISION_HEAD_WIDTH)

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
    """MaMMUT decoder facts (from the weights) and its behaviour (from the user: not in the weights).

    ``layout``: ``"fork"`` (LAION open_clip_mammut, vocab head ``text.text_projection``) or
    ``"upstream"`` (open_clip's MultimodalDecoder, vocab head ``text.lm_head``).
    """

    vocab_size: int
    context_length: int
    width: int
    layers: int
    cross_attn_ratio: int
    mlp_ratio: float
    has_mlp: bool = True  # False: layers followed by a cross block have no MLP (fork ``has_mlp``)
    layout: str = "fork"
    num_heads: int | None = None
    quick_gelu: bool = False
    pooling: str = "avg_all"
    pad_mask: bool = False

    @property
    def heads(self) -> int:
        return self.num_heads or default_heads(self.width, TEXT_HEAD_WIDTH)


@dataclass
class Arch:
    vision: VisionArch
    text: TextArch | None = None
    embed_dim: int | None = None
    logit_bias: float | None = None  # the source's logit_bias (None: it has none)
    notes: list[str] = field(default_factory=list)


def _grid_side(num_positions: int, source: str) -> int:
    side = math.isqrt(max(num_positions, 0))
    if num_positions < 1 or side * side != num_positions:
        raise CheckpointError(f"{source}: position table of {num_positions} patches is not a square grid")
    return side


def timm_vision_arch(sd: StateDict, source: str) -> VisionArch:
    """Facts of a timm VisionTransformer state dict (keys ``patch_embed.proj.weight``, ``blocks.N``)."""
    if "patch_embed.proj.weight" not in sd or "pos_embed" not in sd:
        raise CheckpointError(f"{source}: not a timm ViT state dict (no patch_embed.proj.weight / pos_embed)")
    if "cls_token" not in sd or "reg_token" in sd:
        raise CheckpointError(f"{source}: only ViTs with a class token and no register tokens are supported")
    require(sd, ["blocks.0.mlp.fc1.weight"], source, "timm ViT state dict")
    width, _, _, patch = _shape(sd, "patch_embed.proj.weight", 4, source, "(D, 3, P, P)")
    n_pos = _shape(sd, "pos_embed", 3, source, "(1, 1 + N, D)")[1] - 1  # class token position at 0
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
    require(sd, [f"{prefix}{k}" for k in ("class_embedding", "positional_embedding",
                                           "transformer.resblocks.0.mlp.c_fc.weight")],
            source, "open_clip visual tower")
    width, _, _, patch = _shape(sd, key, 4, source, "(D, 3, P, P)")
    n_pos = _shape(sd, f"{prefix}positional_embedding", 2, source, "(1 + N, D)")[0] - 1
    return VisionArch(
        width=width, depth=_count(sd, rf"{re.escape(prefix)}transformer\.resblocks\.(\d+)\."),
        patch_size=patch, image_size=_grid_side(n_pos, source) * patch,
        mlp_ratio=sd[f"{prefix}transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
        pre_norm=f"{prefix}ln_pre.weight" in sd, patch_bias=f"{prefix}conv1.bias" in sd,
    )


def _upstream_ratio(layers: int, n_cross: int, source: str) -> int:
    """open_clip's MultimodalDecoder: a cross block after layer i when ``i % ratio == 0``, so
    ``ceil(layers / ratio)`` blocks; several ratios can give the same count."""
    fits = [r for r in range(1, layers + 1) if -(-layers // r) == n_cross]
    if not fits:
        raise CheckpointError(f"{source}: {n_cross} cross-attention blocks cannot interleave {layers} layers")
    if len(fits) == 1:
        return _given_ratio(layers, n_cross, fits[0], source)
    raise CheckpointError(
        f"{source}: {n_cross} cross-attention blocks over {layers} layers fit cross_attn_ratio "
        f"{' or '.join(map(str, fits))} (open_clip layout); pass --cross-attn-ratio to say which")


def _given_ratio(layers: int, n_cross: int, ratio: int, source: str) -> int:
    if ratio < 1 or layers % ratio:
        raise CheckpointError(f"{source}: cross_attn_ratio {ratio} does not divide {layers} layers; "
                              "mammut-video's decoder needs layers % cross_attn_ratio == 0 (not supported)")
    if layers // ratio != n_cross:
        raise CheckpointError(f"{source}: cross_attn_ratio {ratio} means {layers // ratio} cross-attention blocks "
                              f"over {layers} layers; the weights have {n_cross}")
    return ratio


def mammut_text_arch(sd: StateDict, source: str, cross_attn_ratio: int | None = None) -> TextArch:
    """Facts of an openMaMMUT ``text`` decoder (``text.resblocks``, ``text.cross_attn``)."""
    # layer 0 always precedes a cross block, so its MLP is missing exactly when the fork's
    # has_mlp was False; cross blocks always have one
    require(sd, ("text.token_embedding.weight", "text.positional_embedding", "text.resblocks.0.attn.in_proj_weight",
                 "text.cross_attn.0.mlp.c_fc.weight", "text.ln_final.weight"), source, "openMaMMUT text decoder")
    vocab, width = _shape(sd, "text.token_embedding.weight", 2, source, "(vocab, width)")
    layers = _count(sd, r"text\.resblocks\.(\d+)\.")
    n_cross = _count(sd, r"text\.cross_attn\.(\d+)\.")
    layout = "upstream" if "text.lm_head" in sd else "fork"
    if cross_attn_ratio is not None:
        ratio = _given_ratio(layers, n_cross, cross_attn_ratio, source)
    elif layout == "upstream":
        ratio = _upstream_ratio(layers, n_cross, source)
    elif n_cross == 0 or layers % n_cross:  # the fork: layers // ratio blocks, one every layers // n_cross
        raise CheckpointError(f"{source}: {n_cross} cross-attention blocks do not evenly interleave {layers} layers")
    else:
        ratio = layers // n_cross
    return TextArch(
        vocab_size=vocab, context_length=_shape(sd, "text.positional_embedding", 2, source, "(context, width)")[0],
        width=width, layers=layers, cross_attn_ratio=ratio,
        mlp_ratio=sd["text.cross_attn.0.mlp.c_fc.weight"].shape[0] / width,
        has_mlp="text.resblocks.0.mlp.c_fc.weight" in sd, layout=layout,
    )
