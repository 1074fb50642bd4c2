"""Captioning and retrieval annotations: MSR-VTT (videodatainfo, 1k-A) and MSVD (AllVideoDescriptions).

- MSR-VTT: ``train_val_videodatainfo.json`` / ``test_videodatainfo.json`` (or one file with
  all splits, e.g. ``videodatainfo_2017.json``, CLIP4Clip's ``MSRVTT_data.json``):
  ``{"videos": [{video_id, split, ...}], "sentences": [{sen_id, video_id, caption}]}``;
  splits "train" (6,513), "validate" (497, also "val"), "test" (2,990).
- MSR-VTT 1k-A retrieval: ``MSRVTT_JSFUSION_test.csv`` (``key, vid_key, video_id, sentence``),
  one caption per video.
- MSVD: ``AllVideoDescriptions.txt`` (``#`` header lines, then ``<clip name> <sentence>``),
  split by vid number (1-1200 / 1201-1300 / 1301-1970) through ``youtube_mapping.txt``.
- custom (JSONL, CSV or a JSON array; ``datasets/custom/README.md``): ``video`` (path relative to
  the video folder), ``caption`` (one string; several records may caption the same clip) or
  ``captions`` (a list of strings), optional ``start`` / ``end`` (seconds).
"""

from __future__ import annotations

from pathlib import Path

from mammut_video.data.files import (
    ENCODING,
    AnnotationError,
    DatasetNotFoundError,
    Fields,
    check_unique,
    read_csv,
    read_json,
    read_records,
    record_labels,
)
from mammut_video.data.layout import VideoIndex, custom_video_path, find_annotation, find_video_dir, scan
from mammut_video.data.msvd import CAPTION_SPLITS, MAPPING_FILE, mapping_from_names, read_youtube_mapping
from mammut_video.data.records import CaptionRecord, CaptionSplit
from mammut_video.errors import ConfigError

CAPTION_DATASETS = ("msrvtt", "msvd", "custom")
MSRVTT_SPLITS = {"train": "train", "validate": "validate", "val": "validate", "valid": "validate",
                 "validation": "validate", "test": "test"}
MSVD_SPLITS = {"train": "train", "val": "val", "validate": "val", "valid": "val", "validation": "val",
               "test": "test"}
_MSRVTT_ALL = ["videodatainfo_2017.json", "MSRVTT_data.json"]
JSFUSION_TEST = "MSRVTT_JSFUSION_test.csv"
MSVD_DESCRIPTIONS = "AllVideoDescriptions.txt"


def _root_or_error(what: str, data_root: Path | None, annotations: Path | None) -> Path:
    root = annotations if annotations is not None else data_root
    if root is None:
        raise ConfigError(f"{what}: give data_root (--data-root) or annotations (--annotations)")
    return root


def _annotation_file(what: str, names: list[str], data_root: Path | None, annotations: Path | None) -> Path:
    if annotations is not None and annotations.is_file():
        return annotations
    return find_annotation(_root_or_error(what, data_root, annotations), names, what)


def _video_dir(what: str, stems: list[str], ann: Path, data_root: Path | None, videos: Path | None) -> Path:
    if videos is not None:
        return videos
    root = data_root if data_root is not None else ann.parent.parent
    return find_video_dir(root, set(stems).__contains__, what, scan(root), near=ann.parent.parent)


def _finish(dataset: str, split: str, ann: Path, video_dir: Path, items: list[tuple[str, list[str]]],
            ext: str) -> CaptionSplit:
    index = VideoIndex(video_dir)
    records = [CaptionRecord(video=index.resolve(vid, ext), video_id=vid, captions=caps) for vid, caps in items]
    missing = [p for p in dict.fromkeys(r.video for r in records) if not p.is_file()]
    return CaptionSplit(annotation_file=ann, video_dir=video_dir, missing_videos=missing, dataset=dataset,
                        split=split, records=records)


def read_msrvtt_videodatainfo(path: Path, split: str) -> list[tuple[str, list[str]]]:
    """(video id, captions in sen_id order) for the videos of ``split`` ("train"/"validate"/"test").

    A video of the split without a sentence raises :class:`AnnotationError` (naming it): its
    captions could not be scored."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list) \
            or not isinstance(data.get("sentences"), list):
        raise AnnotationError(path, "expected an object with lists 'videos' and 'sentences' (MSR-VTT videodatainfo)")
    videos = _split_videos(path, data["videos"], split)
    captions: dict[str, list[tuple[float, str]]] = {v: [] for v in videos}
    for i, s in enumerate(data["sentences"]):
        f = Fields(path, f"sentences[{i}]", s)
        vid, caption = f.str("video_id"), f.str("caption")
        if vid in captions:
            order = f.record.get("sen_id", i)
            captions[vid].append((order if isinstance(order, (int, float)) else i, caption.strip()))
    for vid, where in videos.items():
        if not captions[vid]:
            raise AnnotationError(path, f"video {vid!r} (split {split!r}) has no sentence in 'sentences'", where)
    return [(v, [c for _, c in sorted(captions[v], key=lambda t: t[0])]) for v in videos]


def _split_videos(path: Path, videos: list, split: str) -> dict[str, str]:
    """{video id: where it is listed ("videos[i]")} for the entries of ``split``, in file order."""
    listed: list[tuple[str, str]] = []
    for i, v in enumerate(videos):
        f = Fields(path, f"videos[{i}]", v)
        if f.str("split") == split:
            listed.append((f"videos[{i}]", f.str("video_id")))
    check_unique(path, listed, "video id")
    return {vid: where for where, vid in listed}


def read_msvd_descriptions(path: Path) -> dict[str, list[str]]:
    """``AllVideoDescriptions.txt`` -> {clip name: [sentences in file order]}."""
    out: dict[str, list[str]] = {}
    with path.open(encoding=ENCODING, errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise AnnotationError(path, f"expected '<clip name> <sentence>', got {line!r}", f"line {lineno}")
            out.setdefault(parts[0], []).append(parts[1])
    if not out:
        raise AnnotationError(path, "no descriptions found")
    return out


def load_captions(dataset: str, split: str = "test", data_root: str | Path | None = None,
                  annotations: str | Path | None = None, videos: str | Path | None = None) -> CaptionSplit:
    """Load a captioning split: one :class:`CaptionRecord` per video with all its references.

    Args:
        dataset: "msrvtt", "msvd" or "custom".
        split: "train", "val"/"validate" or "test"; for custom data, the file stem searched for
            (``{split}_captions.jsonl`` etc.) when ``annotations`` is a folder.
        data_root, annotations, videos: as for :func:`mammut_video.data.load_qa`.
    """
    if dataset not in CAPTION_DATASETS:
        raise ConfigError(f"unknown caption dataset {dataset!r}; expected one of {', '.join(CAPTION_DATASETS)}")
    root = Path(data_root) if data_root is not None else None
    ann_arg = Path(annotations) if annotations is not None else None
    video_arg = Path(videos) if videos is not None else None
    if dataset == "custom":
        return load_custom_captions(split, root, ann_arg, video_arg)
    if dataset == "msrvtt":
        if split.lower() not in MSRVTT_SPLITS:
            raise ConfigError(f"MSR-VTT caption split {split!r}: expected train, validate (val) or test")
        split = MSRVTT_SPLITS[split.lower()]
        own = "test_videodatainfo.json" if split == "test" else "train_val_videodatainfo.json"
        ann = _annotation_file(f"msrvtt {split} captions", [own, *_MSRVTT_ALL], root, ann_arg)
        items = read_msrvtt_videodatainfo(ann, split)
        if not items:
            raise AnnotationError(ann, f"no video has split {split!r} in this file")
        video_dir = _video_dir(f"msrvtt {split} videos", [v for v, _ in items], ann, root, video_arg)
        return _finish("msrvtt", split, ann, video_dir, items, ".mp4")

    if split.lower() not in MSVD_SPLITS:
        raise ConfigError(f"MSVD caption split {split!r}: expected train, val or test")
    split = MSVD_SPLITS[split.lower()]
    ann = _annotation_file(f"msvd {split} captions", [MSVD_DESCRIPTIONS], root, ann_arg)
    descriptions = read_msvd_descriptions(ann)
    mapping_file = _find_msvd_mapping(ann, root)
    if mapping_file is not None:
        mapping = read_youtube_mapping(mapping_file)
    elif len(descriptions) == 1970:  # the full corpus: vid numbers are its byte-sorted clip names
        mapping = mapping_from_names(list(descriptions))
    else:
        raise DatasetNotFoundError(
            f"msvd {split} captions: {MAPPING_FILE} not found beside {ann}, one level up"
            + (f" or under {root}" if root is not None else "")
            + f", and {ann.name} describes {len(descriptions)} clips, not all 1,970, so the vid "
            "numbering that defines the split cannot be derived. Put the mapping beside it.")
    items = [(mapping[v], descriptions.get(mapping[v], [])) for v in CAPTION_SPLITS[split] if v in mapping]
    items = [(name, caps) for name, caps in items if caps]
    if not items:
        raise AnnotationError(ann, f"no described clip falls in the MSVD {split} split (vid "
                                   f"{CAPTION_SPLITS[split].start}-{CAPTION_SPLITS[split].stop - 1})")
    video_dir = _video_dir(f"msvd {split} videos", [n for n, _ in items], ann, root, video_arg)
    return _finish("msvd", split, ann, video_dir, items, ".avi")


def custom_caption_file_names(split: str) -> list[str]:
    """Annotation file names tried for a custom caption split, most specific first."""
    return [f"{stem}{ext}" for stem in (f"{split}_captions", f"captions_{split}")
            for ext in (".jsonl", ".csv", ".json", ".tsv")]


def read_custom_captions(path: Path) -> list[tuple[str, float | None, float | None, list[str]]]:
    """(video, start, end, captions) per clip of a custom caption file, in first-seen order;
    records naming the same clip and segment are merged."""
    data = read_records(path)
    if not isinstance(data, list):
        raise AnnotationError(path, f"expected a list of caption records, got {type(data).__name__}")
    clips: dict[tuple, list[str]] = {}
    for where, record in zip(record_labels(data), data):
        f = Fields(path, where, record)
        video = f.str("video")
        start, end = f.segment()
        if f.has("captions"):
            texts = f.record["captions"]
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise f.error("field 'captions' must be a list of strings")
        else:
            texts = [f.str("caption")]
        texts = [" ".join(t.split()) for t in texts if t.strip()]
        if not texts:
            raise f.error("no caption: 'caption' / 'captions' is blank")
        clips.setdefault((video, start, end), []).extend(texts)
    if not clips:
        raise AnnotationError(path, "holds no caption records")
    return [(video, start, end, caps) for (video, start, end), caps in clips.items()]


def load_custom_captions(split: str, data_root: Path | None, annotations: Path | None,
                         videos: Path | None) -> CaptionSplit:
    """A custom caption split (see the module docstring); video paths are relative to ``videos``
    (default: ``data_root``, else the annotation file's folder)."""
    ann = _annotation_file(f"custom {split} captions", custom_caption_file_names(split), data_root, annotations)
    video_dir = videos if videos is not None else data_root if data_root is not None else ann.parent
    records = []
    for video, start, end, caps in read_custom_captions(ann):
        segment = f"@{start or 0:g}-" + ("end" if end is None else f"{end:g}")
        vid = video if start is None and end is None else video + segment
        records.append(CaptionRecord(video=custom_video_path(video_dir, video), video_id=vid, captions=caps,
                                     start=start, end=end))
    missing = [p for p in dict.fromkeys(r.video for r in records) if not p.is_file()]
    return CaptionSplit(annotation_file=ann, video_dir=video_dir, missing_videos=missing, dataset="custom",
                        split=split, records=records)


def _find_msvd_mapping(ann: Path, root: Path | None) -> Path | None:
    for d in (ann.parent, ann.parent.parent):
        if (d / MAPPING_FILE).is_file():
            return d / MAPPING_FILE
    if root is not None:
        try:
            return find_annotation(root, [MAPPING_FILE], "MSVD youtube mapping")
        except DatasetNotFoundError:
            return None
    return None


def load_retrieval_1ka(split: str = "test", data_root: str | Path | None = None,
                       annotations: str | Path | None = None, videos: str | Path | None = None) -> CaptionSplit:
    """MSR-VTT 1k-A retrieval test set: 1,000 videos, one caption each (``MSRVTT_JSFUSION_test.csv``)."""
    if split != "test":
        raise ConfigError(f"1k-A retrieval split {split!r}: only 'test' (MSRVTT_JSFUSION_test.csv) is supported")
    root = Path(data_root) if data_root is not None else None
    ann = _annotation_file("msrvtt 1k-A retrieval", [JSFUSION_TEST], root,
                           Path(annotations) if annotations is not None else None)
    rows = read_csv(ann)
    labels = record_labels(rows)
    items = []
    for where, row in zip(labels, rows):
        f = Fields(ann, where, row)
        items.append((f.str("video_id"), [f.str("sentence").strip()]))
    if not items:
        raise AnnotationError(ann, "no rows")
    check_unique(ann, ((where, vid) for where, (vid, _) in zip(labels, items)), "video id")
    video_dir = _video_dir("msrvtt 1k-A videos", [v for v, _ in items], ann, root,
                           Path(videos) if videos is not None else None)
    return _finish("msrvtt-1ka", "test", ann, video_dir, items, ".mp4")
