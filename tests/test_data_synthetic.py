import json

import numpy as np
import pytest

import mammut_video  # noqa: F401
from mammut_video.data.synthetic import DIRECTIONS, make_scene, make_synthetic, questions, render


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("synth"), num_videos=6, frames=8, size=32, seed=3)


def _annotation_files(root):
    return sorted(p for p in root.rglob("*") if p.suffix in (".json", ".jsonl", ".csv", ".txt"))


def test_deterministic_from_seed(synth, tmp_path):
    again = make_synthetic(tmp_path / "a", num_videos=6, frames=8, size=32, seed=3)
    other = make_synthetic(tmp_path / "b", kind="msrvtt", num_videos=6, frames=8, size=32, seed=4)
    for kind in ("msrvtt", "msvd", "custom"):
        files = _annotation_files(synth[kind])
        assert [p.relative_to(synth[kind]) for p in files] == \
            [p.relative_to(again[kind]) for p in _annotation_files(again[kind])]
        for p in files:
            assert p.read_bytes() == (again[kind] / p.relative_to(synth[kind])).read_bytes(), p
    assert (other["msrvtt"] / "scenes.json").read_text() != (synth["msrvtt"] / "scenes.json").read_text()


def test_msrvtt_exact_format_and_split_ranges(synth):
    root = synth["msrvtt"]
    ranges = {"train": range(0, 6513), "val": range(6513, 7010), "test": range(7010, 10000)}
    for split, allowed in ranges.items():
        records = json.loads((root / "msrvtt_qa" / f"{split}_qa.json").read_text())
        assert records and all(set(r) == {"answer", "category_id", "id", "question", "video_id"} for r in records)
        assert all(isinstance(r["video_id"], int) and r["video_id"] in allowed for r in records)
        for vid in {r["video_id"] for r in records}:
            assert (root / "videos" / "all" / f"video{vid}.mp4").is_file()
    info = json.loads((root / "annotation" / "train_val_videodatainfo.json").read_text())
    assert set(info) == {"info", "videos", "sentences"}
    assert {v["split"] for v in info["videos"]} == {"train", "validate"}
    assert {"video_id", "split", "start time", "end time", "url", "category", "id"} <= set(info["videos"][0])
    assert set(info["sentences"][0]) == {"caption", "video_id", "sen_id"}
    header = (root / "annotation" / "MSRVTT_JSFUSION_test.csv").read_text().splitlines()[0]
    assert header == "key,vid_key,video_id,sentence"


def test_msvd_mapping_is_byte_sorted_like_the_real_one(synth):
    root = synth["msvd"]
    lines = (root / "MSVD-QA" / "youtube_mapping.txt").read_text().splitlines()
    assert len(lines) == 1970
    names = [line.split()[0] for line in lines]
    assert [line.split()[1] for line in lines] == [f"vid{i}" for i in range(1, 1971)]
    assert names == sorted(names, key=str.encode)
    assert all(len(n.rsplit("_", 2)[0]) == 11 for n in names)
    clips = sorted(p.stem for p in (root / "YouTubeClips").glob("*.avi"))
    assert len(clips) == 6 and set(clips) <= set(names)
    test = json.loads((root / "MSVD-QA" / "test_qa.json").read_text())
    assert all(set(r) == {"answer", "id", "question", "video_id"} and r["video_id"] >= 1451 for r in test)


def test_custom_records_have_relative_paths_and_segments(synth):
    root = synth["custom"]
    records = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    assert all((root / r["video"]).is_file() for r in records)
    assert any("start" in r and "end" in r for r in records)
    assert any("/" in r["video"].split("clips/", 1)[1] for r in records)  # nested folders too
    # a clip names its segment in all its records or in none: one clip, one training group
    segments = {}
    for r in records:
        segments.setdefault(r["video"], set()).add((r.get("start"), r.get("end")))
    assert all(len(s) == 1 for s in segments.values())


def _centroid(frame, colour):
    ys, xs = np.nonzero(np.all(np.abs(frame.astype(int) - colour) < 10, axis=-1))
    return ys.mean(), xs.mean()


def test_motion_questions_match_the_rendered_motion():
    from mammut_video.data.synthetic import COLOURS

    for i in range(10):
        scene = make_scene(np.random.default_rng([7, i]), 16, 64)
        frames = render(scene, 16, 64)
        for shape in scene.shapes:
            y0, x0 = _centroid(frames[shape.start_frame], COLOURS[shape.colour])
            y1, x1 = _centroid(frames[-1], COLOURS[shape.colour])
            dy, dx = DIRECTIONS[shape.direction]
            assert (y1 - y0) * dy + (x1 - x0) * dx > 3  # moved the stated way
            assert abs((y1 - y0) * dx) + abs((x1 - x0) * dy) < 2  # and not sideways
            still = _centroid(frames[0], COLOURS[shape.colour])
            assert np.allclose(still, (y0, x0), atol=0.5)  # still until its start frame
        qa = dict(questions(scene))
        if len(scene.shapes) > 1:
            assert qa["what moves first?"] == min(scene.shapes, key=lambda s: s.start_frame).shape
            starts = [s.start_frame for s in scene.shapes]
            assert len(set(starts)) == len(starts)


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        make_synthetic(tmp_path, kind="kinetics")
    with pytest.raises(ValueError, match="at least 3"):
        make_synthetic(tmp_path, kind="custom", num_videos=2)


def test_cli_help_and_run(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "make_synthetic.py"
    out = subprocess.run([sys.executable, str(tool), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--num-videos" in out.stdout
    out = subprocess.run([sys.executable, str(tool), str(tmp_path), "--kind", "custom", "--num-videos", "3",
                          "--frames", "4", "--size", "16"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "custom" / "test.jsonl").is_file()
