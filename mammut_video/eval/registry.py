"""The evaluation tasks by name: which dataset each reads, its splits, its options and its words.

Light on purpose (no torch): the command line builds every task's ``--help`` from it. A task's
code (prediction, scoring, report rows) is in :mod:`mammut_video.eval.tasks`; its options are
the dataclass named by ``options`` in :mod:`mammut_video.eval.config`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mammut_video.errors import ConfigError

QA_SPLITS = ("train", "val", "validate", "valid", "validation", "dev", "test")


@dataclass(frozen=True)
class TaskInfo:
    """What is known about an evaluation task before anything is loaded."""

    name: str
    kind: str  # "qa", "caption" or "retrieval": which task class, options and metrics
    dataset: str  # the name the data loader takes (load_qa / load_captions)
    title: str
    summary: str
    readme: str
    files: str  # the annotation files searched for, for --help
    splits: tuple[str, ...]  # accepted split names (aliases included); () accepts any file stem
    split_help: str

    @property
    def item(self) -> str:
        return "question" if self.kind == "qa" else "video"

    def check_split(self, split: str) -> str:
        """``split`` if this task has it, else :class:`ConfigError` listing the ones it has."""
        if self.splits and split.lower() not in self.splits:
            raise ConfigError(f"{self.name} has no split {split!r}: {self.split_help}")
        return split


TASKS: dict[str, TaskInfo] = {t.name: t for t in (
    TaskInfo("msrvtt-qa", "qa", "msrvtt-qa", "MSRVTT-QA", "open-ended VideoQA accuracy on MSRVTT-QA",
             "datasets/msrvtt/README.md",
             "{split}_qa.json (original), qa_{split}.json (LAVIS), msrvtt_qa_{split}.json (VindLU/UMT), "
             "{split}.jsonl (ALPRO), txt_msrvtt-qa.json (VIOLET)",
             QA_SPLITS, "expected train, val (or validate) or test"),
    TaskInfo("msvd-qa", "qa", "msvd-qa", "MSVD-QA", "open-ended VideoQA accuracy on MSVD-QA",
             "datasets/msvd/README.md",
             "{split}_qa.json + youtube_mapping.txt (original), qa_{split}.json (LAVIS), msvd_qa_{split}.json "
             "(VindLU/UMT), {split}.jsonl (ALPRO), txt_msvd-qa.json (VIOLET)",
             QA_SPLITS, "expected train, val (or validate) or test"),
    TaskInfo("msrvtt-caption", "caption", "msrvtt", "MSR-VTT captioning", "captioning metrics on MSR-VTT",
             "datasets/msrvtt/README.md",
             "train_val_videodatainfo.json / test_videodatainfo.json, or videodatainfo_2017.json / MSRVTT_data.json",
             ("train", "validate", "val", "valid", "validation", "test"),
             "expected train (6,513 videos), validate (or val, 497) or test (2,990)"),
    TaskInfo("msvd-caption", "caption", "msvd", "MSVD captioning", "captioning metrics on MSVD",
             "datasets/msvd/README.md", "AllVideoDescriptions.txt (+ youtube_mapping.txt)",
             ("train", "val", "validate", "valid", "validation", "test"),
             "expected train (vid1-1200), val (vid1201-1300) or test (vid1301-1970)"),
    TaskInfo("msrvtt-retrieval", "retrieval", "msrvtt-1ka", "MSR-VTT 1k-A retrieval",
             "text<->video retrieval on the MSR-VTT 1k-A test set", "datasets/msrvtt/README.md",
             "MSRVTT_JSFUSION_test.csv", ("test",), "1k-A has one split: its 1,000 test videos (test)"),
    TaskInfo("custom-qa", "qa", "custom", "your own VideoQA set",
             "open-ended VideoQA accuracy on your own annotations (--annotations FILE --videos DIR)",
             "datasets/custom/README.md", "{split}.jsonl, {split}.csv, {split}.json (or {split}_qa.*)",
             (), "any name: the file stem searched for when --annotations is a folder"),
    TaskInfo("custom-caption", "caption", "custom", "your own captioned videos",
             "captioning metrics on your own annotations (--annotations FILE --videos DIR)",
             "datasets/custom/README.md", "{split}_captions.jsonl / .csv / .json (or captions_{split}.*)",
             (), "any name: the file stem searched for when --annotations is a folder"),
)}


def task_info(name: str) -> TaskInfo:
    """The task called ``name``, or :class:`ConfigError` listing the known ones."""
    if name not in TASKS:
        raise ConfigError(f"unknown evaluation task {name!r}; expected one of {', '.join(TASKS)}")
    return TASKS[name]
