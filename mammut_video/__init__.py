"""mammut-video: sparse video tubes on a pretrained image ViT + the MaMMUT two-pass decoder.

The public names are imported lazily so that ``import mammut_video`` (and the CLI's
``--help``) stays fast; torch, timm and open_clip load when a name that needs them is used.
The torchvision guard is installed first, so that ``import timm`` / ``import open_clip`` work
after ``import mammut_video`` on CPU-only torch (see ``_torchvision_guard``).
"""

from __future__ import annotations

from mammut_video import _torchvision_guard
from mammut_video._lazy import lazy_exports

_torchvision_guard.install()

__version__ = "0.1.0"

# public name -> module that defines it (the README's "Python API" section lists them)
_EXPORTS = {
    # video input
    "read_clip": "mammut_video.video",
    "probe_video": "mammut_video.video",
    "VideoInfo": "mammut_video.video",
    "build_clip_transform": "mammut_video.video",
    # the model
    "MammutVideo": "mammut_video.model",
    "MammutVideoConfig": "mammut_video.model",
    "create_model": "mammut_video.model",
    "load_model": "mammut_video.model",
    "list_presets": "mammut_video.model",
    "get_tokenizer": "mammut_video.model",
    # training pieces: losses and the teacher-forcing batches
    "MammutLoss": "mammut_video.model.losses",
    "clip_loss": "mammut_video.model.losses",
    "focal_contrastive_loss": "mammut_video.model.losses",
    "caption_loss": "mammut_video.model.losses",
    "build_qa_batch": "mammut_video.text",
    "build_caption_batch": "mammut_video.text",
    "qa_prompt_ids": "mammut_video.text",
    # datasets
    "load_qa": "mammut_video.data",
    "load_captions": "mammut_video.data",
    "VideoFolder": "mammut_video.data",
    # evaluation
    "evaluate": "mammut_video.eval",
    "EvalConfig": "mammut_video.eval",
    "EvalResult": "mammut_video.eval",
    "QAOptions": "mammut_video.eval",
    "CaptionOptions": "mammut_video.eval",
    "RetrievalOptions": "mammut_video.eval",
    # fine-tuning
    "finetune": "mammut_video.train",
    "FinetuneConfig": "mammut_video.train",
    "FinetuneResult": "mammut_video.train",
    # captions and answers for files
    "caption_videos": "mammut_video.inference.caption",
    "CaptionConfig": "mammut_video.inference.caption",
    "ask": "mammut_video.inference.ask",
    "AskConfig": "mammut_video.inference.ask",
    # embeddings of a folder of videos, and search
    "embed_folder": "mammut_video.embed",
    "EmbedConfig": "mammut_video.embed",
    "EmbedSummary": "mammut_video.embed",
    "EmbeddingIndex": "mammut_video.embed",
    "SearchHit": "mammut_video.embed",
    # errors
    "MammutVideoError": "mammut_video.errors",
    "ConfigError": "mammut_video.errors",
    "VideoDecodeError": "mammut_video.video",
    "AnnotationError": "mammut_video.data",
    "DatasetNotFoundError": "mammut_video.data",
    "CheckpointError": "mammut_video.checkpoint",
    "EmbeddingIndexError": "mammut_video.embed",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
