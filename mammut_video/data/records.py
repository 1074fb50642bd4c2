"""Dataset records and loaded splits: what every loader in ``mammut_video.data`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

QUESTION_TYPES = ("what", "who", "how", "when", "where")


def question_type(question: str) -> str:
    """MSRVTT-QA / MSVD-QA question type: the first word if it is what/who/how/when/where, else "other"."""
    words = question.strip().lower().split(maxsplit=1)
    first = words[0].strip("?,.!\"'") if words else ""
    return first if first in QUESTION_TYPES else "other"


def clip_key(video: str | Path, start: float | None, end: float | None) -> tuple[str, float | None, float | None]:
    """The clip a record reads: items with the same key (questions about one segment) share one decoded clip."""
    return (str(video), start, end)


@dataclass
class QARecord:
    """One question about one clip. ``start`` / ``end`` (seconds) restrict decoding to a segment."""

    video: Path
    question: str
    answer: str
    question_id: str | int
    question_type: str
    start: float | None = None
    end: float | None = None
    video_id: str = ""


@dataclass
class CaptionRecord:
    """One clip with all its reference captions (several for captioning, one for retrieval)."""

    video: Path
    video_id: str
    captions: list[str]
    start: float | None = None
    end: float | None = None


@dataclass
class VideoRecord:
    """One video of a folder; ``video_id`` is its path relative to the folder root."""

    video: Path
    video_id: str
    start: float | None = None
    end: float | None = None


@dataclass
class _Split:
    annotation_file: Path
    video_dir: Path | None
    missing_videos: list[Path] = field(default_factory=list)

    def _summary(self, what: str, count: int, dataset: str, split: str) -> str:
        line = f"{dataset} {split}: {count} {what} from {self.annotation_file}"
        if self.missing_videos:
            shown = ", ".join(str(p) for p in self.missing_videos[:5])
            more = f" (+{len(self.missing_videos) - 5} more)" if len(self.missing_videos) > 5 else ""
            line += (f"; {len(self.missing_videos)} annotated videos are missing under "
                     f"{self.video_dir}: {shown}{more}")
        return line


@dataclass
class QASplit(_Split):
    """A loaded QA split.

    ``records`` holds EVERY annotated question, also those whose video is missing on disk
    (accuracy is over all questions; a clip that cannot be read counts wrong). Missing files
    are listed in ``missing_videos``; ``present_records`` leaves their questions out.
    """

    dataset: str = ""
    split: str = ""
    records: list[QARecord] = field(default_factory=list)

    @property
    def present_records(self) -> list[QARecord]:
        missing = set(self.missing_videos)
        return [r for r in self.records if r.video not in missing]

    def summary(self) -> str:
        return self._summary("questions", len(self.records), self.dataset, self.split)


@dataclass
class CaptionSplit(_Split):
    """A loaded captioning (or retrieval) split; same conventions as :class:`QASplit`."""

    dataset: str = ""
    split: str = ""
    records: list[CaptionRecord] = field(default_factory=list)

    @property
    def present_records(self) -> list[CaptionRecord]:
        missing = set(self.missing_videos)
        return [r for r in self.records if r.video not in missing]

    def summary(self) -> str:
        return self._summary("videos", len(self.records), self.dataset, self.split)
