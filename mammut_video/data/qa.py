"""Video QA annotations: MSRVTT-QA, MSVD-QA (original and repackaged) and custom JSONL/CSV.

Accepted record shapes (one file may use any; the format is read per record):

- original (Xu et al. 2017) ``{split}_qa.json``: ``answer, id, question, video_id: int``
  (MSRVTT ``video{N}``; MSVD ``vid{N}`` through ``youtube_mapping.txt``);
- LAVIS ``qa_{split}.json`` and VindLU/UMT ``{dataset}_qa_{split}.json``:
  ``video: "video6513.mp4"``, ``question``, ``answer``, ``question_id``;
- ALPRO ``{split}.jsonl``: ``video_id: "video6513"``, ``question``, ``answer``, ``answer_type``;
- VIOLET ``txt_{dataset}.json``: ``{"train": [...], "val": [...], "test": [...], "vocab": [...]}``
  with ``video`` (clip name) and ``answer`` an index into ``vocab``;
- custom (JSONL, CSV or TSV): ``video`` (path relative to the video root), ``question``, ``answer``,
  optional ``start`` / ``end`` (seconds) and ``id``.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mammut_video.data.files import (
    AnnotationError,
    DatasetNotFoundError,
    Fields,
    check_unique,
    read_json,
    read_records,
    read_text,
    record_labels,
)
from mammut_video.data.layout import (
    VIDEO_EXTENSIONS,
    VideoIndex,
    custom_video_path,
    find_annotation,
    find_video_dir,
    in_other_dataset,
)
from mammut_video.data.msvd import MAPPING_FILE, read_youtube_mapping, vid_number
from mammut_video.data.records import QARecord, QASplit, question_type
from mammut_video.errors import ConfigError

QA_DATASETS = ("msrvtt-qa", "msvd-qa", "custom")
SPLIT_ALIASES = {"validate": "val", "valid": "val", "validation": "val", "dev": "val"}
_DEFAULT_EXT = {"msrvtt-qa": ".mp4", "msvd-qa": ".avi", "custom": ".mp4"}
_OTHER = {"msrvtt-qa": "msvd", "msvd-qa": "msrvtt", "custom": None}
_MSRVTT_NAME = re.compile(r"(?:video)?(\d+)")


@dataclass
class RawQA:
    """A validated annotation record before its video is located."""

    video_ref: str | int
    question: str
    answer: str
    question_id: str | int
    start: float | None
    end: float | None
    where: int | str = 0  # how errors name the record: its index, "line N" (JSON lines), "test[3]" (VIOLET)


def canonical_split(split: str) -> str:
    return SPLIT_ALIASES.get(split.lower(), split.lower())


def qa_file_names(dataset: str, split: str) -> list[str]:
    """Annotation file names tried for a split, most specific first."""
    if dataset == "custom":
        return [f"{stem}{ext}" for stem in (split, f"{split}_qa") for ext in (".jsonl", ".csv", ".json", ".tsv")]
    short = dataset.split("-")[0]  # msrvtt / msvd
    return [f"{split}_qa.json", f"qa_{split}.json", f"{short}_qa_{split}.json", f"{split}.jsonl",
            f"txt_{dataset}.json", f"violet_txt_{dataset}.json"]


def _check_dataset(dataset: str) -> None:
    if dataset not in QA_DATASETS:
        raise ConfigError(f"unknown QA dataset {dataset!r}; expected one of {', '.join(QA_DATASETS)}")


def find_qa_annotations(dataset: str, split: str, data_root: Path | None = None,
                        annotations: Path | None = None) -> Path:
    """The annotation file for ``split``: ``annotations`` if it is a file, else searched for."""
    _check_dataset(dataset)
    split = canonical_split(split)
    if annotations is not None and annotations.is_file():
        return annotations
    root = annotations if annotations is not None else data_root
    if root is None:
        raise ConfigError(f"{dataset}: give data_root (--data-root) or annotations (--annotations)")
    if not root.exists():
        raise DatasetNotFoundError(f"{dataset} {split}: {root} does not exist")
    return find_annotation(root, qa_file_names(dataset, split), f"{dataset} {split} annotations",
                           avoid=_OTHER[dataset])


def read_qa_annotations(path: Path, split: str = "test") -> list[RawQA]:
    """Parse and validate every record of ``path``; raises :class:`AnnotationError` naming the record."""
    split = canonical_split(split)
    data = read_records(path)
    vocab: list[str] | None = None
    prefix = ""
    if isinstance(data, dict):  # VIOLET: {"train": [...], "val": [...], "test": [...], "vocab": [...]}
        if split not in data:
            raise AnnotationError(path, f"no split {split!r} in this file (keys: {', '.join(map(str, data))})")
        vocab = data.get("vocab")
        if vocab is not None and not (isinstance(vocab, list) and all(isinstance(v, str) for v in vocab)):
            raise AnnotationError(path, "'vocab' must be a list of strings")
        data, prefix = data[split], f"{split}"
    if not isinstance(data, list):
        raise AnnotationError(path, f"expected a list of QA records, got {type(data).__name__}")
    out = []
    labels = record_labels(data)
    for i, record in enumerate(data):
        where = f"{prefix}[{i}]" if prefix else labels[i]
        f = Fields(path, where, record)
        ref = f.id("video", "video_id", "video_name", "clip_name")
        question = f.str("question").strip()
        if not question:
            raise f.error("field 'question' is blank")
        answer = _answer(f, vocab).strip()
        if not answer:
            raise f.error("field 'answer' is blank")
        qid = f.id("question_id", "id", "qid") if f.first_present("question_id", "id", "qid") else i
        start, end = f.segment()
        out.append(RawQA(ref, question, answer, qid, start, end, where))
    check_unique(path, ((r.where, r.question_id) for r in out), "question id")
    return out


def _answer(f: Fields, vocab: list[str] | None) -> str:
    name = f.first_present("answer")
    if name is None:
        f.str("answer")  # raises "missing field"
    value = f.record["answer"]
    if vocab is not None and isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(vocab):
            raise f.error(f"answer index {value} outside the vocab of {len(vocab)} words")
        return vocab[value]
    return f.str("answer")


class _VideoResolver:
    """Maps annotation video references to files for one dataset."""

    def __init__(self, dataset: str, annotation_file: Path, data_root: Path | None):
        self.dataset, self.annotation_file, self.data_root = dataset, annotation_file, data_root
        self.ext = _DEFAULT_EXT[dataset]
        self.video_dir: Path | None = None
        self.index: VideoIndex | None = None
        self._mapping: dict[int, str] | None = None

    def bind(self, video_dir: Path) -> None:
        """Use ``video_dir`` for :meth:`path` (indexed recursively for the named datasets)."""
        self.video_dir = video_dir
        self.index = VideoIndex(video_dir) if self.dataset != "custom" else None

    def mapping(self) -> dict[int, str]:
        if self._mapping is None:
            self._mapping = read_youtube_mapping(find_mapping(self.annotation_file, self.data_root))
        return self._mapping

    def stem(self, ref: str | int, index: int | str) -> str:
        """The video's id/stem: ``video12`` (MSRVTT), the YouTube clip name (MSVD)."""
        if self.dataset == "msrvtt-qa":
            text = os.path.splitext(os.path.basename(ref))[0] if isinstance(ref, str) else str(ref)
            m = _MSRVTT_NAME.fullmatch(text)
            if m is None:
                raise AnnotationError(self.annotation_file, f"MSRVTT video reference {ref!r} is neither "
                                      "an integer nor 'video<N>'", index)
            return f"video{int(m.group(1))}"
        if self.dataset == "msvd-qa":
            vid = ref if isinstance(ref, int) else vid_number(os.path.splitext(os.path.basename(ref))[0])
            if vid is None:
                assert isinstance(ref, str)
                name = os.path.basename(ref)
                return os.path.splitext(name)[0] if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS else name
            mapping = self.mapping()
            if vid not in mapping:
                raise AnnotationError(self.annotation_file, f"video id {ref!r} (vid{vid}) is not in "
                                      f"{MAPPING_FILE} ({len(mapping)} entries)", index)
            return mapping[vid]
        if not isinstance(ref, str):
            raise AnnotationError(self.annotation_file, f"field 'video' must be a path string, got {ref!r}", index)
        return ref

    def path(self, stem: str) -> Path:
        assert self.video_dir is not None, "bind() a video folder first"
        if self.index is not None:
            return self.index.resolve(stem, self.ext)
        return custom_video_path(self.video_dir, stem)


def find_mapping(annotation_file: Path, data_root: Path | None) -> Path:
    """``youtube_mapping.txt`` next to the annotations, one level up, or anywhere under the data root."""
    looked = list(dict.fromkeys([annotation_file.parent, annotation_file.parent.parent]))
    for d in looked:
        if (d / MAPPING_FILE).is_file():
            return d / MAPPING_FILE
    if data_root is not None and data_root.is_dir():
        try:
            return find_annotation(data_root, [MAPPING_FILE], "MSVD youtube mapping")
        except DatasetNotFoundError:
            looked = list(dict.fromkeys([*looked, data_root]))
    hint = ""
    if data_root is not None and annotation_file.is_relative_to(data_root) \
            and in_other_dataset(annotation_file.parent, data_root, _OTHER["msvd-qa"]):
        hint = (f" {annotation_file} lies in a folder named for MSR-VTT (taken as no MSVD file was found): "
                "is --data-root the MSVD folder?")
    raise DatasetNotFoundError(
        f"MSVD annotations {annotation_file} use vid numbers, which need {MAPPING_FILE}; looked in "
        f"{', '.join(map(str, looked))}" + (" (and under it)" if data_root is not None else "")
        + ". Put it beside the QA files or under --data-root." + hint)


def load_qa(dataset: str, split: str = "test", data_root: str | Path | None = None,
            annotations: str | Path | None = None, videos: str | Path | None = None) -> QASplit:
    """Load a QA split and locate its videos.

    Args:
        dataset: "msrvtt-qa", "msvd-qa" or "custom".
        split: "train", "val" (also "validate") or "test"; for custom data, the file stem
            searched for when ``annotations`` is a folder.
        data_root: folder to search for annotations and videos (layouts: datasets/*/README.md).
        annotations: an annotation file or a folder holding them; overrides the search.
        videos: the video folder; overrides the search. Custom data: the root that record
            paths are relative to (default: ``data_root``, else the annotation file's folder).

    Returns:
        :class:`QASplit` with every record, the annotated-but-missing videos listed.
    """
    _check_dataset(dataset)
    split = canonical_split(split)
    root = Path(data_root) if data_root is not None else None
    ann = find_qa_annotations(dataset, split, root, Path(annotations) if annotations is not None else None)
    raw = read_qa_annotations(ann, split)
    resolver = _VideoResolver(dataset, ann, root)
    stem_of: dict[str | int, str] = {}
    stems = []
    for r in raw:
        if r.video_ref not in stem_of:
            stem_of[r.video_ref] = resolver.stem(r.video_ref, r.where)
        stems.append(stem_of[r.video_ref])
    if videos is not None:
        video_dir = Path(videos)
    elif dataset == "custom":
        video_dir = root if root is not None else ann.parent
    elif not stems:  # else the video search would blame the videos
        raise AnnotationError(ann, f"the {split} split holds no questions")
    else:
        search_root = root if root is not None else ann.parent.parent
        video_dir = find_video_dir(search_root, set(stems).__contains__, f"{dataset} {split} videos",
                                   near=ann.parent.parent)
    resolver.bind(video_dir)
    records, paths = [], {}
    for r, stem in zip(raw, stems):
        if stem not in paths:
            paths[stem] = resolver.path(stem)
        vid = stem if dataset != "custom" else str(r.video_ref)
        records.append(QARecord(video=paths[stem], question=r.question, answer=r.answer,
                                question_id=r.question_id, question_type=question_type(r.question),
                                start=r.start, end=r.end, video_id=vid))
    missing = [p for p in dict.fromkeys(paths.values()) if not p.is_file()]
    return QASplit(annotation_file=ann, video_dir=video_dir, missing_videos=missing, dataset=dataset,
                   split=split, records=records)


def answer_list(records: Iterable[QARecord | RawQA], top_k: int | None = None) -> list[str]:
    """Distinct answers, most frequent first (ties alphabetical), optionally the ``top_k`` first."""
    counts = Counter(r.answer for r in records)
    ranked = sorted(counts, key=lambda a: (-counts[a], a))
    return ranked[:top_k] if top_k is not None else ranked


def find_train_annotations(dataset: str, annotation_file: str | Path, data_root: str | Path | None = None) -> Path:
    """The training split's annotations that go with another split's ``annotation_file``.

    That same file when it holds every split (VIOLET ``{"train": [...], ...}``); else a train
    file of the same dataset in the file's folder (searched like a data root, so a sibling such
    as ``train_qa.json`` beside ``test_qa.json`` wins); else one under ``data_root``. Raises
    :class:`DatasetNotFoundError` (one line) saying where it looked.
    """
    _check_dataset(dataset)
    annotation_file = Path(annotation_file)
    if annotation_file.suffix.lower() == ".json" and isinstance(read_records(annotation_file), dict):
        return annotation_file
    names = qa_file_names(dataset, "train")
    roots = [annotation_file.parent] + ([Path(data_root)] if data_root is not None else [])
    for root in roots:
        try:
            return find_annotation(root, names, f"{dataset} train annotations", avoid=_OTHER[dataset])
        except DatasetNotFoundError:
            continue
    raise DatasetNotFoundError(f"{dataset}: no train split beside {annotation_file} (looked for "
                               f"{', '.join(names)} under {' and '.join(map(str, roots))})")


def train_answers(dataset: str, data_root: str | Path | None = None, annotations: str | Path | None = None,
                  top_k: int | None = None) -> list[str]:
    """All training answers of a QA dataset, frequency-sorted: the candidate list of the rank protocol.

    Reads only the train annotations (no videos needed). ``annotations`` may be the train
    file itself or a folder to search.
    """
    ann = find_qa_annotations(dataset, "train", Path(data_root) if data_root is not None else None,
                              Path(annotations) if annotations is not None else None)
    return answer_list(read_qa_annotations(ann, "train"), top_k)


def read_answer_file(path: str | Path) -> list[str]:
    """Candidate answers from a file: a JSON list of strings (``.json``) or one answer per line; blanks dropped.

    Raises :class:`ConfigError` when the file is not there, :class:`AnnotationError` naming the file
    (and the entry) when its content is not a list of answers.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    if path.suffix.lower() == ".json":
        loaded = read_json(path)
        if not isinstance(loaded, list):
            raise AnnotationError(path, f"expected a JSON list of answer strings, got {type(loaded).__name__} "
                                        "(a file not ending in .json is read as one answer per line)")
        for i, a in enumerate(loaded):
            if not isinstance(a, str):
                raise AnnotationError(path, f"entry {i} is {type(a).__name__} {a!r}, expected a string")
        answers = [a.strip() for a in loaded if a.strip()]
    else:
        answers = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if not answers:
        raise AnnotationError(path, "holds no answers")
    return answers
