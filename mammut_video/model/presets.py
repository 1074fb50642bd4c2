"""Named model presets. ``get_preset(name)`` returns a fresh :class:`MammutVideoConfig`."""

from __future__ import annotations

from typing import Callable

from mammut_video.errors import ConfigError
from mammut_video.model.config import MammutVideoConfig, TextConfig, TubeSpec, VisionConfig, scale_tubes
from mammut_video.video.normalization import CLIP_MEAN, CLIP_STD


def b16_tubes() -> list[TubeSpec]:
    """The sparse-tube table for a patch-16 ViT at 224x224, 32 frames: 539 tokens (+ CLS)."""
    return [
        TubeSpec("a", (8, 8, 8), (16, 32, 32), (0, 0, 0)),
        TubeSpec("b", (16, 4, 4), (6, 32, 32), (4, 8, 8)),
        TubeSpec("c", (4, 12, 12), (16, 32, 32), (0, 16, 16)),
        TubeSpec("image", (1, 16, 16), (32, 16, 16), (0, 0, 0)),
    ]


def _tiny() -> MammutVideoConfig:
    # The small model for tests, the demo and training from scratch: 8 frames at 112x112. Its tubes
    # are dense, not the paper's sparse table: at 112 px the sparse tubes' 8x8 windows every 32 px
    # miss most of a small moving object, and a tiny model trained from scratch on them did not learn
    # motion direction (chance after 300 steps where these tubes reached 66%, docs/architecture.md).
    # "motion": 4x16x16 tubelets at two times (frames 0-3, 4-7); "image": frame 0, the ViT's own
    # patches -> 98 + 49 = 147 tokens + CLS.
    tubes = [
        TubeSpec("motion", (4, 16, 16), (4, 16, 16), (0, 0, 0)),
        TubeSpec("image", (1, 16, 16), (8, 16, 16), (0, 0, 0)),
    ]
    return MammutVideoConfig(
        name="mammut-video-tiny",
        vision=VisionConfig(
            timm_model="vit_tiny_patch16_224", timm_kwargs={"img_size": 112, "depth": 4},
            image_size=112, patch_size=16, width=192, tubes=tubes),
        text=TextConfig(vocab_size=49408, context_length=32, width=128, heads=4, layers=4, cross_attn_ratio=2),
        tokenizer={"type": "clip_bpe"},
        embed_dim=128,
        num_frames=8,
    )


def _b16() -> MammutVideoConfig:
    return MammutVideoConfig(
        name="mammut-video-B-16",
        vision=VisionConfig(
            timm_model="vit_base_patch16_224", image_size=224, patch_size=16, width=768, tubes=b16_tubes()),
        text=TextConfig(vocab_size=49408, context_length=77, width=768, heads=12, layers=12, cross_attn_ratio=2),
        tokenizer={"type": "clip_bpe"},
        embed_dim=768,
        num_frames=32,
    )


def _l14() -> MammutVideoConfig:
    # openMaMMUT ViT-L/14 layout; timm's CLIP ViT-L/14 has ln_pre (norm_pre) and a bias-free patch embed
    return MammutVideoConfig(
        name="mammut-video-L-14",
        vision=VisionConfig(
            timm_model="vit_large_patch14_clip_224", image_size=224, patch_size=14, width=1024,
            tubes=scale_tubes(b16_tubes(), 14 / 16), mean=CLIP_MEAN, std=CLIP_STD),
        text=TextConfig(vocab_size=49408, context_length=77, width=768, heads=12, layers=12, cross_attn_ratio=2),
        tokenizer={"type": "clip_bpe"},
        embed_dim=768,
        num_frames=32,
    )


_PRESETS: dict[str, Callable[[], MammutVideoConfig]] = {
    "mammut-video-tiny": _tiny,
    "mammut-video-B-16": _b16,
    "mammut-video-L-14": _l14,
}


def list_presets() -> list[str]:
    """Names accepted by ``create_model``."""
    return list(_PRESETS)


def get_preset(name: str) -> MammutVideoConfig:
    if name not in _PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; known: {', '.join(_PRESETS)}")
    return _PRESETS[name]()
