"""Training data: SPECs, samples, clips decoded in workers (or once, into memory), text batches.

- A SPEC names a split: a custom QA or caption file, or ``msrvtt-qa:ROOT[:SPLIT]``,
  ``msvd-qa:ROOT``, ``msrvtt-caption:ROOT``, ``msvd-caption:ROOT`` (:func:`parse_spec`).
- A sample is one question (a :class:`~mammut_video.data.QARecord`) or one caption of a clip
  (:class:`CaptionSample`). Training goes by :class:`ClipGroup`: for QA a clip with ALL its
  questions, so that each clip is decoded and encoded once per visit and its cross-attention K/V
  are shared by its questions (several times the questions per second of one question per clip);
  for captions a clip with one caption. An epoch visits every group once, in the order of a
  ``DistributedSampler`` (one process is the world of one, so a run on N processes sees the same
  global batches as a run on one).
- :class:`TrainClips` draws each sample's frames (random sampling) and augmentation from its own
  seed ``f(seed, epoch, index)``: the same batch whatever the worker or the process that decodes
  it, which makes ``--resume`` and multi-process runs reproduce a one-process run.
- :func:`decode_once` (``--cache-clips``) decodes every clip once (uniform frames, shorter side
  brought down to the model's input size) and :class:`FrameCache` then serves them from memory.
- :func:`text_batch` builds ids and labels padded to the batch's longest row, not to the context.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mammut_video.data.clips import ClipDataset, make_loader
from mammut_video.data.records import CaptionSplit, QARecord, QASplit, clip_key
from mammut_video.errors import ConfigError
from mammut_video.train.config import BENCHMARKS, SPEC_HELP, SPLIT_NAMES

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class DataSpec:
    """A parsed SPEC: ``benchmark`` (None for a custom file), the file or data root, the split."""

    text: str
    benchmark: str | None
    path: Path
    split: str


@dataclass
class CaptionSample:
    """One caption of one clip: a training sample of the caption task."""

    video: Path
    video_id: str
    caption: str
    start: float | None = None
    end: float | None = None


Sample = QARecord | CaptionSample


def parse_spec(text: str, default_split: str, option: str = "--train") -> DataSpec:
    """``text`` -> :class:`DataSpec`; :class:`ConfigError` naming ``option`` when it is neither form."""
    name, sep, rest = text.partition(":")
    if sep and name in BENCHMARKS:
        root, split = rest, default_split
        head, sep2, tail = rest.rpartition(":")
        if sep2 and tail.lower() in SPLIT_NAMES:
            root, split = head, tail.lower()
        if not root:
            raise ConfigError(f"{option} {text}: no data root after {name}: (expected {name}:DATA_ROOT[:SPLIT])")
        if not Path(root).is_dir():
            raise ConfigError(f"{option} {text}: data root {root} is not a folder")
        return DataSpec(text, name, Path(root), split)
    path = Path(text)
    if not path.exists():
        raise ConfigError(f"{option} {text}: no such file; expected {SPEC_HELP}")
    if not path.is_file():
        raise ConfigError(f"{option} {text}: is a folder; expected {SPEC_HELP}")
    return DataSpec(text, None, path, default_split)


def spec_task(spec: DataSpec) -> str:
    """"qa" or "caption": the benchmark's, or a custom file's by its first record's fields."""
    from mammut_video.data.files import AnnotationError, read_records

    if spec.benchmark is not None:
        return BENCHMARKS[spec.benchmark][0]
    records = read_records(spec.path)
    if isinstance(records, list) and not records:
        raise AnnotationError(spec.path, "holds no records (one question or caption per record; see "
                                         "datasets/custom/README.md)")
    first = records[0] if isinstance(records, list) and records else None
    if isinstance(first, dict) and "question" in first:
        return "qa"
    if isinstance(first, dict) and ("caption" in first or "captions" in first):
        return "caption"
    raise ConfigError(f"{spec.text}: cannot tell QA from captions (the first record has neither 'question' nor "
                      "'caption' / 'captions'); see datasets/custom/README.md")


def load_split(spec: DataSpec, task: str, video_root: str | Path | None) -> QASplit | CaptionSplit:
    """The split a SPEC names, loaded for ``task``; ``video_root`` is where the videos are."""
    from mammut_video import data

    if spec.benchmark is not None and BENCHMARKS[spec.benchmark][0] != task:
        raise ConfigError(f"{spec.text}: a {BENCHMARKS[spec.benchmark][0]} benchmark, but the task is {task}")
    dataset = BENCHMARKS[spec.benchmark][1] if spec.benchmark is not None else "custom"
    where: dict[str, Any] = {"videos": video_root}
    if spec.benchmark is not None:
        where["data_root"] = spec.path
    else:
        where["annotations"] = spec.path
    if task == "qa":
        return data.load_qa(dataset, spec.split, **where)
    return data.load_captions(dataset, spec.split, **where)


def samples_of(split: QASplit | CaptionSplit, task: str) -> list[Sample]:
    """Every sample of a split whose video is on disk: its questions, or one per (clip, caption)."""
    present = split.present_records
    if task == "qa":
        return list(present)
    return [CaptionSample(r.video, str(r.video_id), c, r.start, r.end) for r in present for c in r.captions]


@dataclass
class ClipGroup:
    """One clip (``video`` between ``start`` and ``end``) and the samples trained on it together."""

    video: Path
    start: float | None
    end: float | None
    samples: list[Sample]


def clip_groups(samples: Sequence[Sample], task: str) -> list[ClipGroup]:
    """Training units: QA, one group per clip holding all its questions (in first-seen order);
    captions, one group per caption (a clip's captions are different targets for the same input)."""
    if task != "qa":
        return [ClipGroup(s.video, s.start, s.end, [s]) for s in samples]
    groups: dict[tuple, ClipGroup] = {}
    for s in samples:
        key = clip_key(s.video, s.start, s.end)
        groups.setdefault(key, ClipGroup(s.video, s.start, s.end, [])).samples.append(s)
    return list(groups.values())


def corpus(samples: Sequence[Sample], task: str) -> list[str]:
    """The texts a tokenizer trained for this run must cover: prompts with their answers, or captions."""
    from mammut_video.text.prompts import QA_PROMPT, format_question

    if task == "qa":
        return [f"{QA_PROMPT.format(question=format_question(s.question))} {s.answer}" for s in samples]  # type: ignore[union-attr]
    return [s.caption for s in samples]  # type: ignore[union-attr]


class FrameCache:
    """Decoded uint8 frames (T, H, W, 3) per clip, as a ``ClipDataset`` reader (``--cache-clips``).

    Picklable and plain: DataLoader workers get it with the dataset (fork shares the memory).
    """

    def __init__(self, frames: dict[tuple, torch.Tensor]) -> None:
        self.frames = frames

    def __call__(self, video: str | Path, num_frames: int, start: float | None = None, end: float | None = None,
                 **_: Any) -> torch.Tensor:
        return self.frames[clip_key(video, start, end)]

    def __contains__(self, sample: Any) -> bool:
        return clip_key(sample.video, sample.start, sample.end) in self.frames

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.frames.values())


@dataclass
class _Clip:
    video: Path
    start: float | None
    end: float | None


def _keep_list(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch


def shrink(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) with its shorter side brought down to ``size`` (never enlarged)."""
    from torchvision.transforms import v2

    if min(frames.shape[1:3]) <= size:
        return frames
    resized = v2.functional.resize(frames.permute(0, 3, 1, 2), [size], antialias=True)
    return resized.permute(0, 2, 3, 1).contiguous()


def decode_once(samples: Sequence[Sample], num_frames: int, size: int, workers: int,
                show_progress: bool) -> tuple[FrameCache, list[tuple[str, str]]]:
    """Decode every distinct clip of ``samples`` once (uniform frames, shorter side <= ``size``).

    Returns the cache and the clips that failed as (path, error).
    """
    from mammut_video.runtime.progress import progress

    clips = list({clip_key(s.video, s.start, s.end): _Clip(s.video, s.start, s.end) for s in samples}.values())
    dataset = ClipDataset(clips, transform=None, num_frames=num_frames)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=_keep_list)
    frames: dict[tuple, torch.Tensor] = {}
    failed: list[tuple[str, str]] = []
    with progress(len(clips), "decoding clips", "clip", enabled=show_progress) as bar:
        for (item,) in loader:
            clip = clips[item["index"]]
            if item["video"] is None:
                failed.append((str(clip.video), str(item["error"])))
            else:
                frames[clip_key(clip.video, clip.start, clip.end)] = shrink(item["video"], size)
            bar.update(1)
    return FrameCache(frames), failed


class TrainClips(ClipDataset):
    """Training clips: group ``index`` of epoch ``e`` draws its frames and its augmentation from seed
    ``seed + e * len(self) + index``, whichever worker or process decodes it."""

    def __init__(self, groups: Sequence[ClipGroup], transform: Any, num_frames: int, seed: int,
                 cache: FrameCache | None = None) -> None:
        super().__init__(groups, transform=transform, num_frames=num_frames,
                         sampling="uniform" if cache is not None else "random", seed=seed, reader=cache)
        self.base_seed = seed

    def set_epoch(self, epoch: int) -> None:
        self.seed = self.base_seed + epoch * len(self)

    def __getitem__(self, index: int) -> dict[str, Any]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + index)
            return super().__getitem__(index)


def epoch_order(dataset: TrainClips, epoch: int, seed: int, rank: int, world: int) -> list[int]:
    """This process's sample indices for ``epoch`` (a ``DistributedSampler`` shuffle, tail dropped)."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    return list(sampler)


def epoch_loader(dataset: TrainClips, order: list[int], micro_batch: int, workers: int) -> Any:
    """Micro-batches of ``dataset`` in ``order`` (``collate_clips`` batches: video, items, failed)."""
    return make_loader(dataset, micro_batch, workers, sampler=order)  # type: ignore[arg-type]


def trim_to_longest(ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) ids and labels cut after the last supervised token of the longest row (the EOT)."""
    supervised = labels != -100
    positions = torch.arange(1, labels.shape[1] + 1)
    length = int((supervised * positions).max()) if bool(supervised.any()) else 1
    return ids[:, :length], labels[:, :length]


def text_batch(tokenizer: Any, items: Sequence[dict[str, Any]], task: str,
               context_length: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Teacher-forcing ids and labels (R, L) for the samples of decoded :class:`ClipGroup` items, in
    order, L = the longest row's length; and the rows per item (``MammutVideo.forward``'s ``rows``)."""
    from mammut_video.text.prompts import build_caption_batch, build_qa_batch

    samples = [s for item in items for s in item["samples"]]
    if task == "qa":
        ids, labels = build_qa_batch(tokenizer, [s.question for s in samples], [s.answer for s in samples],
                                     context_length)
    else:
        ids, labels = build_caption_batch(tokenizer, [s.caption for s in samples], context_length)
    ids, labels = trim_to_longest(ids, labels)
    return ids, labels, [len(item["samples"]) for item in items]
