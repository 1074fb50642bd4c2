"""Datasets: MSRVTT-QA, MSVD-QA, MSR-VTT / MSVD captions, 1k-A retrieval, custom QA, video folders.

Loading annotations (no torch needed)::

    from mammut_video.data import load_qa, load_captions, load_retrieval_1ka, train_answers, VideoFolder

    qa = load_qa("msrvtt-qa", "test", data_root="~/data/msrvtt")     # -> QASplit
    qa.records          # list[QARecord], every annotated question (missing videos included)
    qa.missing_videos   # list[Path]: annotated but not on disk; qa.summary() says so in a line
    qa.annotation_file, qa.video_dir

    load_qa("msvd-qa", "val", annotations="MSVD-QA/", videos="YouTubeClips/")
    load_qa("custom", "train", annotations="train.jsonl", videos="clips/")   # JSONL or CSV
    caps = load_captions("msrvtt", "test", data_root=...)   # -> CaptionSplit of CaptionRecord
    ret = load_retrieval_1ka(data_root=...)                 # 1,000 CaptionRecord, one caption each
    answers = train_answers("msrvtt-qa", data_root=...)     # all train answers, most frequent first
    find_train_annotations("msrvtt-qa", qa.annotation_file)  # the train split that goes with a loaded split

Records (dataclasses): ``QARecord(video, question, answer, question_id, question_type, start,
end, video_id)``, ``CaptionRecord(video, video_id, captions, start, end)``,
``VideoRecord(video, video_id, start, end)``. ``question_type`` is the question's first word
when it is what/who/how/when/where, else "other".

Decoding for the model::

    ds = ClipDataset(qa.records, transform=model.preprocess, num_frames=16)
    loader = make_loader(ds, batch_size=8, workers=4)
    log = FailureLog("msrvtt-qa test")
    for batch in loader:          # {"video": (B', C, T, H, W), "items": [...], "failed": [(index, path, error)]}
        log.update(batch)
        ...
    log.report()                  # lists the clips that could not be read

Errors: a malformed or incomplete annotation file raises :class:`AnnotationError` naming the
file and the record; annotations or videos that cannot be found raise
:class:`DatasetNotFoundError` listing where the search looked. Folder layouts:
``datasets/msrvtt/README.md`` and ``datasets/msvd/README.md``.
"""

from __future__ import annotations

from mammut_video._lazy import lazy_exports

_EXPORTS = {
    "QARecord": ".records", "CaptionRecord": ".records", "VideoRecord": ".records", "QASplit": ".records",
    "CaptionSplit": ".records", "question_type": ".records", "QUESTION_TYPES": ".records",
    "AnnotationError": ".files", "DatasetNotFoundError": ".files",
    "VIDEO_EXTENSIONS": ".layout",
    "load_qa": ".qa", "train_answers": ".qa", "find_train_annotations": ".qa", "answer_list": ".qa",
    "read_qa_annotations": ".qa", "read_answer_file": ".qa",
    "QA_DATASETS": ".qa",
    "load_captions": ".captions", "load_retrieval_1ka": ".captions", "CAPTION_DATASETS": ".captions",
    "read_youtube_mapping": ".msvd",
    "VideoFolder": ".folder",
    "ClipDataset": ".clips", "collate_clips": ".clips", "make_loader": ".clips", "FailureLog": ".clips",
    "make_synthetic": ".synthetic",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
