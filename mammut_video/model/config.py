"""Model configuration: plain dataclasses that round-trip through JSON (``to_dict`` / ``from_dict``).

A tube is ``(name, kernel, stride, offset)`` with every triple in (T, H, W) order. The tube named
``"image"`` is the pretrained patch embedding itself and must have kernel ``(1, P, P)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mammut_video.errors import ConfigError

Triple = tuple[int, int, int]

IMAGE_TUBE = "image"


@dataclass(frozen=True)
class TubeSpec:
    """One 3D convolution that cuts the clip into tokens (kernel/stride/offset in (T, H, W))."""

    name: str
    kernel: Triple
    stride: Triple
    offset: Triple = (0, 0, 0)

    def __post_init__(self) -> None:
        for key in ("kernel", "stride", "offset"):
            value = tuple(int(v) for v in getattr(self, key))
            if len(value) != 3:
                raise ConfigError(f"tube {self.name!r}: {key} must have 3 values (T, H, W), got {value}")
            object.__setattr__(self, key, value)
        if min(self.kernel) < 1 or min(self.stride) < 1 or min(self.offset) < 0:
            raise ConfigError(f"tube {self.name!r}: kernel/stride must be >= 1 and offset >= 0")

    def grid(self, t: int, h: int, w: int) -> Triple:
        """Number of tube positions along (T, H, W) for an input of that size (0 if it does not fit)."""
        out = []
        for size, k, s, o in zip((t, h, w), self.kernel, self.stride, self.offset):
            out.append(0 if size - o < k else (size - o - k) // s + 1)
        return tuple(out)  # type: ignore[return-value]


def scale_tubes(tubes: list[TubeSpec], factor: float) -> list[TubeSpec]:
    """Scale spatial kernel/stride/offset (not time) by ``factor``, e.g. 14/16 for a patch-14 ViT."""

    def s(v: int) -> int:
        return max(1, int(v * factor + 0.5))

    out = []
    for t in tubes:
        out.append(TubeSpec(
            t.name,
            (t.kernel[0], s(t.kernel[1]), s(t.kernel[2])),
            (t.stride[0], s(t.stride[1]), s(t.stride[2])),
            (t.offset[0], int(t.offset[1] * factor + 0.5), int(t.offset[2] * factor + 0.5)),
        ))
    return out


_SIMPLE_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def check_field_types(config: Any, where: str) -> None:
    """:class:`ConfigError` naming the first field of the dataclass ``config`` whose value is not of its
    simple declared type (int, float, bool, str): a ``"width": "768"`` in a hand-edited config.json."""
    for f in dataclasses.fields(config):
        kinds, value = _SIMPLE_TYPES.get(str(f.type)), getattr(config, f.name)
        if kinds is not None and (not isinstance(value, kinds) or (isinstance(value, bool) and f.type != "bool")):
            raise ConfigError(f"{where}.{f.name} must be {f.type}, got {type(value).__name__} {value!r}")


@dataclass
class VisionConfig:
    """Image ViT body (a timm model name plus keyword overrides) and the tube set on top of it."""

    timm_model: str = "vit_base_patch16_224"
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    tubes: list[TubeSpec] = field(default_factory=list)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        check_field_types(self, "vision")
        self.tubes = [t if isinstance(t, TubeSpec) else TubeSpec(**t) for t in self.tubes]
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        names = [t.name for t in self.tubes]
        if len(set(names)) != len(names):
            raise ConfigError(f"tube names must be unique, got {names}")
        if IMAGE_TUBE not in names:
            raise ConfigError(f"the tube set needs a tube named {IMAGE_TUBE!r} (the pretrained patch embedding)")
        image = self.tubes[names.index(IMAGE_TUBE)]
        p = self.patch_size
        if image.kernel != (1, p, p) or image.stride[1:] != (p, p):
            raise ConfigError(f"the image tube must have kernel (1, {p}, {p}) and spatial stride ({p}, {p}), got {image}")


@dataclass
class TextConfig:
    """The MaMMUT decoder (openMaMMUT layout): one text transformer used in two passes."""

    vocab_size: int = 49408
    context_length: int = 77
    width: int = 768
    heads: int = 12
    layers: int = 12
    mlp_ratio: float = 4.0
    cross_attn_ratio: int = 2
    pooling: str = "avg_all"  # "avg_all": mean over all positions incl. pads (openMaMMUT); "avg": pads masked
    # contrastive pass: pad keys masked out of self-attention (upstream open_clip MultimodalDecoder
    # ``use_pad_mask=True``); False: every position attends to every other, pads included (openMaMMUT)
    pad_mask: bool = False
    act: str = "gelu"  # "gelu" (exact erf, nn.GELU) or "quick_gelu"
    # False: the self-attention layers followed by a cross-attention block (i % cross_attn_ratio
    # == 0) have no MLP / ln_2, their cross block's MLP being the only one (the LAION fork's
    # ``has_mlp``, e.g. its mammut_ViT-S-16 config); the other layers and all cross blocks keep theirs
    has_mlp: bool = True

    def __post_init__(self) -> None:
        check_field_types(self, "text")
        if self.pooling not in ("avg_all", "avg"):
            raise ConfigError(f"text pooling must be 'avg_all' or 'avg', got {self.pooling!r}")
        if self.act not in ("gelu", "quick_gelu"):
            raise ConfigError(f"text act must be 'gelu' or 'quick_gelu', got {self.act!r}")
        if self.width % self.heads:
            raise ConfigError(f"text width {self.width} is not divisible by heads {self.heads}")
        if not 1 <= self.cross_attn_ratio <= self.layers or self.layers % self.cross_attn_ratio:
            raise ConfigError(f"cross_attn_ratio {self.cross_attn_ratio} must divide layers {self.layers}")


@dataclass
class MammutVideoConfig:
    """Whole-model config; kept on the model as ``model.config`` and saved as ``config.json``."""

    name: str = "custom"
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    tokenizer: dict[str, Any] = field(default_factory=lambda: {"type": "clip_bpe"})
    embed_dim: int = 768
    num_frames: int = 32
    logit_bias: float | None = None  # initial value of an optional logit_bias (SigLIP-style); None: no bias

    def __post_init__(self) -> None:
        check_field_types(self, "model")
        if isinstance(self.vision, dict):
            self.vision = VisionConfig(**self.vision)
        if isinstance(self.text, dict):
            self.text = TextConfig(**self.text)
        if self.embed_dim != self.text.width:
            raise ConfigError(
                f"embed_dim {self.embed_dim} must equal the text width {self.text.width}: the contrastive "
                "text feature is the pooled decoder state with no projection (openMaMMUT)")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["vision"]["tubes"] = [
            {"name": t.name, "kernel": list(t.kernel), "stride": list(t.stride), "offset": list(t.offset)}
            for t in self.vision.tubes
        ]
        d["vision"]["mean"] = list(self.vision.mean)
        d["vision"]["std"] = list(self.vision.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MammutVideoConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model config keys: {sorted(unknown)}")
        d = dict(d)
        for key, kind in (("vision", VisionConfig), ("text", TextConfig)):
            value = d.get(key, {})
            d[key] = value if isinstance(value, kind) else kind(**value)
        return cls(**d)
