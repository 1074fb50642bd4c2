import io
import os

import pytest
import torch

import mammut_video  # noqa: F401
from mammut_video.data import ClipDataset, FailureLog, QARecord, VideoRecord, collate_clips, load_qa, make_loader
from mammut_video.data.synthetic import make_synthetic


def to_cthw(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, C) -> float (C, T, H, W) in [0, 1]."""
    return frames.permute(3, 0, 1, 2).float() / 255


def pid_reader(path, num_frames, **kwargs):
    """Frames whose value is the decoding process id: shows where decoding ran. (The id modulo 251 in
    uint8 made a worker look like the main process about once in a hundred runs.)"""
    return torch.full((num_frames, 4, 4, 3), os.getpid(), dtype=torch.int64)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = make_synthetic(tmp_path_factory.mktemp("clips"), kind="custom", num_videos=4, frames=8, size=32)["custom"]
    good = load_qa("custom", "train", data_root=root).records[:6]
    corrupt = root / "clips" / "corrupt.mp4"
    corrupt.write_bytes(good[0].video.read_bytes()[:300])
    bad = [QARecord(video=corrupt, question="what?", answer="x", question_id="c", question_type="what"),
           QARecord(video=root / "clips" / "gone.mp4", question="who?", answer="y", question_id="g",
                    question_type="who")]
    return good[:3] + bad[:1] + good[3:] + bad[1:]  # bad ones at positions 3 and 7


def test_bad_clips_become_items_with_errors(records):
    ds = ClipDataset(records, transform=to_cthw, num_frames=4)
    items = [ds[i] for i in range(len(ds))]
    for i, item in enumerate(items):
        assert item["index"] == i and item["path"] == str(records[i].video)
        assert item["question"] == records[i].question and item["question_id"] == records[i].question_id
        if i in (3, 7):
            assert item["video"] is None and str(records[i].video) in item["error"]
        else:
            assert item["error"] is None and item["video"].shape == (3, 4, 32, 32)
            assert item["video"].dtype == torch.float32


def test_failing_transform_is_recorded_not_raised(records):
    def broken(frames):
        raise RuntimeError("resize failed")

    item = ClipDataset(records[:1], transform=broken, num_frames=4)[0]
    assert item["video"] is None and "resize failed" in item["error"] and str(records[0].video) in item["error"]


def test_failure_message_names_the_type_of_foreign_errors_only(records):
    from mammut_video.errors import ConfigError

    def reader_raising(err):
        def reader(path, num_frames, **kwargs):
            raise err
        return reader

    ours = ClipDataset(records[:1], num_frames=2, reader=reader_raising(ConfigError("end (2.0) must be after start")))[0]
    assert ours["error"] == f"{records[0].video}: end (2.0) must be after start"  # no "ConfigError:" in a user's log
    foreign = ClipDataset(records[:1], num_frames=2, reader=reader_raising(KeyError("x")))[0]
    assert foreign["error"] == f"{records[0].video}: KeyError: 'x'"


def test_loader_with_workers_collects_failures(records):
    loader = make_loader(ClipDataset(records, transform=to_cthw, num_frames=4), batch_size=3, workers=2)
    log = FailureLog("test split")
    good_indices = []
    for batch in loader:
        log.update(batch)
        if batch["video"] is not None:
            assert batch["video"].shape == (len(batch["items"]), 3, 4, 32, 32)
        assert all("video" not in item for item in batch["items"])
        good_indices += [item["index"] for item in batch["items"]]
    assert good_indices == [0, 1, 2, 4, 5, 6]
    assert [(i, p) for i, p, _ in log.failures] == [(3, str(records[3].video)), (7, str(records[7].video))]
    assert log.seen == 8 and len(log) == 2
    text = log.summary()
    assert "2 of 8 clips could not be read" in text and "corrupt.mp4" in text and "gone.mp4" in text
    out = io.StringIO()
    log.report(out)
    assert out.getvalue().strip() == text
    assert [f["index"] for f in log.to_json()] == [3, 7]


def test_decoding_runs_in_worker_processes():
    items = [VideoRecord(video=f"v{i}.mp4", video_id=str(i)) for i in range(4)]
    loader = make_loader(ClipDataset(items, num_frames=2, reader=pid_reader), batch_size=2, workers=2)
    values = {int(batch["video"].flatten()[0]) for batch in loader}
    assert os.getpid() not in values and values


def test_all_failed_batch_and_shape_mismatch():
    out = collate_clips([{"index": 0, "video": None, "error": "x: broken", "path": "x"}])
    assert out["video"] is None and out["items"] == [] and out["failed"] == [(0, "x", "x: broken")]
    batch = [{"index": i, "video": torch.zeros(3, 2, s, s), "error": None, "path": "p"} for i, s in enumerate((4, 8))]
    with pytest.raises(ValueError, match="differ in shape"):
        collate_clips(batch)
    with pytest.raises(ValueError, match="not both"):
        make_loader(ClipDataset([]), 2, 0, shuffle=True, sampler=torch.utils.data.SequentialSampler(range(2)))


def test_seeded_random_sampling_is_reproducible(records):
    ds = ClipDataset(records[:2], transform=None, num_frames=3, sampling="random", seed=11)
    a, b = ds[1]["video"], ds[1]["video"]
    assert a.dtype == torch.uint8 and a.shape == (3, 32, 32, 3)
    assert torch.equal(a, b)


def test_segment_bounds_reach_the_reader(tmp_path):
    seen = {}

    def reader(path, num_frames, **kwargs):
        seen.update(kwargs)
        return torch.zeros(num_frames, 2, 2, 3, dtype=torch.uint8)

    rec = QARecord(video=tmp_path / "a.mp4", question="q", answer="a", question_id=1, question_type="other",
                   start=1.5, end=3.0)
    ClipDataset([rec], num_frames=2, backend="pyav", reader=reader)[0]
    assert seen == {"sampling": "uniform", "start": 1.5, "end": 3.0, "backend": "pyav"}


def test_real_msrvtt_clip(realdata):
    rec = VideoRecord(video=realdata / "msrvtt" / "video7010.mp4", video_id="video7010")
    item = ClipDataset([rec], transform=to_cthw, num_frames=4)[0]
    assert item["error"] is None and item["video"].shape == (3, 4, 240, 320)


def test_fps_sampling_reaches_read_clip(tmp_path):
    # Bug: ClipDataset(fps=...) passed fps= with sampling="uniform"; read_clip rejects that with
    # a ValueError, which the dataset then reported as a bad clip for every single item.
    from mammut_video.video import moving_pattern, write_clip

    path = write_clip(tmp_path / "a.mp4", moving_pattern(30, 32, 32), fps=10)
    rec = VideoRecord(video=path, video_id="a")
    item = ClipDataset([rec], num_frames=4, fps=5.0)[0]
    assert item["error"] is None and item["video"].shape[0] == 4


def test_wrong_sampling_arguments_fail_at_construction():
    # A wrong argument is the caller's bug, not a bad clip: it must not be hidden per item.
    with pytest.raises(ValueError, match="fps"):
        ClipDataset([], num_frames=4, sampling="random", fps=5.0)
    with pytest.raises(ValueError, match="sampling"):
        ClipDataset([], num_frames=4, sampling="every-other")
