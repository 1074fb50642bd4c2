"""Synthetic datasets of moving shapes in the exact MSRVTT-QA, MSR-VTT, MSVD and custom-QA formats.

Each clip shows one to three shapes (distinct shape and colour) on a dark background; each
shape stands still until its own start frame, then moves in one direction. Questions ask
colour, shape and count, and two that need motion: the direction a shape moves and which
shape moves first (no single frame answers those). Everything is deterministic from the seed.

Layouts written (``kind`` "all" writes the three side by side under ``out_dir``)::

    msrvtt/videos/all/video{N}.mp4                      N from train 0-6512, val 6513-7009, test 7010-9999
    msrvtt/msrvtt_qa/{train,val,test}_qa.json           original MSRVTT-QA records
    msrvtt/annotation/{train_val,test}_videodatainfo.json, MSRVTT_JSFUSION_test.csv
    msvd/YouTubeClips/{11-char id}_{start}_{end}.avi
    msvd/MSVD-QA/{train,val,test}_qa.json, youtube_mapping.txt (1,970 names, vid = byte-sorted order)
    msvd/AllVideoDescriptions.txt
    custom/clips/.../*.mp4, custom/{train,val,test}.jsonl   (video paths relative to custom/)
    custom/{train,val,test}_captions.jsonl                 (custom caption format, 4 captions a clip)

Each dataset folder also holds ``scenes.json``: the generated scene of every video.
"""

from __future__ import annotations

import csv
import json
import string
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mammut_video.errors import ConfigError

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 235), "yellow": (235, 215, 40),
           "white": (240, 240, 240)}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (0.0, -1.0), "right": (0.0, 1.0), "up": (-1.0, 0.0), "down": (1.0, 0.0)}
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
FPS = 8
KINDS = ("msrvtt", "msvd", "custom")
_MSRVTT_RANGES = {"train": (0, 6512), "val": (6513, 7009), "test": (7010, 9999)}
# vid ranges inside both the MSVD-QA split (1-1200 / 1201-1450 / 1451-1970) and the caption split
_MSVD_RANGES = {"train": (1, 1200), "val": (1201, 1300), "test": (1451, 1970)}
_YOUTUBE_CHARS = string.ascii_letters + string.digits + "-_"


@dataclass
class Shape:
    shape: str
    colour: str
    y: float  # start centre, pixels
    x: float
    direction: str
    start_frame: int


@dataclass
class Scene:
    shapes: list[Shape]
    background: tuple[int, int, int]
    speed: float  # pixels per frame while moving


def make_scene(rng: np.random.Generator, frames: int, size: int) -> Scene:
    """A random scene whose shapes stay inside the frame and start moving at distinct frames."""
    n = int(rng.integers(1, 4))
    shapes = rng.permutation(SHAPES)[:n]
    colours = rng.permutation(list(COLOURS))[:n]
    starts = sorted(rng.choice(np.arange(0, frames // 2 + 1, max(1, frames // 6)), n, replace=False).tolist())
    starts = [int(s) for s in rng.permutation(starts)]
    r = radius(size)
    speed = 0.4 * size / max(frames - min(starts), 1)
    placed: list[Shape] = []
    for shape, colour, start in zip(shapes, colours, starts):
        direction = str(rng.choice(list(DIRECTIONS)))
        dy, dx = DIRECTIONS[direction]
        travel = speed * (frames - 1 - start)
        # start range that keeps the whole path inside the frame; then try to keep shapes apart
        lo_y, hi_y = r + 1 + max(0.0, -dy * travel), size - r - 1 - max(0.0, dy * travel)
        lo_x, hi_x = r + 1 + max(0.0, -dx * travel), size - r - 1 - max(0.0, dx * travel)
        for _ in range(100):
            y, x = rng.uniform(lo_y, hi_y), rng.uniform(lo_x, hi_x)
            if all(np.hypot(y - p.y, x - p.x) > 2.6 * r for p in placed):
                break
        placed.append(Shape(str(shape), str(colour), float(y), float(x), direction, start))
    background = tuple(int(v) for v in rng.integers(10, 50, 3))
    return Scene(placed, background, float(speed))


def radius(size: int) -> int:
    return max(4, size // 10)


def render(scene: Scene, frames: int, size: int) -> np.ndarray:
    """uint8 (frames, size, size, 3) RGB."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    r = radius(size)
    for t in range(frames):
        frame = np.empty((size, size, 3), dtype=np.uint8)
        frame[:] = scene.background
        for s in scene.shapes:
            dy, dx = DIRECTIONS[s.direction]
            moved = scene.speed * max(0, t - s.start_frame)
            cy, cx = s.y + dy * moved, s.x + dx * moved
            ry, rx = yy - cy, xx - cx
            if s.shape == "circle":
                mask = ry ** 2 + rx ** 2 <= r ** 2
            elif s.shape == "square":
                mask = (np.abs(ry) <= 0.85 * r) & (np.abs(rx) <= 0.85 * r)
            else:  # triangle pointing up
                mask = (ry >= -r) & (ry <= r) & (np.abs(rx) <= (ry + r) / 2)
            frame[mask] = COLOURS[s.colour]
        out[t] = frame
    return out


def questions(scene: Scene) -> list[tuple[str, str]]:
    """(question, one-word answer) pairs; the last two kinds need motion to answer."""
    qa = [("how many objects are there?", COUNT_WORDS[len(scene.shapes)])]
    for s in scene.shapes:
        qa += [(f"what color is the {s.shape}?", s.colour),
               (f"what shape is the {s.colour} object?", s.shape),
               (f"where does the {s.colour} {s.shape} move?", s.direction)]
    if len(scene.shapes) > 1:
        first = min(scene.shapes, key=lambda s: s.start_frame)
        qa.append(("what moves first?", first.shape))
    return qa


def captions(scene: Scene) -> list[str]:
    order = sorted(scene.shapes, key=lambda s: s.start_frame)
    moves = [f"a {s.colour} {s.shape} moves {s.direction}" for s in order]
    n = COUNT_WORDS[len(scene.shapes)]
    noun = "shape" if len(scene.shapes) == 1 else "shapes"
    return [" and then ".join(moves),
            f"{n} {noun} on a dark background",
            f"the {order[0].colour} {order[0].shape} starts moving first",
            ", ".join(f"a {s.colour} {s.shape}" for s in scene.shapes) + " in a video"]


def _scenes(rng_key: int, seed: int, n: int, frames: int, size: int) -> list[Scene]:
    return [make_scene(np.random.default_rng([seed, rng_key, i]), frames, size) for i in range(n)]


def _split_sizes(n: int) -> dict[str, int]:
    if n < 3:
        raise ConfigError(f"num_videos must be at least 3 (one per split), got {n}")
    test = max(1, round(n * 0.25))
    val = max(1, round(n * 0.15))
    return {"train": n - test - val, "val": val, "test": test}


def _pick(rng: np.random.Generator, lo: int, hi: int, k: int) -> list[int]:
    return sorted(int(v) for v in rng.choice(np.arange(lo, hi + 1), k, replace=False))


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _write_videos(paths: list[Path], scenes: list[Scene], frames: int, size: int) -> None:
    from mammut_video.video.synthetic import write_clip

    for path, scene in zip(paths, scenes):
        write_clip(path, render(scene, frames, size), fps=FPS)


def _msrvtt(root: Path, n: int, frames: int, size: int, seed: int) -> None:
    rng = np.random.default_rng([seed, 100])
    ids = {s: _pick(rng, *_MSRVTT_RANGES[s], k) for s, k in _split_sizes(n).items()}
    order = [(s, i) for s in ("train", "val", "test") for i in ids[s]]
    scenes = _scenes(1, seed, len(order), frames, size)
    _write_videos([root / "videos" / "all" / f"video{i}.mp4" for _, i in order], scenes, frames, size)
    qid = 0
    qa: dict[str, list] = {s: [] for s in ids}
    videos: dict[str, list] = {"train_val": [], "test": []}
    sentences: dict[str, list] = {"train_val": [], "test": []}
    for (split, vid), scene in zip(order, scenes):
        for q, a in questions(scene):
            qa[split].append({"answer": a, "category_id": int(vid % 20), "id": qid, "question": q, "video_id": vid})
            qid += 1
        part = "test" if split == "test" else "train_val"
        videos[part].append({"category": int(vid % 20), "url": f"https://www.youtube.com/watch?v=synthetic{vid}",
                             "video_id": f"video{vid}", "start time": 0.0, "end time": frames / FPS,
                             "split": "validate" if split == "val" else split, "id": vid})
        for caption in captions(scene):
            sentences[part].append({"caption": caption, "video_id": f"video{vid}",
                                    "sen_id": sum(map(len, sentences.values()))})
    for split, records in qa.items():
        _write_json(root / "msrvtt_qa" / f"{split}_qa.json", records)
    info = {"contributor": "mammut-video synthetic", "data_created": "2016-04-01 00:00:00", "version": "1.0",
            "year": "2016"}
    for part in ("train_val", "test"):
        _write_json(root / "annotation" / f"{part}_videodatainfo.json",
                    {"info": info, "videos": videos[part], "sentences": sentences[part]})
    with (root / "annotation" / "MSRVTT_JSFUSION_test.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        for k, vid in enumerate(ids["test"]):
            scene = scenes[order.index(("test", vid))]
            w.writerow([f"ret{k}", f"msr{vid}", f"video{vid}", captions(scene)[0]])
    _write_json(root / "scenes.json", {f"video{vid}": asdict(sc) for (_, vid), sc in zip(order, scenes)})


def youtube_names(rng: np.random.Generator, count: int = 1970) -> list[str]:
    """Distinct clip names shaped like MSVD's (``{11-char id}_{start}_{end}``), byte-sorted."""
    names: set[str] = set()
    while len(names) < count:
        vid = "".join(rng.choice(list(_YOUTUBE_CHARS), 11))
        start = int(rng.integers(0, 300))
        names.add(f"{vid}_{start}_{start + int(rng.integers(4, 20))}")
    return sorted(names, key=lambda s: s.encode())


def _msvd(root: Path, n: int, frames: int, size: int, seed: int) -> None:
    rng = np.random.default_rng([seed, 200])
    names = youtube_names(rng)  # vid{i+1} = names[i]
    vids = {s: _pick(rng, *_MSVD_RANGES[s], k) for s, k in _split_sizes(n).items()}
    order = [(s, v) for s in ("train", "val", "test") for v in vids[s]]
    scenes = _scenes(2, seed, len(order), frames, size)
    _write_videos([root / "YouTubeClips" / f"{names[v - 1]}.avi" for _, v in order], scenes, frames, size)
    qa_dir = root / "MSVD-QA"
    qa_dir.mkdir(parents=True, exist_ok=True)
    (qa_dir / "youtube_mapping.txt").write_text("".join(f"{name} vid{i}\n" for i, name in enumerate(names, 1)))
    qid = 0
    qa: dict[str, list] = {s: [] for s in vids}
    lines = ["# Microsoft Research Video Description Corpus (synthetic stand-in written by mammut-video)",
             "# Format: <clip name> <description>"]
    for (split, vid), scene in zip(order, scenes):
        for q, a in questions(scene):
            qa[split].append({"answer": a, "id": qid, "question": q, "video_id": vid})
            qid += 1
    for (_, vid), scene in sorted(zip(order, scenes), key=lambda t: t[0][1]):
        lines += [f"{names[vid - 1]} {c}" for c in captions(scene)]
    for split, records in qa.items():
        _write_json(qa_dir / f"{split}_qa.json", records)
    (root / "AllVideoDescriptions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _write_json(root / "scenes.json", {names[v - 1]: asdict(sc) for (_, v), sc in zip(order, scenes)})


def _custom(root: Path, n: int, frames: int, size: int, seed: int) -> None:
    sizes = _split_sizes(n)
    order = [(s, k) for s in ("train", "val", "test") for k in range(sizes[s])]
    scenes = _scenes(3, seed, len(order), frames, size)
    rel = [f"clips/{split}/clip_{k:03d}.mp4" if k % 2 else f"clips/clip_{split}_{k:03d}.mp4"
           for split, k in order]
    _write_videos([root / r for r in rel], scenes, frames, size)
    out: dict[str, list[str]] = {s: [] for s in sizes}
    caption_lines: dict[str, list[str]] = {s: [] for s in sizes}
    for (split, k), path, scene in zip(order, rel, scenes):
        for j, (q, a) in enumerate(questions(scene)):
            rec: dict = {"video": path, "question": q, "answer": a, "id": f"{split}-{k}-{j}"}
            if k % 3 == 1:  # some clips name their segment explicitly (the whole clip), in every record
                rec.update(start=0.0, end=frames / FPS)
            out[split].append(json.dumps(rec))
        caption_lines[split] += [json.dumps({"video": path, "caption": c}) for c in captions(scene)]
    for split, lines in out.items():
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (root / f"{split}_captions.jsonl").write_text("\n".join(caption_lines[split]) + "\n", encoding="utf-8")
    _write_json(root / "scenes.json", {r: asdict(sc) for r, sc in zip(rel, scenes)})


def make_synthetic(out_dir: str | Path, kind: str = "all", num_videos: int = 12, frames: int = 16,
                   size: int = 64, seed: int = 0) -> dict[str, Path]:
    """Write synthetic dataset(s) under ``out_dir``; returns {kind: dataset root}.

    Args:
        out_dir: parent folder; each dataset goes to ``out_dir/<kind>``.
        kind: "msrvtt", "msvd", "custom" or "all".
        num_videos: videos per dataset (at least 3; split about 60/15/25 train/val/test).
        frames: frames per clip (at 8 fps).
        size: frame height and width (even; 64 to 128 keeps writing fast).
        seed: everything (scenes, ids, names) follows from it.
    """
    if kind not in (*KINDS, "all"):
        raise ConfigError(f"unknown synthetic kind {kind!r}; expected one of {', '.join(KINDS)} or 'all'")
    if size % 2 or size < 16:
        raise ConfigError(f"size must be even and at least 16, got {size}")
    if frames < 4:
        raise ConfigError(f"frames must be at least 4, got {frames}")
    out_dir = Path(out_dir)
    writers = {"msrvtt": _msrvtt, "msvd": _msvd, "custom": _custom}
    paths = {}
    for k in (KINDS if kind == "all" else (kind,)):
        writers[k](out_dir / k, num_videos, frames, size, seed)
        paths[k] = out_dir / k
    return paths
