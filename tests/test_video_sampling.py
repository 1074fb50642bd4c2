"""Frame index selection: uniform / random / fps sampling and start/end segments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammut_video.video.sampling import SegmentOutsideClip, sample_indices


def ts(n: int, fps: float) -> np.ndarray:
    return np.arange(n) / fps


def test_uniform_takes_segment_centres():
    # 100 frames in 4 runs of 25: centres 12, 37, 62, 87
    assert sample_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert sample_indices(10, 10).tolist() == list(range(10))


def test_short_clip_repeats_frames_in_order():
    idx = sample_indices(3, 8)
    assert len(idx) == 8 and set(idx.tolist()) == {0, 1, 2}
    assert np.all(np.diff(idx) >= 0)
    assert sample_indices(1, 5).tolist() == [0] * 5
    r = sample_indices(3, 8, "random", generator=torch.Generator().manual_seed(0))
    assert set(r.tolist()) <= {0, 1, 2} and np.all(np.diff(r) >= 0)


def test_random_draws_one_frame_inside_each_run():
    seen = set()
    for seed in range(20):
        idx = sample_indices(100, 4, "random", generator=torch.Generator().manual_seed(seed))
        for k, i in enumerate(idx):
            assert 25 * k <= i < 25 * (k + 1)
        seen.add(tuple(idx.tolist()))
    assert len(seen) > 1  # it is random
    a = sample_indices(100, 4, "random", generator=torch.Generator().manual_seed(3))
    b = sample_indices(100, 4, "random", generator=torch.Generator().manual_seed(3))
    assert a.tolist() == b.tolist()  # and reproducible with a generator


@pytest.mark.parametrize("native, rate, start, expected", [
    (15.0, 5.0, None, [0, 3, 6, 9]),
    (15.0, 15.0, 2.0, [30, 31, 32, 33]),
    # 23.976 fps: frame on screen at t is floor(t * 23.976), not the nearest frame
    (24000 / 1001, 1.0, None, [0, 23, 47, 71]),
    (24000 / 1001, 2.0, 1.0, [23, 35, 47, 59]),
])
def test_fps_sampling_picks_frame_on_screen(native, rate, start, expected):
    n = 300
    idx = sample_indices(n, 4, "fps", timestamps=ts(n, native), fps=rate, start=start)
    assert idx.tolist() == expected


def test_fps_sampling_repeats_last_frame_past_the_end():
    idx = sample_indices(10, 6, "fps", timestamps=ts(10, 10.0), fps=4.0)  # t = 0 .. 1.25 s
    assert idx.tolist() == [0, 2, 5, 7, 9, 9]
    idx = sample_indices(100, 5, "fps", timestamps=ts(100, 10.0), fps=10.0, start=1.0, end=1.3)
    assert idx.tolist() == [10, 11, 12, 12, 12]


def test_segment_selects_frames_on_screen():
    t = ts(100, 10.0)  # 10 s at 10 fps
    idx = sample_indices(100, 4, timestamps=t, start=2.0, end=4.0)  # frames 20..39
    assert idx.tolist() == [22, 27, 32, 37]
    idx = sample_indices(100, 2, timestamps=t, start=2.05)  # frame 20 is on screen at 2.05 s
    assert idx[0] >= 20 and sample_indices(100, 100, timestamps=t, start=2.05)[0] == 20
    with pytest.raises(SegmentOutsideClip):
        sample_indices(100, 4, timestamps=t, start=10.5)


@pytest.mark.parametrize("kwargs", [
    dict(num_frames=0), dict(sampling="middle"), dict(sampling="fps"),
    dict(sampling="fps", fps=-1.0), dict(start=3.0, end=2.0), dict(start=-1.0),
])
def test_bad_arguments_raise_value_error(kwargs):
    args = dict(num_frames=4, sampling="uniform", timestamps=ts(50, 10.0))
    args.update(kwargs)
    with pytest.raises(ValueError):
        sample_indices(50, **args)
