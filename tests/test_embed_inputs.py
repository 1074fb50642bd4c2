"""What `embed` reads: folders (extensions, probing), list files (lines, CSV, segments), windows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mammut_video.data import DatasetNotFoundError, VideoFolder
from mammut_video.data.folder import holds_video
from mammut_video.embed.inputs import InputListError, WindowPlan, list_inputs
from mammut_video.errors import MissingFileError
from mammut_video.video import moving_pattern, write_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "c.mp4", moving_pattern(8, 32, 32), fps=8)


def test_folder_takes_videos_by_extension_and_probes_unknown_ones(tmp_path: Path, clip: Path) -> None:
    from PIL import Image

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "x.MP4").write_bytes(clip.read_bytes())
    (tmp_path / "a" / "b" / "noext").write_bytes(clip.read_bytes())          # a video without extension
    (tmp_path / "a" / "clip.video").write_bytes(clip.read_bytes())           # an unknown extension
    (tmp_path / "a" / "random.bin2").write_bytes(b"\x01\x02" * 500)          # unknown, not a video
    (tmp_path / "notes.txt").write_text("not a video")                       # known non-video: not probed
    Image.new("RGB", (16, 16)).save(tmp_path / "a" / "still.picture", format="PNG")  # an image, renamed
    (tmp_path / ".hidden.mp4").write_bytes(clip.read_bytes())
    folder = VideoFolder(tmp_path, probe_unknown=True)
    assert [r.video_id for r in folder] == ["a/b/noext", "a/clip.video", "x.MP4"]
    assert sorted(p.name for p in folder.skipped) == ["notes.txt", "random.bin2", "still.picture"]
    assert [r.video_id for r in VideoFolder(tmp_path)] == ["x.MP4"]  # probing is opt-in
    assert holds_video(clip) and not holds_video(tmp_path / "notes.txt") and not holds_video(tmp_path / "nope")


def test_folder_without_videos_says_what_it_holds(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="holds no files"):
        VideoFolder(tmp_path / "empty", probe_unknown=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").write_text("x")
    with pytest.raises(DatasetNotFoundError, match=r"1 other files, e\.g\. .*readme\.md"):
        VideoFolder(tmp_path / "docs", probe_unknown=True)


def test_folder_skips_an_excluded_output_folder(tmp_path: Path, clip: Path) -> None:
    (tmp_path / "out" / "shards").mkdir(parents=True)
    (tmp_path / "v.mp4").write_bytes(clip.read_bytes())
    (tmp_path / "out" / "copy.mp4").write_bytes(clip.read_bytes())
    inputs = list_inputs(tmp_path, exclude=[tmp_path / "out"])
    assert [i.name for i in inputs.items] == ["v.mp4"]
    assert inputs.kind == "folder" and inputs.root == tmp_path.resolve()
    item = inputs.items[0]
    assert item.path.is_absolute() and item.size == clip.stat().st_size and item.segment is None
    assert json.loads(item.key) == ["v.mp4", None, item.size, item.mtime]


def test_missing_input_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="nope not found"):
        list_inputs(tmp_path / "nope")


def test_text_list_one_path_per_line(tmp_path: Path, clip: Path) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "one.mp4").write_bytes(clip.read_bytes())
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my videos\nv/one.mp4\n\n{clip}\nv/gone.mp4\nv/one.mp4\n")
    inputs = list_inputs(listing)
    assert inputs.kind == "list" and inputs.root == tmp_path.resolve()
    assert [i.name for i in inputs.items] == ["v/one.mp4", str(clip), "v/gone.mp4"]  # the repeat is dropped
    assert inputs.items[0].path == tmp_path.resolve() / "v" / "one.mp4"
    assert inputs.items[2].size == -1  # missing: it becomes a row of errors.jsonl, the run goes on


def test_csv_list_with_segments(tmp_path: Path, clip: Path) -> None:
    listing = tmp_path / "clips.csv"
    listing.write_text(f"id,Path,start,end\n1,{clip},0.5,1.0\n2,{clip},,\n3,{clip},0.25,\n")
    items = list_inputs(listing).items
    assert [(i.start, i.end) for i in items] == [(0.5, 1.0), (None, None), (0.25, None)]
    assert items[0].segment == [0.5, 1.0] and items[1].segment is None
    assert len({i.key for i in items}) == 3  # one file, three inputs


def test_list_saved_with_a_byte_order_mark(tmp_path: Path, clip: Path) -> None:
    """Excel's "CSV UTF-8" puts a BOM before the header; a text list gets one from some editors."""
    listing = tmp_path / "clips.csv"
    listing.write_text(f"path,start\n{clip},0.5\n", encoding="utf-8-sig")
    assert [(i.name, i.start) for i in list_inputs(listing).items] == [(str(clip), 0.5)]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{clip}\n", encoding="utf-8-sig")
    assert [i.path for i in list_inputs(listing).items] == [clip]


@pytest.mark.parametrize("text, message", [
    ("name,start\nx.mp4,1\n", "line 1: no 'path' column (columns: name, start)"),
    ("path,start,end\nx.mp4,one,2\n", "line 2: start 'one' is not a number of seconds >= 0"),
    ("path,start,end\nx.mp4,3,2\n", "line 2: end 2.0 s is not after start 3.0 s"),
    ("path,start\n,1\n", "line 2: empty 'path'"),
    ("# nothing\n\n", "lists no video"),
])
def test_malformed_list_is_refused_naming_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    listing = tmp_path / "bad.csv"
    listing.write_text(text)
    with pytest.raises(InputListError) as err:
        list_inputs(listing)
    assert str(err.value).startswith(f"{listing}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_list_naming_only_missing_files_is_refused(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("a.mp4\nb.mp4\n")
    with pytest.raises(InputListError, match=r"none of the 2 files it lists exists .*a\.mp4.*list's folder"):
        list_inputs(listing)


@pytest.mark.parametrize("plan, duration, segment, expected", [
    (WindowPlan(), 10.0, (None, None), [(None, None)]),
    (WindowPlan(), 10.0, (2.0, 4.0), [(2.0, 4.0)]),
    (WindowPlan(4.0), 10.0, (None, None), [(0.0, 4.0), (4.0, 8.0), (6.0, 10.0)]),
    (WindowPlan(5.0), 10.0, (None, None), [(0.0, 5.0), (5.0, 10.0)]),
    (WindowPlan(4.0, 2.0), 9.0, (None, None), [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (5.0, 9.0)]),
    (WindowPlan(4.0), 3.0, (None, None), [(0.0, 3.0)]),
    (WindowPlan(2.0), 10.0, (3.0, 7.5), [(3.0, 5.0), (5.0, 7.0), (5.5, 7.5)]),
    (WindowPlan(2.0), 6.0, (3.0, 60.0), [(3.0, 5.0), (4.0, 6.0)]),
    (WindowPlan(0.1), 0.3, (None, None), [(0.0, 0.1), (0.1, 0.2), (0.2, 0.3)]),
])
def test_windows_cover_the_video_with_equal_lengths(plan: WindowPlan, duration: float, segment: tuple,
                                                    expected: list) -> None:
    windows = plan.windows(duration, *segment)
    assert [(w.start, w.end) for w in windows] == expected
    assert [w.index for w in windows] == list(range(len(expected)))
    assert {w.count for w in windows} == {len(expected)}


NTSC_FRAME = 1001 / 30000  # 29.97 fps


@pytest.mark.parametrize("duration, frame_seconds, expected_last", [
    (14.014, NTSC_FRAME, [(6.0, 11.0), (9.0, 14.0)]),  # 14 ms left: inside the last frame, no near-duplicate
    (14.014, 0.0, [(9.0, 14.0), (9.014, 14.014)]),  # frame rate unknown: the end is covered exactly
    (14.0 + NTSC_FRAME, NTSC_FRAME, [(9.0, 14.0), (9.033367, 14.033367)]),  # one whole frame left: one more window
    (14.1, NTSC_FRAME, [(9.0, 14.0), (9.1, 14.1)]),
    (14.0, NTSC_FRAME, [(6.0, 11.0), (9.0, 14.0)]),
])
def test_no_end_window_when_the_last_one_misses_less_than_a_frame(duration: float, frame_seconds: float,
                                                                  expected_last: list) -> None:
    windows = WindowPlan(5.0, 3.0).windows(duration, frame_seconds=frame_seconds)
    assert [(w.start, w.end) for w in windows[-2:]] == expected_last
    assert {w.count for w in windows} == {len(windows)}


def test_a_segment_ending_within_a_frame_of_a_window_gets_no_extra_window() -> None:
    windows = WindowPlan(2.0).windows(60.0, 3.0, 7.02, frame_seconds=1 / 25)
    assert [(w.start, w.end) for w in windows] == [(3.0, 5.0), (5.0, 7.0)]


def test_a_segment_past_the_end_has_no_window() -> None:
    with pytest.raises(ValueError, match="segment start 12.000 s is at or past the end of the video"):
        WindowPlan(2.0).windows(10.0, 12.0, None)


def test_two_hour_film_windows_are_cheap_to_plan() -> None:
    windows = WindowPlan(10.0).windows(7200.0)
    assert len(windows) == 720 and windows[-1].end == 7200.0 and windows[359].start == 3590.0
