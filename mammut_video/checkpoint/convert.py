"""Import weights from timm, open_clip / OpenAI-CLIP and openMaMMUT into a mammut-video model.

Every importer does the same four things: read the file (:func:`read_state_dict`), read the
model size off its shapes (:mod:`~mammut_video.checkpoint.arch`, or check the user's preset
against them), rename the keys into our layout, and load them all-or-nothing. What the
source does not hold (a timm ViT has no decoder) keeps the model's fresh initialisation, and
the result says so in ``model.provenance["fresh"]``. Video tubes are always re-inflated from
the imported patch embedding.

Key renames (ours on the right):

- timm ViT: ``*`` -> ``visual.trunk.*`` (``head.*`` dropped: the trunk has no classifier).
- open_clip visual tower: ``visual.conv1`` -> ``visual.trunk.patch_embed.proj``,
  ``class_embedding`` -> ``cls_token``, ``positional_embedding`` -> ``pos_embed``, ``ln_pre`` ->
  ``norm_pre``, ``transformer.resblocks.N`` -> ``blocks.N`` (``in_proj_`` -> ``qkv.``,
  ``c_fc``/``c_proj`` -> ``fc1``/``fc2``), ``ln_post`` -> ``visual.trunk.norm``; ``visual.proj``
  stays. This is timm's own ``_convert_openai_clip`` via ``checkpoint_filter_fn``.
- openMaMMUT: the visual tower as above; ``text.*``, ``map_viz2txt_kv``, ``logit_scale``,
  ``logit_bias`` keep their names (a ``[1]``-shaped scale / bias, open_clip's
  ``nonscalar_logit_scale``, becomes the scalar), except the LAION fork's vocab head
  ``text.text_projection`` which becomes ``text.lm_head`` (same (width, vocab) matrix).

Two openMaMMUT layouts, told apart by the vocab head:

- LAION fork (``open_clip_mammut``): ``text.text_projection`` (width, vocab); a cross block
  every ``layers // n_cross`` layers; contrastive pass unmasked, mean over all 77 positions.
- upstream open_clip ``MultimodalDecoder`` (``mammut_model.py``): ``text.lm_head`` an
  ``nn.Parameter`` (width, vocab), no bias; a cross block after layer i when
  ``i % cross_attn_ratio == 0`` (``ceil(layers / ratio)`` blocks). With ``proj_type='linear'`` it
  also has ``text.text_projection`` (width, embed_dim), a contrastive projection mammut-video does
  not have: rejected. Its ``MultimodalCfg`` defaults are ``pool_type='avg'``, ``use_pad_mask=True``
  (pads out of the mean and the attention keys) while the released openMaMMUT weights need
  ``'avg_all'`` / ``False``, so the import defaults to the latter and takes the former on request
  (``text_pooling="avg"``, ``text_pad_mask=True``).

Error messages name keys as the source file does (:func:`clip_source_name`).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mammut_video.checkpoint.arch import (
    TEXT_HEAD_WIDTH,
    Arch,
    TextArch,
    check_heads,
    clip_vision_arch,
    default_heads,
    mammut_text_arch,
    require,
    timm_vision_arch,
)
from mammut_video.checkpoint.files import CheckpointError, StateDict, read_state_dict
from mammut_video.checkpoint.pretrained import now_utc
from mammut_video.checkpoint.strict import check_state_dict
from mammut_video.errors import MammutVideoError
from mammut_video.video.normalization import CLIP_MEAN, CLIP_STD

SOURCES = ("timm", "open_clip", "openmammut")

# open_clip visual-tower keys that belong to the ViT body (CoCa's attentional poolers do not)
_CLIP_BODY = ("conv1.", "class_embedding", "positional_embedding", "ln_pre.", "transformer.")


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- key names

_CLIP_TOP = {"cls_token": "class_embedding", "pos_embed": "positional_embedding"}
_CLIP_PREFIX = (("patch_embed.proj.", "conv1."), ("norm_pre.", "ln_pre."), ("norm.", "ln_post."))
_CLIP_BLOCK = (("norm1.", "ln_1."), ("norm2.", "ln_2."), ("attn.qkv.weight", "attn.in_proj_weight"),
               ("attn.qkv.bias", "attn.in_proj_bias"), ("attn.proj.", "attn.out_proj."),
               ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj."))


def clip_source_name(key: str) -> str:
    """Our ``visual.trunk.*`` key -> its open_clip ``visual.*`` name (the inverse of timm's renames)."""
    if not key.startswith("visual.trunk."):
        return key
    k = key[len("visual.trunk."):]
    if k in _CLIP_TOP:
        return f"visual.{_CLIP_TOP[k]}"
    if m := re.fullmatch(r"blocks\.(\d+)\.(.*)", k):
        rest = m.group(2)
        for ours, theirs in _CLIP_BLOCK:
            if rest.startswith(ours):
                rest = theirs + rest[len(ours):]
                break
        return f"visual.transformer.resblocks.{m.group(1)}.{rest}"
    for ours, theirs in _CLIP_PREFIX:
        if k.startswith(ours):
            return f"visual.{theirs}{k[len(ours):]}"
    return f"visual.{k}"


def _timm_source_name(key: str) -> str:
    return key[len("visual.trunk."):] if key.startswith("visual.trunk.") else key


# ----------------------------------------------------------------------------- configs


def _arch_of_model(model: nn.Module) -> Arch:
    """The same facts, read off a freshly built model (used to check a preset)."""
    sd = model.state_dict()
    trunk = {k[len("visual.trunk."):]: v for k, v in sd.items() if k.startswith("visual.trunk.")}
    vision = timm_vision_arch(trunk, "preset")
    cfg = model.config
    vision.quick_gelu = "quick_gelu" in f"{cfg.vision.timm_model} {cfg.vision.timm_kwargs.get('act_layer', '')}"
    vision.num_heads = model.visual.trunk.blocks[0].attn.num_heads
    text = mammut_text_arch(sd, "preset", cross_attn_ratio=cfg.text.cross_attn_ratio)
    text.num_heads, text.quick_gelu = cfg.text.heads, cfg.text.act == "quick_gelu"
    return Arch(vision=vision, text=text, embed_dim=sd["visual.proj"].shape[1])


def _compare(arch: Arch, model_arch: Arch, preset: str, source: str, checks: tuple[str, ...]) -> list[str]:
    notes, problems = [], []
    v, m = arch.vision, model_arch.vision
    pairs: list[tuple[str, Any, Any]] = [
        ("vision width", v.width, m.width), ("vision layers", v.depth, m.depth),
        ("patch size", v.patch_size, m.patch_size), ("vision mlp ratio", v.mlp_ratio, m.mlp_ratio),
        ("ln_pre / norm_pre", v.pre_norm, m.pre_norm), ("patch bias", v.patch_bias, m.patch_bias),
        ("QuickGELU activation", v.quick_gelu, m.quick_gelu),
    ]
    if v.num_heads is not None:  # heads are not in the weights: only a user's explicit count can disagree
        pairs.append(("vision attention heads", v.num_heads, m.heads))
    if "text" in checks and arch.text is not None:
        t, mt = arch.text, model_arch.text
        pairs += [
            ("text width", t.width, mt.width), ("text layers", t.layers, mt.layers),
            ("vocab size", t.vocab_size, mt.vocab_size), ("context length", t.context_length, mt.context_length),
            ("cross_attn_ratio", t.cross_attn_ratio, mt.cross_attn_ratio), ("text mlp ratio", t.mlp_ratio, mt.mlp_ratio),
            ("text has_mlp (MLP in layers before a cross block)", t.has_mlp, mt.has_mlp),
            ("text QuickGELU activation", t.quick_gelu, mt.quick_gelu),
        ]
        if t.num_heads is not None:
            pairs.append(("text attention heads", t.num_heads, mt.heads))
    if "embed" in checks and arch.embed_dim is not None:
        pairs.append(("embed dim", arch.embed_dim, model_arch.embed_dim))
    for name, got, want in pairs:
        if got != want:
            problems.append(f"  {name}: weights {got}, preset {want}")
    if problems:
        raise CheckpointError(
            f"{source}: preset {preset!r} does not match the weights; omit --preset to infer the size "
            "from the weights:\n" + "\n".join(problems))
    if v.image_size != m.image_size:
        notes.append(f"position table resampled from {v.image_size}px to the preset's {m.image_size}px")
    return notes


TIME_TABLE_NOTE = "visual.time_embed (temporal positions, zero: videos start with the image positions)"


def _fresh_heads(width: int) -> int:
    """Heads for a freshly initialised decoder: open_clip's default, lowered until it divides ``width``."""
    heads = default_heads(width, TEXT_HEAD_WIDTH)
    while width % heads:
        heads -= 1
    return heads


def _text_config(t: TextArch, source: str):
    from mammut_video.model.config import TextConfig

    check_heads(t.width, t.heads, "text", source)
    return TextConfig(vocab_size=t.vocab_size, context_length=t.context_length, width=t.width, heads=t.heads,
                      layers=t.layers, mlp_ratio=t.mlp_ratio, cross_attn_ratio=t.cross_attn_ratio,
                      has_mlp=t.has_mlp, act="quick_gelu" if t.quick_gelu else "gelu",
                      pooling=t.pooling, pad_mask=t.pad_mask)


def _inferred_config(arch: Arch, kind: str, source: str = "weights"):
    """A config for exactly the size the weights have (tube table scaled to the patch size)."""
    from mammut_video.model.config import TextConfig, VisionConfig, scale_tubes
    from mammut_video.model.presets import b16_tubes, get_preset

    base = get_preset("mammut-video-B-16")
    v = arch.vision
    check_heads(v.width, v.heads, "vision", source)
    timm_model, timm_kwargs = v.timm_spec()
    clip_like = kind != "timm"
    vision = VisionConfig(
        timm_model=timm_model, timm_kwargs=timm_kwargs, image_size=v.image_size, patch_size=v.patch_size,
        width=v.width, tubes=scale_tubes(b16_tubes(), v.patch_size / 16) if v.patch_size != 16 else b16_tubes(),
        mean=CLIP_MEAN if clip_like else base.vision.mean,
        std=CLIP_STD if clip_like else base.vision.std,
    )
    if arch.text is not None:
        text = _text_config(arch.text, source)
    elif arch.embed_dim is not None and arch.embed_dim != base.text.width:
        text = TextConfig(width=arch.embed_dim, heads=_fresh_heads(arch.embed_dim))
    else:
        text = base.text
    base.name = "custom"
    base.vision, base.text = vision, text
    base.embed_dim = text.width
    base.logit_bias = arch.logit_bias
    return base


def _heads_note(arch: Arch) -> str:
    v, t = arch.vision, arch.text
    said = [f"vision {v.heads}" + (" (given)" if v.num_heads else f" (open_clip default for width {v.width})")]
    if t is not None:
        said.append(f"text {t.heads}" + (" (given)" if t.num_heads else f" (open_clip default for width {t.width})"))
    return f"model size inferred from the weights; attention heads: {', '.join(said)}"


def _build(arch: Arch, kind: str, preset: str | None, source: str, checks: tuple[str, ...]):
    """(model with fresh weights, notes) for the weights' size or the user's preset."""
    from mammut_video.model import create_model
    from mammut_video.model.presets import get_preset

    if preset is None:
        return create_model(_inferred_config(arch, kind, source)), [_heads_note(arch)]
    config = get_preset(preset)
    config.logit_bias = arch.logit_bias
    if arch.text is not None:  # behaviour of the contrastive pass: not in the weights, not a size
        config.text.pooling, config.text.pad_mask = arch.text.pooling, arch.text.pad_mask
    model = create_model(config)
    return model, _compare(arch, _arch_of_model(model), preset, source, checks)


# ----------------------------------------------------------------------------- loading


def _load_covered(model: nn.Module, ours: StateDict, covered: Callable[[str], bool], source: str,
                  source_name: Callable[[str], str] | None = None) -> None:
    """Strictly load the keys the source is meant to cover; everything else keeps its init."""
    full = model.state_dict()
    expected = {k: v.shape for k, v in full.items() if covered(k)}
    check_state_dict(expected, ours, source, what=f"the {type(model).__name__} layout", source_name=source_name)
    merged = {k: ours.get(k, v) for k, v in full.items()}
    model.load_state_dict(merged, strict=True)
    model.visual.inflate_tubes()


def _timm_filter(sd: StateDict, trunk: nn.Module, source: str) -> StateDict:
    """timm's own conversion (open_clip names, pos-embed / patch resampling) for our trunk."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    try:
        return checkpoint_filter_fn(sd, trunk)
    except Exception as exc:  # timm reports odd shapes with whatever torch raises
        raise CheckpointError(f"{source}: cannot convert the ViT weights ({type(exc).__name__}: {exc})") from exc


def _provenance(kind: str, path: Path, fresh: list[str], notes: list[str], preset: str | None) -> dict[str, Any]:
    from mammut_video import __version__

    return {
        "source": kind, "path": str(path.resolve()), "file_bytes": path.stat().st_size,
        "sha256": sha256_of(path), "preset": preset, "fresh": fresh, "notes": notes,
        "converted_at": now_utc(), "converter": f"mammut-video {__version__}",
    }


def from_timm(path: str | os.PathLike, preset: str | None = None, vision_heads: int | None = None) -> nn.Module:
    """A timm ViT state dict -> model (trunk imported, tubes inflated, decoder fresh).

    ``vision_heads``: the ViT's attention heads (default: open_clip's / timm's for the width).
    """
    path = Path(path)
    source = str(path)
    sd = read_state_dict(path)
    arch = Arch(vision=timm_vision_arch(sd, source))
    arch.vision.num_heads = vision_heads
    model, notes = _build(arch, "timm", preset, source, checks=())
    trunk = _timm_filter(sd, model.visual.trunk, source)
    dropped = sorted(k for k in trunk if k.startswith("head."))
    ours = {f"visual.trunk.{k}": v for k, v in trunk.items() if not k.startswith("head.")}
    if dropped:
        notes.append(f"classifier head dropped ({', '.join(dropped)})")
    _load_covered(model, ours, lambda k: k.startswith("visual.trunk."), source, _timm_source_name)
    fresh = ["video tubes (inflated from the patch embedding)", TIME_TABLE_NOTE, "visual.proj", "text decoder",
             "map_viz2txt_kv", "logit_scale"]
    model.provenance = _provenance("timm", path, fresh, notes, preset)
    return model.eval()


def _clip_visual(sd: StateDict, trunk: nn.Module, keep_head: bool, source: str) -> tuple[StateDict, list[str]]:
    """open_clip ``visual.*`` -> ``visual.trunk.*`` (+ ``visual.proj``); returns (ours, dropped groups)."""
    body = {k: v for k, v in sd.items() if k.startswith("visual.") and
            (keep_head or k[len("visual."):].startswith(_CLIP_BODY))}
    dropped = sorted({k.split(".")[1] for k in sd if k.startswith("visual.") and k not in body})
    converted = _timm_filter(body, trunk, source)
    ours = {f"visual.trunk.{k}": v for k, v in converted.items() if not k.startswith("head.")}
    if "head.weight" in converted:
        ours["visual.proj"] = converted["head.weight"].t().contiguous()
    return ours, dropped


def _embed_dim(sd: StateDict, source: str, what: str) -> int:
    """Output width of the visual projection ``visual.proj`` (vision width, embed dim)."""
    require(sd, ["visual.proj"], source, what)
    shape = tuple(sd["visual.proj"].shape)
    if len(shape) != 2:
        raise CheckpointError(f"{source}: visual.proj has shape {shape}, expected (vision width, embed dim)")
    return shape[1]


def from_open_clip(
    path: str | os.PathLike, preset: str | None = None, quick_gelu: bool | None = None,
    vision_heads: int | None = None,
) -> nn.Module:
    """An open_clip / OpenAI-CLIP / CoCa checkpoint -> model (visual tower imported, decoder fresh).

    ``quick_gelu``: the tower's activation (OpenAI's CLIP weights use QuickGELU, open_clip's own
    trainings GELU); ``None`` detects OpenAI's original files by their metadata entries.
    ``vision_heads``: attention heads (default: open_clip's ``head_width`` convention for the width).
    """
    path = Path(path)
    source = str(path)
    sd = read_state_dict(path)
    if "visual.trunk.pos_embed" in sd:
        raise CheckpointError(f"{source}: open_clip towers with a timm trunk are not supported; "
                              "extract visual.trunk.* into a timm state dict and use --from timm")
    coca = any(k.startswith("visual.attn_pool") for k in sd)
    vision = clip_vision_arch(sd, source)
    vision.quick_gelu = _uses_quick_gelu(sd) if quick_gelu is None else quick_gelu
    vision.num_heads = vision_heads
    for key in ("input_resolution", "context_length", "vocab_size"):
        sd.pop(key, None)
    embed = None if coca else _embed_dim(sd, source, "open_clip visual tower")
    arch = Arch(vision=vision, embed_dim=embed)
    model, notes = _build(arch, "open_clip", preset, source, checks=("embed",) if embed else ())
    ours, dropped = _clip_visual(sd, model.visual.trunk, keep_head=not coca, source=source)
    if coca:
        notes.append("CoCa attentional pooler, ln_post and proj are not part of the ViT body: "
                     "visual.trunk.norm and visual.proj start fresh")
    if dropped:
        notes.append(f"visual tower parts not used: {', '.join(dropped)}")
    notes.append("text tower of the source ignored (the MaMMUT decoder replaces it)")
    covered_head = not coca
    _load_covered(
        model, ours,
        lambda k: k.startswith("visual.trunk.") and (covered_head or not k.startswith("visual.trunk.norm."))
        or (covered_head and k == "visual.proj"),
        source, clip_source_name)
    fresh = ["video tubes (inflated from the patch embedding)", TIME_TABLE_NOTE, "text decoder", "map_viz2txt_kv",
             "logit_scale"]
    if coca:
        fresh[2:2] = ["visual.trunk.norm (ln_post)", "visual.proj"]
    model.provenance = _provenance("open_clip", path, fresh, notes, preset)
    return model.eval()


def _uses_quick_gelu(sd: StateDict) -> bool:
    # OpenAI's own CLIP weights were trained with QuickGELU; their files carry no act marker,
    # but only they store the image-size-free 'input_resolution'/'context_length' scalars.
    return any(k in sd for k in ("input_resolution", "context_length", "vocab_size"))


def _scalar(value: torch.Tensor, key: str, source: str) -> torch.Tensor:
    """A scalar or open_clip's ``nonscalar_logit_scale`` ``[1]`` tensor -> a 0-d tensor."""
    if value.numel() != 1:
        raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)}, expected a scalar (or [1])")
    return value.reshape(())


def mammut_key_map(sd: StateDict, source: str) -> StateDict:
    """The non-visual openMaMMUT keys in our names (fork ``text.text_projection`` -> ``text.lm_head``,
    ``[1]``-shaped ``logit_scale`` / ``logit_bias`` -> scalars)."""
    out = {k: v for k, v in sd.items() if not k.startswith("visual.")}
    if "text.text_projection" in out:
        if "text.lm_head" in out:
            shape = tuple(out["text.text_projection"].shape)
            raise CheckpointError(
                f"{source}: has text.lm_head and text.text_projection {shape}: an open_clip MaMMUT with "
                "proj_type='linear' (a linear projection of the pooled contrastive text feature). Not supported: "
                "mammut-video's contrastive text feature is the pooled decoder state with no projection "
                "(embed dim = decoder width, as the openMaMMUT weights and proj_type='none')")
        out["text.lm_head"] = out.pop("text.text_projection")
    for key in ("logit_scale", "logit_bias"):
        if key in out:
            out[key] = _scalar(out[key], key, source)
    return out


def _mammut_source_name(layout: str) -> Callable[[str], str]:
    def name(key: str) -> str:
        if key == "text.lm_head" and layout == "fork":
            return "text.text_projection"
        return clip_source_name(key)
    return name


def _layout_note(t: TextArch) -> str:
    where = ("LAION open_clip_mammut fork (vocab head text.text_projection)" if t.layout == "fork" else
             "open_clip MultimodalDecoder (vocab head text.lm_head)")
    note = (f"openMaMMUT layout: {where}; cross-attention every {t.cross_attn_ratio} layers; contrastive "
            f"pass: pooling {t.pooling}, pad-masked attention {'on' if t.pad_mask else 'off'}")
    if t.layout == "upstream" and (t.pooling, t.pad_mask) == ("avg_all", False):
        note += (" (the released openMaMMUT behaviour; weights trained with open_clip's MultimodalCfg defaults "
                 "pool_type='avg', use_pad_mask=True need --text-pooling avg --text-pad-mask)")
    return note


def from_openmammut(
    path: str | os.PathLike, preset: str | None = None, quick_gelu: bool | None = None,
    vision_heads: int | None = None, text_heads: int | None = None, cross_attn_ratio: int | None = None,
    text_pooling: str = "avg_all", text_pad_mask: bool = False,
) -> nn.Module:
    """An openMaMMUT checkpoint (LAION fork or upstream open_clip layout) -> model, all weights imported.

    What the weights do not say: ``quick_gelu`` (both towers; default GELU), ``vision_heads`` /
    ``text_heads`` (default: open_clip's convention for the width), ``cross_attn_ratio`` (only
    needed where the open_clip layout leaves it ambiguous), and the contrastive pass:
    ``text_pooling`` ``"avg_all"`` (released openMaMMUT weights, the default) or ``"avg"`` (pads
    excluded), ``text_pad_mask`` (pads masked from attention; open_clip's ``use_pad_mask``).
    """
    path = Path(path)
    source = str(path)
    if text_pooling not in ("avg_all", "avg"):
        raise CheckpointError(f"text pooling must be 'avg_all' or 'avg', got {text_pooling!r}")
    sd = read_state_dict(path)
    if "map_viz2txt_kv" not in sd:
        raise CheckpointError(f"{source}: no map_viz2txt_kv; not an openMaMMUT checkpoint "
                              "(use --from open_clip for CLIP / CoCa weights)")
    vision = clip_vision_arch(sd, source)
    text = mammut_text_arch(sd, source, cross_attn_ratio=cross_attn_ratio)
    vision.quick_gelu = text.quick_gelu = bool(quick_gelu)
    vision.num_heads, text.num_heads = vision_heads, text_heads
    text.pooling, text.pad_mask = text_pooling, text_pad_mask
    ours = mammut_key_map(sd, source)  # rejects what the decoder cannot represent before building
    bias = ours.get("logit_bias")
    arch = Arch(vision=vision, text=text, embed_dim=_embed_dim(sd, source, "openMaMMUT checkpoint"),
                logit_bias=None if bias is None else float(bias))
    model, notes = _build(arch, "openmammut", preset, source, checks=("text", "embed"))
    if preset is not None and model.config.tokenizer.get("type") != "clip_bpe":
        raise CheckpointError(f"{source}: openMaMMUT uses the CLIP BPE tokenizer; preset {preset!r} does not")
    visual, _ = _clip_visual(sd, model.visual.trunk, keep_head=True, source=source)
    ours.update(visual)
    _load_covered(model, ours, lambda k: not k.startswith("visual.tubes.") and k != "visual.time_embed", source,
                  _mammut_source_name(text.layout))
    notes.append(_layout_note(text))
    fresh = ["video tubes (inflated from the patch embedding)", TIME_TABLE_NOTE]
    model.provenance = _provenance("openmammut", path, fresh, notes, preset)
    return model.eval()


CONVERTERS: dict[str, Callable[..., nn.Module]] = {
    "timm": from_timm, "open_clip": from_open_clip, "openmammut": from_openmammut,
}


def convert(kind: str, path: str | os.PathLike, preset: str | None = None, **kwargs: Any) -> nn.Module:
    """Dispatch on ``kind`` (one of :data:`SOURCES`); ``kwargs`` go to that importer."""
    if kind not in CONVERTERS:
        raise CheckpointError(f"unknown source {kind!r}; expected one of {', '.join(SOURCES)}")
    try:
        return CONVERTERS[kind](path, preset=preset, **kwargs)
    except MammutVideoError:
        raise
    except Exception as exc:  # a source file nobody anticipated trips over something: still one line
        raise CheckpointError(f"{path}: cannot convert ({type(exc).__name__}: {exc})") from exc
