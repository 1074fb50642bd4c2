"""Fine-tuning on video QA or captions, on one process or many (torchrun / DDP).

    import mammut_video as mv
    result = mv.finetune(mv.FinetuneConfig(train="data/train.jsonl", val="data/val.jsonl",
                                           out="runs/qa", preset="mammut-video-tiny", max_time="10m"))
    result.files.best            # best/ checkpoint: mv.load_model(result.files.best)

- :mod:`.config`: :class:`FinetuneConfig` and the default recipes (from a preset, from a checkpoint).
- :mod:`.data`: SPECs, samples, seeded training clips, ``--cache-clips``, text batches.
- :mod:`.optim`: AdamW parameter groups, warm-up + cosine.
- :mod:`.loop`: :class:`Trainer`, one optimizer step, validation and checkpoints.
- :mod:`.run`: :func:`finetune`, which prepares everything and runs the trainer.
- :mod:`.rundir`, :mod:`.curves`, :mod:`.validate`: the run directory, ``curves.png``, validation.

Names load lazily so that the command line's ``--help`` does not pull in torch.
"""

from __future__ import annotations

from mammut_video._lazy import lazy_exports

_EXPORTS = {
    "FinetuneConfig": ".config", "Recipe": ".config", "SCRATCH": ".config", "FINETUNE": ".config",
    "finetune": ".run", "FinetuneResult": ".loop", "TrainError": ".loop",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
