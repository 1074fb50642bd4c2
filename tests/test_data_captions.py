import json
import shutil

import pytest

import mammut_video  # noqa: F401
from mammut_video.data import AnnotationError, DatasetNotFoundError, VideoFolder, load_captions, load_retrieval_1ka
from mammut_video.data.synthetic import captions, make_synthetic


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("cap"), kind="all", num_videos=5, frames=4, size=16, seed=2)


def _scenes(root):
    from mammut_video.data.synthetic import Scene, Shape

    raw = json.loads((root / "scenes.json").read_text())
    return {k: Scene([Shape(**s) for s in v["shapes"]], tuple(v["background"]), v["speed"]) for k, v in raw.items()}


def test_msrvtt_caption_splits(synth):
    root = synth["msrvtt"]
    scenes = _scenes(root)
    ranges = {"train": range(0, 6513), "validate": range(6513, 7010), "test": range(7010, 10000)}
    seen = []
    for split, allowed in ranges.items():
        cap = load_captions("msrvtt", split, data_root=root)
        assert cap.records and not cap.missing_videos and cap.split == split
        for r in cap.records:
            assert int(r.video_id[5:]) in allowed and r.video.name == f"{r.video_id}.mp4" and r.video.is_file()
            assert r.captions == captions(scenes[r.video_id])  # all references, in sen_id order
        seen += [r.video_id for r in cap.records]
    assert sorted(seen) == sorted(scenes)
    assert load_captions("msrvtt", "val", data_root=root).split == "validate"


def test_msrvtt_single_file_with_all_splits(synth, tmp_path):
    ann = synth["msrvtt"] / "annotation"
    parts = [json.loads((ann / f"{p}_videodatainfo.json").read_text()) for p in ("train_val", "test")]
    merged = {"info": {}, "videos": parts[0]["videos"] + parts[1]["videos"],
              "sentences": parts[0]["sentences"] + parts[1]["sentences"]}
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps(merged))
    shutil.copytree(synth["msrvtt"] / "videos", tmp_path / "videos")
    for split in ("train", "test"):
        cap = load_captions("msrvtt", split, data_root=tmp_path)
        ref = load_captions("msrvtt", split, data_root=synth["msrvtt"])
        assert cap.annotation_file.name == "MSRVTT_data.json"
        assert [(r.video_id, r.captions) for r in cap.records] == [(r.video_id, r.captions) for r in ref.records]


def test_msvd_caption_splits_follow_vid_numbers(synth):
    root = synth["msvd"]
    mapping = {name: int(vid[3:]) for name, vid in
               (line.split() for line in (root / "MSVD-QA" / "youtube_mapping.txt").read_text().splitlines())}
    ranges = {"train": range(1, 1201), "val": range(1201, 1301), "test": range(1301, 1971)}
    for split, allowed in ranges.items():
        cap = load_captions("msvd", split, data_root=root)
        assert cap.records and not cap.missing_videos
        assert all(mapping[r.video_id] in allowed and r.video.suffix == ".avi" for r in cap.records)
        assert all(len(r.captions) == 4 for r in cap.records)


def test_msvd_without_mapping_needs_the_full_corpus(synth, tmp_path):
    shutil.copy(synth["msvd"] / "AllVideoDescriptions.txt", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="youtube_mapping.txt not found"):
        load_captions("msvd", "test", data_root=tmp_path, videos=synth["msvd"] / "YouTubeClips")


def test_retrieval_1ka(synth):
    ret = load_retrieval_1ka(data_root=synth["msrvtt"])
    test = load_captions("msrvtt", "test", data_root=synth["msrvtt"])
    assert [r.video_id for r in ret.records] == [r.video_id for r in test.records]
    assert all(len(r.captions) == 1 and r.captions[0] == t.captions[0] for r, t in zip(ret.records, test.records))
    with pytest.raises(ValueError, match="only 'test'"):
        load_retrieval_1ka("train", data_root=synth["msrvtt"])


def test_custom_captions_group_records_by_clip(synth, tmp_path):
    root = synth["custom"]
    split = load_captions("custom", "train", data_root=root)  # finds train_captions.jsonl under the root
    scenes = _scenes(root)
    assert split.annotation_file.name == "train_captions.jsonl" and not split.missing_videos
    for r in split.records:
        rel = r.video.relative_to(root).as_posix()
        assert r.video_id == rel and r.captions == captions(scenes[rel])
    # CSV with a segment, a 'captions' list and an extensionless path
    (tmp_path / "clips").mkdir()
    shutil.copy(split.records[0].video, tmp_path / "clips" / "a.mp4")
    csv = tmp_path / "mine.jsonl"
    csv.write_text('{"video": "clips/a", "caption": "one"}\n{"video": "clips/a", "caption": "two"}\n'
                   '{"video": "clips/a", "captions": ["three"], "start": 0.5, "end": 1}\n')
    mine = load_captions("custom", "test", annotations=csv, videos=tmp_path)
    assert [(r.video_id, r.captions, r.start) for r in mine.records] == [
        ("clips/a", ["one", "two"], None), ("clips/a@0.5-1", ["three"], 0.5)]
    assert mine.records[0].video == tmp_path / "clips" / "a.mp4" and not mine.missing_videos
    csv.write_text('{"video": "clips/a", "caption": " "}\n')
    with pytest.raises(AnnotationError, match="record line 1: no caption"):
        load_captions("custom", "test", annotations=csv, videos=tmp_path)


def test_bad_caption_files_name_the_record(tmp_path):
    path = tmp_path / "test_videodatainfo.json"
    path.write_text(json.dumps({"videos": [{"video_id": "video7010", "split": "test"}]}))
    with pytest.raises(AnnotationError, match="lists 'videos' and 'sentences'"):
        load_captions("msrvtt", "test", annotations=path, videos=tmp_path)
    path.write_text(json.dumps({"videos": [{"video_id": "video7010", "split": "test"}, {"video_id": "video7011"}],
                                "sentences": []}))
    with pytest.raises(AnnotationError, match=r"record videos\[1\]: missing field 'split'"):
        load_captions("msrvtt", "test", annotations=path, videos=tmp_path)
    path.write_text(json.dumps({"videos": [{"video_id": "video7010", "split": "test"}],
                                "sentences": [{"video_id": "video7010", "caption": "a"}, {"video_id": "video7010", "caption": 5}]}))
    with pytest.raises(AnnotationError, match=r"record sentences\[1\]: field 'caption' must be a string"):
        load_captions("msrvtt", "test", annotations=path, videos=tmp_path)
    desc = tmp_path / "AllVideoDescriptions.txt"
    desc.write_text("# header\nabc_1_2 a man cooks\nabc_1_2\n")
    with pytest.raises(AnnotationError, match=r"AllVideoDescriptions.txt: record line 3: expected"):
        load_captions("msvd", "train", annotations=desc, videos=tmp_path)
    csv = tmp_path / "MSRVTT_JSFUSION_test.csv"
    csv.write_text("key,vid_key,video_id,sentence\nret0,msr7010,video7010,a dog\nret1,msr7011,,a cat\n")
    with pytest.raises(AnnotationError, match=r"MSRVTT_JSFUSION_test.csv: record line 3: missing field 'video_id'"):
        load_retrieval_1ka(annotations=csv, videos=tmp_path)


def test_video_folder_is_recursive_and_sorted(tmp_path, synth):
    src = next((synth["custom"] / "clips").rglob("*.mp4"))
    for rel in ["b.mp4", "a/x.MKV", "a/deep/er/y.webm", "c.mov", "d.m4v", "e.avi", ".hidden.mp4", ".cache/z.mp4",
                "notes.txt"]:
        (tmp_path / "f" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, tmp_path / "f" / rel)
    folder = VideoFolder(tmp_path / "f")
    assert [r.video_id for r in folder] == ["a/deep/er/y.webm", "a/x.MKV", "b.mp4", "c.mov", "d.m4v", "e.avi"]
    assert all(r.video == tmp_path / "f" / r.video_id for r in folder)
    assert len(VideoFolder(tmp_path / "f", extensions=["mp4"])) == 1
    (tmp_path / "f" / "a" / "loop").symlink_to(tmp_path / "f")  # followed once, no infinite walk
    assert len(VideoFolder(tmp_path / "f")) == 6
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no video files"):
        VideoFolder(tmp_path / "empty")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        VideoFolder(tmp_path / "nope")


def test_caption_files_saved_with_a_byte_order_mark_are_read(synth, tmp_path):
    ann = synth["msrvtt"] / "annotation"
    for name in ("test_videodatainfo.json", "MSRVTT_JSFUSION_test.csv"):
        (tmp_path / name).write_text((ann / name).read_text(), encoding="utf-8-sig")
    videos = synth["msrvtt"] / "videos"
    ref = load_captions("msrvtt", "test", data_root=synth["msrvtt"])
    cap = load_captions("msrvtt", "test", annotations=tmp_path / "test_videodatainfo.json", videos=videos)
    assert [(r.video_id, r.captions) for r in cap.records] == [(r.video_id, r.captions) for r in ref.records]
    ret = load_retrieval_1ka(annotations=tmp_path / "MSRVTT_JSFUSION_test.csv", videos=videos)
    assert [r.video_id for r in ret.records] == [r.video_id for r in ref.records]
    desc = tmp_path / "AllVideoDescriptions.txt"
    desc.write_text((synth["msvd"] / "AllVideoDescriptions.txt").read_text(), encoding="utf-8-sig")
    shutil.copy(synth["msvd"] / "MSVD-QA" / "youtube_mapping.txt", tmp_path)
    ref = load_captions("msvd", "test", data_root=synth["msvd"])
    cap = load_captions("msvd", "test", annotations=desc, videos=synth["msvd"] / "YouTubeClips")
    assert [(r.video_id, r.captions) for r in cap.records] == [(r.video_id, r.captions) for r in ref.records]


def test_custom_caption_jsonl_records_are_named_by_their_line(tmp_path):
    path = tmp_path / "test_captions.jsonl"
    path.write_text('{"video": "a.mp4", "caption": "one"}\n\n{"video": "a.mp4", "caption": " "}\n')
    with pytest.raises(AnnotationError, match=r"test_captions.jsonl: record line 3: no caption"):
        load_captions("custom", "test", annotations=path, videos=tmp_path)
    array = tmp_path / "test_captions.json"
    array.write_text(json.dumps([{"video": "a.mp4", "caption": "one"}, {"video": "a.mp4"}]))
    with pytest.raises(AnnotationError, match=r"test_captions.json: record 1: missing field 'caption'"):
        load_captions("custom", "test", annotations=array, videos=tmp_path)


def test_msrvtt_video_without_sentences_is_refused_at_load(synth, tmp_path):
    """Caught before captioning the split, naming the file and the video (the metrics only said
    'videos without reference captions: [...]' after the whole run)."""
    data = json.loads((synth["msrvtt"] / "annotation" / "test_videodatainfo.json").read_text())
    test = [v for v in data["videos"] if v["split"] == "test"]
    bare = test[-1]["video_id"]
    data["sentences"] = [s for s in data["sentences"] if s["video_id"] != bare]
    path = tmp_path / "test_videodatainfo.json"
    path.write_text(json.dumps(data))
    index = data["videos"].index(test[-1])
    with pytest.raises(AnnotationError, match=rf"test_videodatainfo.json: record videos\[{index}\]: video "
                                              rf"'{bare}' \(split 'test'\) has no sentence") as err:
        load_captions("msrvtt", "test", annotations=path, videos=synth["msrvtt"] / "videos")
    assert "\n" not in str(err.value)


def test_a_video_listed_twice_is_refused(synth, tmp_path):
    """One record per video: a repeat gave more videos loaded than predictions (which are keyed by video id)."""
    data = json.loads((synth["msrvtt"] / "annotation" / "test_videodatainfo.json").read_text())
    first = next(i for i, v in enumerate(data["videos"]) if v["split"] == "test")
    data["videos"].append(dict(data["videos"][first]))
    path = tmp_path / "test_videodatainfo.json"
    path.write_text(json.dumps(data))
    repeat = len(data["videos"]) - 1
    with pytest.raises(AnnotationError, match=rf"test_videodatainfo.json: record videos\[{repeat}\]: video id "
                                              rf"'{data['videos'][first]['video_id']}' is also used by record "
                                              rf"videos\[{first}\]"):
        load_captions("msrvtt", "test", annotations=path, videos=synth["msrvtt"] / "videos")
    rows = (synth["msrvtt"] / "annotation" / "MSRVTT_JSFUSION_test.csv").read_text().splitlines()
    video = rows[1].split(",")[2]
    csv = tmp_path / "MSRVTT_JSFUSION_test.csv"
    csv.write_text("\n".join(rows + [f"ret99,msr99,{video},the same video again"]) + "\n")
    with pytest.raises(AnnotationError, match=rf"MSRVTT_JSFUSION_test.csv: record line {len(rows) + 1}: video id "
                                              rf"'{video}' is also used by record line 2"):
        load_retrieval_1ka(annotations=csv, videos=synth["msrvtt"] / "videos")
