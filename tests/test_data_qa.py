import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

import mammut_video  # noqa: F401
from mammut_video.data import (
    AnnotationError,
    DatasetNotFoundError,
    load_captions,
    load_qa,
    question_type,
    read_youtube_mapping,
    train_answers,
)
from mammut_video.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("qa"), num_videos=4, frames=4, size=16, seed=1)


def _triples(split):
    return [(r.video, r.question, r.answer) for r in split.records]


def _write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_question_type_by_first_word():
    assert question_type("What is he doing?") == "what"
    assert question_type("  who cuts the onion") == "who"
    assert question_type("where? nobody knows") == "where"
    assert question_type("is it raining?") == "other"
    assert question_type("") == "other"


@pytest.mark.parametrize("dataset,kind,ext", [("msrvtt-qa", "msrvtt", ".mp4"), ("msvd-qa", "msvd", ".avi")])
def test_original_release_found_under_data_root(synth, dataset, kind, ext):
    for split in ("train", "val", "test"):
        qa = load_qa(dataset, split, data_root=synth[kind])
        assert qa.records and not qa.missing_videos
        assert qa.annotation_file.name == f"{split}_qa.json"
        assert all(r.video.is_file() and r.video.suffix == ext for r in qa.records)
        assert {r.question_type for r in qa.records} <= {"what", "how", "where", "who", "when", "other"}
        assert all(r.video.stem == r.video_id for r in qa.records)
    assert load_qa(dataset, "validate", data_root=synth[kind]).split == "val"


def _repackage(original, fmt, dataset, tmp, mapping):
    """Write the original test records in a repackaged format; returns the file."""
    def name(vid):
        return f"video{vid}" if dataset == "msrvtt-qa" else mapping[vid]
    ext = ".mp4" if dataset == "msrvtt-qa" else ".avi"
    short = dataset.split("-")[0]
    if fmt == "lavis":
        return _write_json(tmp / "qa_test.json", [{"video": name(r["video_id"]) + ext, "question": r["question"],
                                                   "answer": r["answer"], "question_id": r["id"]} for r in original])
    if fmt == "vindlu":
        return _write_json(tmp / f"{short}_qa_test.json", [{"video": name(r["video_id"]) + ext, "question": r["question"],
                                                            "answer": r["answer"]} for r in original])
    if fmt == "alpro":
        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / "test.jsonl"
        path.write_text("".join(json.dumps({"answer": r["answer"], "question": r["question"],
                                            "video_id": name(r["video_id"]), "answer_type": "what"}) + "\n"
                                for r in original))
        return path
    vocab = sorted({r["answer"] for r in original})
    items = [{"video": name(r["video_id"]), "question": r["question"], "answer": vocab.index(r["answer"])}
             for r in original]
    return _write_json(tmp / f"txt_{dataset}.json", {"train": [], "val": [], "test": items, "vocab": vocab})


@pytest.mark.parametrize("fmt", ["lavis", "vindlu", "alpro", "violet"])
@pytest.mark.parametrize("dataset,kind,videos", [("msrvtt-qa", "msrvtt", "videos/all"), ("msvd-qa", "msvd", "YouTubeClips")])
def test_repackaged_formats_give_the_same_records(synth, tmp_path, fmt, dataset, kind, videos):
    root = synth[kind]
    reference = load_qa(dataset, "test", data_root=root)
    original = json.loads(reference.annotation_file.read_text())
    mapping = read_youtube_mapping(root / "MSVD-QA" / "youtube_mapping.txt") if kind == "msvd" else {}
    ann = _repackage(original, fmt, dataset, tmp_path / "annotations", mapping)
    # as a file, and as a folder to search
    for annotations in (ann, ann.parent):
        qa = load_qa(dataset, "test", annotations=annotations, videos=root / videos)
        assert qa.annotation_file == ann
        assert _triples(qa) == _triples(reference)
        assert not qa.missing_videos
    # discovered under a data root laid out the way that codebase ships it
    layout = tmp_path / "layout"
    shutil.copytree(ann.parent, layout / "anno_downstream")
    shutil.copytree(root / videos, layout / "videos")
    qa = load_qa(dataset, "test", data_root=layout)
    assert [(r.question, r.answer) for r in qa.records] == [(q, a) for _, q, a in _triples(reference)]
    assert qa.video_dir == layout / "videos" and not qa.missing_videos


def test_msrvtt_videos_split_over_two_download_folders(synth, tmp_path):
    root = synth["msrvtt"]
    shutil.copytree(root / "msrvtt_qa", tmp_path / "MSRVTT-QA")
    for p in (root / "videos" / "all").glob("*.mp4"):
        sub = "TestVideo" if int(p.stem[5:]) >= 7010 else "TrainValVideo"
        (tmp_path / "MSRVTT" / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, tmp_path / "MSRVTT" / sub / p.name)
    for split in ("train", "test"):
        qa = load_qa("msrvtt-qa", split, data_root=tmp_path)
        folder = tmp_path / "MSRVTT" / ("TestVideo" if split == "test" else "TrainValVideo")
        assert qa.video_dir == folder and not qa.missing_videos
        assert all(r.video.parent == folder for r in qa.records)
    # annotations naming videos of both folders (here: one file holding all splits) index their parent
    merged = [r for s in ("train", "test") for r in json.loads((root / "msrvtt_qa" / f"{s}_qa.json").read_text())]
    ann = _write_json(tmp_path / "all_qa" / "test_qa.json", merged)
    qa = load_qa("msrvtt-qa", "test", data_root=tmp_path, annotations=ann)
    assert qa.video_dir == tmp_path / "MSRVTT" and not qa.missing_videos
    assert {r.video.parent.name for r in qa.records} == {"TestVideo", "TrainValVideo"}


def test_root_holding_both_datasets(synth, tmp_path):
    shutil.copytree(synth["msrvtt"], tmp_path / "MSRVTT")
    shutil.copytree(synth["msvd"], tmp_path / "msvd_data")
    for dataset, folder in (("msvd-qa", "msvd_data"), ("msrvtt-qa", "MSRVTT")):
        qa = load_qa(dataset, "test", data_root=tmp_path)
        assert qa.annotation_file.is_relative_to(tmp_path / folder) and not qa.missing_videos


def test_explicit_paths_override_discovery(synth, tmp_path):
    root = synth["msrvtt"]
    other = tmp_path / "elsewhere"
    shutil.copytree(root / "videos" / "all", other)
    qa = load_qa("msrvtt-qa", "test", data_root=root, videos=other)
    assert qa.video_dir == other and all(r.video.parent == other for r in qa.records)
    ann = tmp_path / "mine.json"
    shutil.copy(root / "msrvtt_qa" / "val_qa.json", ann)
    qa = load_qa("msrvtt-qa", "test", data_root=root, annotations=ann)
    assert qa.annotation_file == ann


def test_custom_jsonl_and_csv(synth, tmp_path):
    root = synth["custom"]
    qa = load_qa("custom", "train", data_root=root)
    assert qa.annotation_file.name == "train.jsonl" and not qa.missing_videos
    assert all(r.video.is_file() for r in qa.records)
    assert qa.records[0].question_id == "train-0-0"
    with_segment = [r for r in qa.records if r.start is not None]
    assert with_segment and all(r.end == 0.5 and r.start == 0.0 for r in with_segment)
    # the same records as CSV, video root given separately
    rows = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    path = tmp_path / "qa.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, ["video", "question", "answer", "start", "end", "id"])
        w.writeheader()
        w.writerows(rows)
    from_csv = load_qa("custom", "train", annotations=path, videos=root)
    assert _triples(from_csv) == _triples(qa)
    assert [(r.start, r.end, r.question_id) for r in from_csv.records] == \
        [(r.start, r.end, r.question_id) for r in qa.records]
    # without an id the record index is the question id
    (tmp_path / "noid.jsonl").write_text(json.dumps({"video": rows[0]["video"], "question": "what?", "answer": "x"}))
    assert load_qa("custom", "x", annotations=tmp_path / "noid.jsonl", videos=root).records[0].question_id == 0


def test_missing_videos_are_listed_not_dropped(synth, tmp_path):
    root = tmp_path / "msrvtt"
    shutil.copytree(synth["msrvtt"], root)
    full = load_qa("msrvtt-qa", "train", data_root=root)
    gone = full.records[0].video
    gone.unlink()
    qa = load_qa("msrvtt-qa", "train", data_root=root)
    assert qa.missing_videos == [gone]
    assert len(qa.records) == len(full.records)
    lost = sum(r.video == gone for r in qa.records)
    assert lost > 0 and len(qa.present_records) == len(qa.records) - lost
    assert "1 annotated videos are missing" in qa.summary() and str(gone) in qa.summary()


def test_nothing_found_lists_where_it_looked(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "videos").mkdir()
    with pytest.raises(DatasetNotFoundError) as err:
        load_qa("msrvtt-qa", "test", data_root=tmp_path)
    msg = str(err.value)
    assert "test_qa.json" in msg and "qa_test.json" in msg
    assert str(tmp_path / "annotations") in msg and str(tmp_path / "videos") in msg
    _write_json(tmp_path / "annotations" / "test_qa.json",
                [{"answer": "a", "id": 0, "question": "what?", "video_id": 7010}])
    with pytest.raises(DatasetNotFoundError, match="no video files") as err:
        load_qa("msrvtt-qa", "test", data_root=tmp_path)
    assert str(tmp_path / "videos") in str(err.value)


GOOD = {"answer": "dog", "id": 3, "question": "what runs?", "video_id": 7010}


@pytest.mark.parametrize("records,pattern", [
    ([GOOD, {k: v for k, v in GOOD.items() if k != "question"}], r"record 1: missing field 'question'"),
    ([GOOD, GOOD, {**GOOD, "answer": ["dog"]}], r"record 2: field 'answer' must be a string, got list"),
    ([{**GOOD, "video_id": 1.5}], r"record 0: field 'video_id' must be a string or an integer, got float"),
    ([GOOD, "just a string"], r"record 1: expected an object"),
    ([{**GOOD, "video_id": "clip_of_cats"}], r"record 0: MSRVTT video reference 'clip_of_cats'"),
    ({"questions": []}, r"no split 'test' in this file"),
])
def test_bad_records_name_file_and_index(tmp_path, records, pattern):
    path = _write_json(tmp_path / "test_qa.json", records)
    with pytest.raises(AnnotationError, match=pattern) as err:
        load_qa("msrvtt-qa", "test", annotations=path, videos=tmp_path)
    assert str(path) in str(err.value)


def test_malformed_json_and_jsonl_and_csv(tmp_path):
    path = tmp_path / "test_qa.json"
    path.write_text('[{"answer": "dog", "id": 1,\n "question": "what?" "video_id": 3}]')
    with pytest.raises(AnnotationError, match=r"test_qa.json: malformed JSON at line 2 column"):
        load_qa("msrvtt-qa", "test", annotations=path, videos=tmp_path)
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"video": "a.mp4", "question": "q", "answer": "a"}) + "\n\n{broken\n")
    with pytest.raises(AnnotationError, match=r"test.jsonl: record line 3: malformed JSON"):
        load_qa("custom", "test", annotations=path, videos=tmp_path)
    path = tmp_path / "test.csv"  # lines counted as in the file: the header, a quoted cell over two lines, a blank
    path.write_text('video,question,answer\na.mp4,"what is\nthis?",dog\n\nb.mp4,who?,\n')
    with pytest.raises(AnnotationError, match=r"test.csv: record line 5: missing field 'answer'"):
        load_qa("custom", "test", annotations=path, videos=tmp_path)
    path.write_text("video,question,answer,start\na.mp4,what?,dog,1\nb.mp4,who?,,\nc.mp4,how?,x,soon\n")
    with pytest.raises(AnnotationError, match=r"test.csv: record line 3: missing field 'answer'"):
        load_qa("custom", "test", annotations=path, videos=tmp_path)
    path.write_text("video,question,answer,start\na.mp4,what?,dog,soon\n")
    with pytest.raises(AnnotationError, match=r"test.csv: record line 2: field 'start' must be a number of seconds"):
        load_qa("custom", "test", annotations=path, videos=tmp_path)
    path.write_text("video,question,answer,start,end\na.mp4,what?,dog,3,2\n")
    with pytest.raises(AnnotationError, match=r"record line 2: end \(2.0\) must be after start"):
        load_qa("custom", "test", annotations=path, videos=tmp_path)


def test_msvd_ids_need_the_mapping(synth, tmp_path):
    ann = tmp_path / "qa" / "test_qa.json"
    shutil.copytree(synth["msvd"] / "MSVD-QA", ann.parent)
    (ann.parent / "youtube_mapping.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="youtube_mapping.txt") as err:
        load_qa("msvd-qa", "test", annotations=ann, videos=synth["msvd"] / "YouTubeClips")
    assert str(ann.parent) in str(err.value)
    (ann.parent / "youtube_mapping.txt").write_text("abc_1_2 vid1\n")
    with pytest.raises(AnnotationError, match=r"record 0: video id \d+ \(vid\d+\) is not in youtube_mapping.txt"):
        load_qa("msvd-qa", "test", annotations=ann, videos=synth["msvd"] / "YouTubeClips")
    (ann.parent / "youtube_mapping.txt").write_text("abc_1_2 vid1\nno-vid-here\n")
    with pytest.raises(AnnotationError, match=r"youtube_mapping.txt: record line 2: expected"):
        load_qa("msvd-qa", "test", annotations=ann, videos=synth["msvd"] / "YouTubeClips")


def test_violet_answer_index_out_of_vocab(tmp_path):
    path = _write_json(tmp_path / "txt_msvd-qa.json",
                       {"test": [{"video": "abc_1_2", "question": "what?", "answer": 5}], "vocab": ["a", "b"]})
    with pytest.raises(AnnotationError, match=r"record test\[0\]: answer index 5 outside the vocab of 2"):
        load_qa("msvd-qa", "test", annotations=path, videos=tmp_path)


def test_train_answers_frequency_sorted(synth):
    answers = train_answers("msrvtt-qa", data_root=synth["msrvtt"])
    train = json.loads((synth["msrvtt"] / "msrvtt_qa" / "train_qa.json").read_text())
    counts = Counter(r["answer"] for r in train)
    assert sorted(answers) == sorted(counts)
    assert [counts[a] for a in answers] == sorted(counts.values(), reverse=True)
    assert train_answers("msrvtt-qa", data_root=synth["msrvtt"], top_k=2) == answers[:2]


def test_real_msvd_mapping_and_violet_questions(realdata, tmp_path):
    msvd = realdata / "msvd"
    mapping = read_youtube_mapping(msvd / "youtube_mapping.txt")
    assert len(mapping) == 1970 and mapping[1] == "-4wsuPCjDBc_5_15"
    names = [mapping[i] for i in range(1, 1971)]
    assert names == sorted(names, key=str.encode)
    raw = json.loads((msvd / "violet_txt_msvd-qa.json").read_text())
    qa = load_qa("msvd-qa", "test", annotations=msvd / "violet_txt_msvd-qa.json", videos=tmp_path)
    assert len(qa.records) == len(raw["test"]) == 50
    first = raw["test"][0]
    assert qa.records[0].video == tmp_path / f"{first['video']}.avi"
    assert qa.records[0].answer == raw["vocab"][first["answer"]]
    assert qa.records[0].question == first["question"]
    assert sorted(qa.missing_videos) == sorted({tmp_path / f"{r['video']}.avi" for r in raw["test"]})
    assert {r.question_type for r in qa.records} <= {"what", "who", "how", "when", "where", "other"}
    assert len(train_answers("msvd-qa", annotations=msvd / "violet_txt_msvd-qa.json")) > 10
    # the original release's integer ids go through the real mapping to the same names
    vid_of = {name: vid for vid, name in mapping.items()}
    original = [{"answer": "x", "id": i, "question": r["question"], "video_id": vid_of[r["video"]]}
                for i, r in enumerate(raw["test"])]
    ann = _write_json(tmp_path / "MSVD-QA" / "test_qa.json", original)
    shutil.copy(msvd / "youtube_mapping.txt", ann.parent / "youtube_mapping.txt")
    by_id = load_qa("msvd-qa", "test", annotations=ann, videos=tmp_path)
    assert [r.video for r in by_id.records] == [r.video for r in qa.records]


def test_duplicate_question_ids_name_the_id_and_both_records(tmp_path):
    path = _write_json(tmp_path / "test_qa.json", [GOOD, {**GOOD, "id": 4}, {**GOOD, "id": 3}])
    with pytest.raises(AnnotationError, match=r"test_qa.json: record 2: question id 3 is also used by record 0"):
        load_qa("msrvtt-qa", "test", annotations=path, videos=tmp_path)
    # ids are compared as the strings predictions are keyed by; JSONL records are named by line
    path = tmp_path / "test.jsonl"
    rows = [{"video": "a.mp4", "question": "what?", "answer": "x", "id": 7},
            {"video": "b.mp4", "question": "who?", "answer": "y", "id": "7"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(AnnotationError, match=r"test.jsonl: record line 2: question id '7' is also used by record line 1"):
        load_qa("custom", "test", annotations=path, videos=tmp_path)


@pytest.mark.parametrize("field", ["question", "answer"])
def test_blank_question_or_answer_is_refused(tmp_path, field):
    path = _write_json(tmp_path / "test_qa.json", [GOOD, {**GOOD, "id": 4, field: "   "}])
    with pytest.raises(AnnotationError, match=rf"test_qa.json: record 1: field '{field}' is blank"):
        load_qa("msrvtt-qa", "test", annotations=path, videos=tmp_path)


def test_find_train_annotations_beside_the_evaluated_split(synth, tmp_path):
    from mammut_video.data import find_train_annotations

    qa_dir = synth["msvd"] / "MSVD-QA"
    assert find_train_annotations("msvd-qa", qa_dir / "test_qa.json") == qa_dir / "train_qa.json"
    # a file holding every split (VIOLET) is its own train split
    violet = _write_json(tmp_path / "violet" / "txt_msvd-qa.json",
                         {"train": [{"video": "a", "question": "what?", "answer": 0}], "test": [], "vocab": ["x"]})
    assert find_train_annotations("msvd-qa", violet) == violet
    assert train_answers("msvd-qa", annotations=find_train_annotations("msvd-qa", violet)) == ["x"]
    # nothing beside it: the data root is searched next, then a one-line error
    alone = _write_json(tmp_path / "alone" / "test_qa.json", [GOOD])
    assert find_train_annotations("msvd-qa", alone, data_root=synth["msvd"]) == qa_dir / "train_qa.json"
    with pytest.raises(DatasetNotFoundError, match=r"no train split beside .*test_qa.json") as err:
        find_train_annotations("msvd-qa", alone)
    assert "\n" not in str(err.value) and "train_qa.json" in str(err.value)


def test_files_that_are_not_utf8_name_the_file(tmp_path):
    latin1 = "caf\xe9".encode("latin-1")
    path = tmp_path / "test.jsonl"
    path.write_bytes(b'{"video": "a.mp4", "question": "' + latin1 + b'?", "answer": "x"}\n')
    with pytest.raises(AnnotationError, match=r"test.jsonl: not UTF-8 text"):
        load_qa("custom", "test", annotations=path, videos=tmp_path)
    path = tmp_path / "test.csv"
    path.write_bytes(b"video,question,answer\na.mp4," + latin1 + b"?,x\n")
    with pytest.raises(AnnotationError, match=r"test.csv: not UTF-8 text"):
        load_qa("custom", "test", annotations=path, videos=tmp_path)
    mapping = tmp_path / "youtube_mapping.txt"
    mapping.write_bytes(latin1 + b"_1_2 vid1\n")
    with pytest.raises(AnnotationError, match=r"youtube_mapping.txt: not UTF-8 text"):
        read_youtube_mapping(mapping)


def test_videos_next_to_the_annotations_win_over_same_named_clips_elsewhere(synth, tmp_path, monkeypatch):
    """A root holding several datasets: the annotation file's own videos (here too deep to be seen
    from the root) are taken, not a few same-named clips in another dataset's folder; another
    folder is taken only when it holds more of the named videos."""
    deep = tmp_path / "projects" / "demo"
    shutil.copytree(synth["msrvtt"], deep / "msrvtt")
    decoy = tmp_path / "real" / "msrvtt"
    decoy.mkdir(parents=True)
    test_videos = sorted({r.video for r in load_qa("msrvtt-qa", "test", data_root=synth["msrvtt"]).records})
    shutil.copy(test_videos[0], decoy / test_videos[0].name)
    qa = load_qa("msrvtt-qa", "test", data_root=tmp_path)
    assert qa.annotation_file.is_relative_to(deep) and qa.video_dir == deep / "msrvtt" / "videos" / "all"
    assert not qa.missing_videos
    (tmp_path / "linked").symlink_to(tmp_path)
    monkeypatch.chdir(tmp_path)
    ann = deep / "msrvtt" / "msrvtt_qa" / "test_qa.json"
    # a relative root with the annotation file named absolutely; a root through a symlink
    for root, annotations in ((Path("."), ann), (tmp_path / "linked", None), (tmp_path / "linked", ann)):
        qa = load_qa("msrvtt-qa", "test", data_root=root, annotations=annotations)
        assert qa.video_dir.resolve() == (deep / "msrvtt" / "videos" / "all").resolve() and not qa.missing_videos

    # the annotation's folder holds one of its clips, another folder all of them: the other folder
    train_videos = sorted({r.video for r in load_qa("msrvtt-qa", "train", data_root=synth["msrvtt"]).records})
    assert len(train_videos) > 1
    ann_only = tmp_path / "second"
    (ann_only / "msrvtt_qa").mkdir(parents=True)
    shutil.copy(synth["msrvtt"] / "msrvtt_qa" / "train_qa.json", ann_only / "msrvtt_qa" / "train_qa.json")
    (ann_only / "clips").mkdir()
    shutil.copy(train_videos[0], ann_only / "clips" / train_videos[0].name)
    full = tmp_path / "third" / "MSRVTT"
    shutil.copytree(synth["msrvtt"] / "videos", full)
    qa = load_qa("msrvtt-qa", "train", data_root=tmp_path, annotations=ann_only / "msrvtt_qa" / "train_qa.json")
    assert qa.video_dir == tmp_path and not qa.missing_videos  # the common parent of the folders with its clips


def test_files_saved_with_a_byte_order_mark_are_read(synth, tmp_path):
    """Excel's "CSV UTF-8" (and some editors) put a BOM before the first field name."""
    root = synth["custom"]
    reference = load_qa("custom", "train", data_root=root)
    rows = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8-sig")
    array = _write_json(tmp_path / "bom.json", rows)
    array.write_text(array.read_text(), encoding="utf-8-sig")
    lines_in_json = tmp_path / "lines.json"  # a .json file holding JSON lines
    lines_in_json.write_bytes(jsonl.read_bytes())
    table = tmp_path / "bom.csv"
    with table.open("w", newline="", encoding="utf-8-sig") as f:
        w = csv.DictWriter(f, ["video", "question", "answer", "start", "end", "id"])
        w.writeheader()
        w.writerows(rows)
    for path in (jsonl, array, lines_in_json, table):
        assert path.read_bytes().startswith(b"\xef\xbb\xbf")
        qa = load_qa("custom", "train", annotations=path, videos=root)
        assert _triples(qa) == _triples(reference), path.name
    mapping = tmp_path / "youtube_mapping.txt"
    mapping.write_text("abc_1_2 vid1\n", encoding="utf-8-sig")
    assert read_youtube_mapping(mapping) == {1: "abc_1_2"}
    answers = tmp_path / "answers.txt"
    answers.write_text("dog\ncat\n", encoding="utf-8-sig")
    from mammut_video.data import read_answer_file
    assert read_answer_file(answers) == ["dog", "cat"]


def test_tsv_is_split_on_tabs(synth, tmp_path):
    root = synth["custom"]
    reference = load_qa("custom", "train", data_root=root)
    rows = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    rows[0]["question"] = "what, if anything, moves?"  # a comma is text in a TSV
    path = tmp_path / "qa.tsv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, ["video", "question", "answer", "start", "end", "id"], delimiter="\t")
        w.writeheader()
        w.writerows(rows)
    qa = load_qa("custom", "train", annotations=path, videos=root)
    assert qa.records[0].question == "what, if anything, moves?"
    assert _triples(qa)[1:] == _triples(reference)[1:]
    assert [r.question_id for r in qa.records] == [r.question_id for r in reference.records]
    found = tmp_path / "ann"  # a folder given as annotations: train.tsv is found there like train.jsonl
    found.mkdir()
    path.rename(found / "train.tsv")
    assert load_qa("custom", "train", annotations=found, videos=root).annotation_file == found / "train.tsv"
    path.write_text("video\tquestion\tanswer\na.mp4\twhat?\tdog\textra\n")
    with pytest.raises(AnnotationError, match=r"qa.tsv: record line 2: row has 4 cells but the header has 3"):
        load_qa("custom", "train", annotations=path, videos=root)
    path = tmp_path / "qa.txt"
    path.write_text("video,question,answer\n")
    with pytest.raises(AnnotationError, match=r"unknown annotation file type '.txt' \(expected .json, .jsonl, .csv or .tsv\)"):
        load_qa("custom", "train", annotations=path, videos=root)


def test_jsonl_records_are_named_by_their_line(tmp_path):
    """Blank lines do not shift the number; a malformed line is named the same way; a JSON array keeps its index."""
    ok = json.dumps({"video": "a.mp4", "question": "what?", "answer": "dog"})
    path = tmp_path / "test.jsonl"
    for text, pattern in [
        (f"{ok}\n\n{ok}\n\n" + json.dumps({"video": "a.mp4", "question": "who?"}) + "\n",
         r"test.jsonl: record line 5: missing field 'answer'"),
        (f"\n{ok}\n" + json.dumps({"video": 3, "question": "who?", "answer": "x"}) + "\n",
         r"test.jsonl: record line 3: field 'video' must be a path string"),
        (f"{ok}\n\n\n" + json.dumps({"video": "a.mp4", "question": "who?", "answer": "x", "start": 2, "end": 1}),
         r"test.jsonl: record line 4: end \(1.0\) must be after start"),
        (f"{ok}\n\n{{broken\n", r"test.jsonl: record line 3: malformed JSON: Expecting"),
    ]:
        path.write_text(text)
        with pytest.raises(AnnotationError, match=pattern) as err:
            load_qa("custom", "test", annotations=path, videos=tmp_path)
        assert err.value.record == pattern.split("record ")[1].split(":")[0]
    lines_in_json = tmp_path / "test.json"  # a .json file holding JSON lines is read as JSON lines
    lines_in_json.write_text(f"{ok}\n\n" + json.dumps({"video": "a.mp4", "answer": "x"}) + "\n")
    with pytest.raises(AnnotationError, match=r"test.json: record line 3: missing field 'question'"):
        load_qa("custom", "test", annotations=lines_in_json, videos=tmp_path)


@pytest.mark.parametrize("field,value,pattern", [
    ("video", None, r"record line 1: field 'video' must be a string or an integer, got null"),
    ("answer", None, r"record line 1: field 'answer' must be a string, got null"),
    ("question", "", r"record line 1: field 'question' is blank"),
])
def test_a_null_or_empty_field_is_not_called_missing(tmp_path, field, value, pattern):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"video": "a.mp4", "question": "what?", "answer": "dog", field: value}) + "\n")
    with pytest.raises(AnnotationError, match=pattern) as err:
        load_qa("custom", "test", annotations=path, videos=tmp_path)
    assert "missing" not in str(err.value)


@pytest.mark.parametrize("segment,pattern", [
    ('"start": NaN', r"record line 2: start must be a finite number of seconds >= 0, got nan"),
    ('"end": Infinity', r"record line 2: end must be a finite number of seconds > 0, got inf"),
    ('"start": -Infinity', r"record line 2: start must be a finite number of seconds >= 0, got -inf"),
    ('"end": 0', r"record line 2: end must be a finite number of seconds > 0, got 0.0"),  # caption / ask's rule too
])
def test_segment_bounds_that_are_not_finite_are_refused_at_load(tmp_path, segment, pattern):
    """Python's json reads NaN / Infinity; they used to pass loading and fail clip by clip in training."""
    path = tmp_path / "test.jsonl"
    path.write_text('{"video": "a.mp4", "question": "what?", "answer": "dog"}\n'
                    '{"video": "a.mp4", "question": "who?", "answer": "cat", ' + segment + "}\n")
    with pytest.raises(AnnotationError, match=pattern):
        load_qa("custom", "test", annotations=path, videos=tmp_path)
    table = tmp_path / "test.csv"
    table.write_text("video,question,answer,start,end\na.mp4,what?,dog,0,nan\n")
    with pytest.raises(AnnotationError, match=r"test.csv: record line 2: end must be a finite number of seconds > 0, got nan"):
        load_qa("custom", "test", annotations=table, videos=tmp_path)
    captions = tmp_path / "test_captions.jsonl"
    captions.write_text('{"video": "a.mp4", "caption": "a dog", ' + segment + "}\n")
    with pytest.raises(AnnotationError, match=pattern.replace("line 2", "line 1")):
        load_captions("custom", "test", annotations=captions, videos=tmp_path)


def test_an_empty_split_under_a_data_root_says_it_holds_no_questions(synth, tmp_path):
    """Not that no video is named as the dataset expects (the words `eval` uses with --annotations)."""
    root = tmp_path / "msrvtt"
    shutil.copytree(synth["msrvtt"], root)
    ann = _write_json(root / "msrvtt_qa" / "test_qa.json", [])
    with pytest.raises(AnnotationError, match=rf"^{ann}: the test split holds no questions$"):
        load_qa("msrvtt-qa", "test", data_root=root)


def test_msvd_qa_on_an_msrvtt_root_lists_each_folder_once(synth):
    """The MSVD loader falls back to MSR-VTT's test_qa.json; the error names each folder once and says why."""
    root = synth["msrvtt"]
    with pytest.raises(DatasetNotFoundError, match="youtube_mapping.txt") as err:
        load_qa("msvd-qa", "test", data_root=root)
    msg = str(err.value)
    looked = msg.split("looked in ")[1].split(" (and under it)")[0].split(", ")
    assert looked == [str(root / "msrvtt_qa"), str(root)]
    assert "msrvtt" in msg.split(". ")[-1].lower() and "\n" not in msg
