"""``embed_folder(config)``: every video of a folder or list into searchable embedding shards.

The inputs are listed once (rank 0, shared with every rank), cut into windows when
``clip_seconds`` is set, decoded in DataLoader worker processes and encoded batch by batch by
the sharded resumable loop (``mammut_video.runtime.loop``); :mod:`.store` commits the rows and
merges the index at the end. A file that cannot be read becomes a row of ``errors.jsonl`` and
the run goes on. Under torchrun each rank takes a strided slice of the inputs and writes its own
shards; rank 0 merges.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset, get_worker_info

from mammut_video.embed.config import EmbedConfig, EmbedSummary
from mammut_video.embed.inputs import Inputs, VideoInput, Window, WindowPlan, list_inputs
from mammut_video.embed.store import TOKEN_SHARD_BYTES, MergeResult, ShardStore, merge, remove_leftovers, result_files
from mammut_video.errors import ConfigError, error_text
from mammut_video.runtime.rundir import RunDirError, read_settings

log = logging.getLogger(__name__)

KIND = "embed"
FORMAT_VERSION = 1
PRESET_SEED = 0


class ClipStream(IterableDataset):
    """The clips of ``inputs``, one item per window (see :class:`~mammut_video.embed.inputs.WindowPlan`).

    Each DataLoader worker takes a strided slice of the inputs, probes each file
    (``probe_video``: duration), skips the windows in ``done[input.key]`` and decodes the others
    (``read_clip``, ``frames`` frames) through ``transform``. An item is a dict: ``video``
    (C, T, H, W) or None, ``error`` (None or the message), ``cause`` (the
    ``VideoDecodeError`` cause in words), ``last`` (the input's last item), and the row fields
    (``path``, ``window``, ``windows``, ``start``, ``end``, ``frames``, ``duration``, ``size``,
    ``mtime``, and ``segment`` when a list gave one).
    """

    def __init__(self, inputs: list[VideoInput], plan: WindowPlan, frames: int, transform: Any,
                 done: dict[str, set[int]]) -> None:
        self.inputs, self.plan, self.frames, self.transform = inputs, plan, frames, transform
        self.done = done

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        mine = self.inputs if worker is None else self.inputs[worker.id::worker.num_workers]
        for item in mine:
            yield from self._items(item)

    def _items(self, item: VideoInput) -> Iterator[dict[str, Any]]:
        from mammut_video.video import VideoDecodeError, probe_video, read_clip

        try:
            info = probe_video(item.path)
            duration = info.duration
            try:
                windows = self.plan.windows(duration, item.start, item.end,
                                            frame_seconds=1 / info.fps if info.fps > 0 else 0.0)
            except ValueError as err:  # a segment of the list outside the video: the input's fault
                raise VideoDecodeError(str(item.path), str(err)) from None
        except Exception as err:  # noqa: BLE001 - a bad file is a row of errors.jsonl, never the end of the run
            yield self._failed(_fields(item, None, None, self.frames), err)
            return
        todo = [w for w in windows if w.index not in self.done.get(item.key, ())]
        for n, window in enumerate(todo):
            fields = _fields(item, window, duration, self.frames)
            fields["last"] = n == len(todo) - 1
            try:
                clip = read_clip(item.path, self.frames, start=window.start, end=window.end)
                yield {**fields, "video": self.transform(clip), "error": None}
            except Exception as err:  # noqa: BLE001 - as above
                yield self._failed(fields, err)

    @staticmethod
    def _failed(fields: dict[str, Any], err: BaseException) -> dict[str, Any]:
        message = str(err)
        if fields["file"] not in message:
            message = f"{fields['file']}: {error_text(err)}"
        cause = getattr(err, "cause", None) or f"{type(err).__name__}: {err}"
        return {"last": True, **fields, "video": None, "error": message, "cause": cause}


def _fields(item: VideoInput, window: Window | None, duration: float | None, frames: int) -> dict[str, Any]:
    """The index fields of ``item`` at ``window`` (None: the input failed before its windows were known).

    Times are seconds rounded to the microsecond; a whole video's window is ``[0, duration]``."""
    fields: dict[str, Any] = {"path": item.name, "file": str(item.path), "index": 0}
    if item.segment is not None:
        fields["segment"] = item.segment
    if window is None or duration is None:
        fields.update(window=None, windows=None, start=item.start, end=item.end)
    else:
        start = window.start if window.start is not None else 0.0
        end = min(window.end if window.end is not None else duration, duration)
        fields.update(window=window.index, windows=window.count, start=_seconds(start), end=_seconds(end))
    fields.update(frames=frames, duration=_seconds(duration), size=item.size, mtime=item.mtime)
    return fields


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def collate_windows(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`~mammut_video.data.collate_clips`, plus ``failed_items``: the failed items with their fields."""
    from mammut_video.data.clips import collate_clips

    return {**collate_clips(batch), "failed_items": [b for b in batch if b["video"] is None]}


_NOT_STORED = ("file", "index", "last", "video", "error", "cause")


def _row(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in _NOT_STORED}


def _failure(item: dict[str, Any]) -> dict[str, Any]:
    return {**_row(item), "cause": item["cause"], "error": item["error"]}


class Encoder:
    """The loop's work function: decode the units' windows, encode each batch, hand rows to the store."""

    def __init__(self, model: Any, config: EmbedConfig, frames: int, device: torch.device, precision: str,
                 store: ShardStore) -> None:
        self.model, self.config, self.frames = model, config, frames
        self.device, self.precision, self.store = device, precision, store
        self.dtype = torch.float16 if config.dtype == "float16" else torch.float32
        self.plan = WindowPlan(config.clip_seconds, config.stride)

    def __call__(self, units: list[VideoInput]) -> Iterator[tuple[list[dict], int]]:
        from mammut_video.data.clips import make_loader

        dataset = ClipStream(units, self.plan, self.frames, self.model.clip_transform(), self.store.partial)
        loader = make_loader(dataset, self.config.batch_size, self.config.workers,
                             pin_memory=self.device.type == "cuda", collate_fn=collate_windows)
        for batch in loader:
            results = [_failure(item) for item in batch["failed_items"]]
            if batch["video"] is not None:
                results += self.encode(batch["video"], batch["items"])
            yield results, sum(1 for item in batch["items"] + batch["failed_items"] if item["last"])

    def encode(self, video: torch.Tensor, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows of one batch: video (B, C, T, H, W) -> ``embedding`` (E,) L2-normalised in ``dtype``,
        and ``tokens`` (N, D) float16 with ``save_tokens``."""
        from mammut_video.runtime.precision import inference_autocast

        with inference_autocast(self.device, self.precision):
            out = self.model.encode_video(video.to(self.device, non_blocking=True))
        embeddings = F.normalize(out.embedding.float(), dim=-1).to(self.dtype).cpu()
        tokens = out.tokens.to(torch.float16).cpu() if self.config.save_tokens else None
        return [{**_row(item), "embedding": embeddings[i], "tokens": None if tokens is None else tokens[i]}
                for i, item in enumerate(items)]


def model_identity(config: EmbedConfig) -> dict[str, Any]:
    """What names the model in ``settings.json``: the checkpoint (path and file fingerprint) or the preset."""
    from mammut_video.checkpoint import read_checkpoint_config
    from mammut_video.eval.run import checkpoint_identity

    if config.preset is not None:
        return {"preset": config.preset, "seed": PRESET_SEED}
    ckpt = Path(config.checkpoint).expanduser()  # type: ignore[arg-type]
    read_checkpoint_config(ckpt)  # a missing or foreign directory fails here, in one line
    return checkpoint_identity(ckpt.resolve())


def load_embedding_model(identity: dict[str, Any], device: torch.device) -> Any:
    """The model ``identity`` names (:func:`model_identity`), in eval mode on ``device``."""
    from mammut_video.model import create_model, load_model

    if "preset" in identity:
        torch.manual_seed(int(identity.get("seed", PRESET_SEED)))
        return create_model(identity["preset"]).eval().to(device)
    return load_model(identity["checkpoint"], map_location=device)


def check_out_dir(out_dir: Path) -> None:
    """Refuse an output folder that holds anything but an embedding run (an empty or new one is fine)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirError(f"--out {out_dir} is a file, not a folder")
    if not out_dir.is_dir():
        return
    entries = sorted(p.name for p in out_dir.iterdir())
    if not entries:
        return
    settings = read_settings(out_dir)
    if settings is None:
        raise RunDirError(f"--out {out_dir} holds other files (e.g. {entries[0]}), not an embedding run: choose a new "
                          "or empty folder for the embeddings")
    if settings.get("kind") != KIND:
        raise RunDirError(f"--out {out_dir} holds another kind of run (its settings.json is not from `mammut-video "
                          "embed`): choose a new or empty folder for the embeddings")


def _settings(config: EmbedConfig, inputs: Inputs, source: Path, identity: dict, frames: int, precision: str,
              embed_dim: int) -> dict[str, Any]:
    return {
        "kind": KIND, "format_version": FORMAT_VERSION, "input": str(source.resolve()), "input_kind": inputs.kind,
        "root": str(inputs.root), **identity, "embed_dim": embed_dim, "frames": frames, "dtype": config.dtype,
        "precision": precision, "normalized": True, "clip_seconds": config.clip_seconds,
        "stride_seconds": config.stride, "save_tokens": config.save_tokens,
        # the rule for the end-aligned last window: a run cut under the older rule (any time left
        # over) must not be resumed under this one, which may give an input one window less
        **({"end_window_tolerance": "1 frame"} if config.clip_seconds is not None else {}),
    }


def _shard_rows(config: EmbedConfig, model: Any, frames: int) -> int:
    """``shard_rows``, lowered with ``save_tokens`` so that a shard's tokens stay under 256 MiB."""
    if not config.save_tokens:
        return config.shard_rows
    size = model.config.vision.image_size
    with torch.inference_mode():
        tokens = model.encode_video(torch.zeros(1, 3, frames, size, size, device=model.device)).tokens
    per_row = tokens[0].numel() * 2
    return max(1, min(config.shard_rows, TOKEN_SHARD_BYTES // per_row))


def embed_folder(config: EmbedConfig | str | Path, **options: Any) -> EmbedSummary:
    """Embed every video of a folder or list (see the module docstring); every rank of a torchrun
    group calls it. ``embed_folder("videos/", out="emb/", checkpoint="ckpt/")`` is
    ``embed_folder(EmbedConfig("videos/", out="emb/", checkpoint="ckpt/"))``."""
    from mammut_video.runtime.distributed import init_distributed
    from mammut_video.runtime.loop import run_sharded
    from mammut_video.runtime.precision import check_precision, default_precision
    from mammut_video.runtime.rundir import open_run_dir

    if not isinstance(config, EmbedConfig):
        config = EmbedConfig(config, **options)
    elif options:
        raise ConfigError("embed_folder: pass options in the EmbedConfig or as keywords, not both")
    out_dir, source = config.out_dir, Path(config.input).expanduser()
    identity = model_identity(config)
    with init_distributed(config.device) as ctx:
        inputs: Inputs = ctx.on_main(lambda: _list(source, out_dir), share=True)  # type: ignore[assignment]
        ctx.on_main(lambda: check_out_dir(out_dir))
        model = load_embedding_model(identity, ctx.device)
        frames = config.frames or int(model.config.num_frames)
        precision = check_precision(config.precision or default_precision(ctx.device))
        settings = _settings(config, inputs, source, identity, frames, precision, int(model.config.embed_dim))
        open_run_dir(out_dir, lambda: result_files(out_dir), settings, not config.overwrite, config.overwrite, ctx)
        ctx.on_main(lambda: remove_leftovers(out_dir))
        store = ShardStore(out_dir, ctx.rank, _shard_rows(config, model, frames), config.commit_seconds)
        if config.compile:  # after _shard_rows' probe, so that only real batches compile
            model.compile_inference()
        encoder = Encoder(model, config, frames, ctx.device, precision, store)
        stats = run_sharded(inputs.items, encoder, store, ctx, desc="embed", unit_name="video",
                            show_progress=config.progress)
        clips = sum(ctx.gather([store.rows_written]))
        merged: MergeResult = ctx.on_main(lambda: merge(out_dir, inputs.items), share=True)  # type: ignore[assignment]
    return EmbedSummary(out_dir=out_dir.resolve(), inputs=len(inputs.items), done=merged.finished - stats.resumed,
                        skipped=stats.resumed, failed=stats.failed, clips=clips, rows=merged.rows,
                        seconds=stats.seconds, ignored=inputs.ignored, rank=ctx.rank, world_size=ctx.world_size)


def _list(source: Path, out_dir: Path) -> Inputs:
    if out_dir.exists() and source.exists() and out_dir.resolve() == source.resolve():
        raise ConfigError(f"--out {out_dir} is the input folder: choose another folder for the embeddings")
    inputs = list_inputs(source, exclude=[out_dir])
    log.info("%d videos in %s%s", len(inputs.items), source,
             f" ({inputs.ignored} other files ignored)" if inputs.ignored else "")
    return inputs
