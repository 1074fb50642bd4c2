"""`mammut-video search` and `EmbeddingIndex`: the nearest rows, text / video / vector queries, the
HTML page, and the refusals (not an embedding folder, another model, an unreadable query)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

import mammut_video as mv
from mammut_video.commands import main
from mammut_video.embed.index import EmbeddingIndexError, format_time, top_k
from mammut_video.embed.store import read_shard_rows, shard_paths
from mammut_video.runtime.rundir import read_jsonl
from mammut_video.video import moving_pattern, write_clip

FRAMES = 2


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Six distinct clips (one of them 6 s long, embedded in 2 s windows), in shards of 3 rows."""
    root = tmp_path_factory.mktemp("search")
    torch.manual_seed(0)
    mv.create_model("mammut-video-tiny").save_pretrained(str(root / "ckpt"))
    videos = root / "videos"
    for i in range(5):
        write_clip(videos / ("sub" if i % 2 else "") / f"clip{i}.mp4", moving_pattern(16, 64, 64, seed=i), fps=8)
    write_clip(videos / "long.mp4", moving_pattern(48, 64, 64, seed=7), fps=8)
    summary = mv.embed_folder(videos, out=root / "out", checkpoint=root / "ckpt", frames=FRAMES, workers=0,
                              shard_rows=3, clip_seconds=2, progress=False)
    assert summary.rows == 8  # five 2 s clips: one window each; the 6 s clip: three
    return {"root": root, "ckpt": root / "ckpt", "videos": videos, "out": root / "out"}


def test_an_exact_duplicate_of_a_video_ranks_first(index_dir: dict, tmp_path: Path) -> None:
    index = mv.EmbeddingIndex(index_dir["out"])
    for name in ("clip0.mp4", "sub/clip3.mp4"):
        query = tmp_path / f"copy-of-{Path(name).name}"
        shutil.copy(index_dir["videos"] / name, query)  # a copy elsewhere: found by content, not by name
        hits = index.search_video(query, k=3)
        assert hits[0].path == name and hits[0].score == pytest.approx(1.0, abs=2e-3)
        assert hits[0].score > hits[1].score >= hits[2].score
        assert hits[0].file == index_dir["videos"] / name and hits[0].rank == 1


def test_nearest_equals_brute_force_across_shards_and_chunks(index_dir: dict) -> None:
    out = index_dir["out"]
    assert len(shard_paths(out)) == 3
    rows = read_jsonl(out / "index.jsonl")
    matrix = torch.stack([read_shard_rows(out / r["shard"], [r["row"]])[0].float() for r in rows])
    query = torch.randn(128)
    expected = (matrix @ torch.nn.functional.normalize(query, dim=0)).sort(descending=True)
    for chunk_rows in (1, 2, 5, 16384):
        index = mv.EmbeddingIndex(out, chunk_rows=chunk_rows)
        hits = index.search(query, k=5)
        assert [h.score for h in hits] == pytest.approx(expected.values[:5].tolist(), abs=1e-5)
        assert [(h.record["shard"], h.record["row"]) for h in hits] == \
            [(rows[i]["shard"], rows[i]["row"]) for i in expected.indices[:5].tolist()]
    assert len(index) == 8 and index.width == 128
    assert len(index.search(query, k=100)) == 8


def test_top_k_keeps_the_earlier_row_on_ties(tmp_path: Path) -> None:
    from mammut_video.embed.store import write_shard

    paths = []
    for s in range(2):
        paths.append(tmp_path / f"r0-0000{s}.safetensors")
        write_shard(paths[-1], [{"path": str(i)} for i in range(4)], torch.ones(4, 2).half(), None)
    scores, where = top_k(paths, torch.tensor([1.0, 0.0]), k=3, chunk_rows=3)
    assert scores == [1.0, 1.0, 1.0] and where == [(0, 0), (0, 1), (0, 2)]


def test_text_query_from_the_command_line(index_dir: dict, capsys) -> None:
    assert main(["search", str(index_dir["out"]), "a red square moving right", "--top-k", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["rank", "score", "path", "window"] and len(lines) == 5
    scores = [float(line.split()[1]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    for line in lines[1:]:
        assert re.search(r"(whole video \(2\.0 s\)|\d:\d\d\.\d - \d:\d\d\.\d)$", line), line

    assert main(["search", str(index_dir["out"]), "--video", str(index_dir["videos"] / "long.mp4"), "--json",
                 "-k", "8"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [h["rank"] for h in hits] == list(range(1, 9))
    windows = sorted((h["start"], h["end"]) for h in hits if h["path"] == "long.mp4")
    assert windows == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    assert {"score", "path", "start", "end", "window", "shard", "row", "file", "duration"} <= set(hits[0])


def test_text_query_uses_the_recorded_model(index_dir: dict) -> None:
    index = mv.EmbeddingIndex(index_dir["out"])
    model = mv.load_model(str(index_dir["ckpt"]))
    with torch.inference_mode():
        text = model.encode_text(["a circle"], normalize=True)[0]
    torch.testing.assert_close(index.encode_text("a circle"), text)
    assert [h.path for h in index.search("a circle", k=8)] == [h.path for h in index.search(text, k=8)]


class _Page(HTMLParser):
    """The hits of a results page: for each ``section.hit``, its texts and its images' sources."""

    def __init__(self) -> None:
        super().__init__()
        self.hits: list[dict] = []
        self.query: dict | None = None
        self.urls: list[str] = []
        self._section: dict | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "section":
            self._section = {"rank": attrs.get("data-rank"), "text": "", "images": []}
            if attrs.get("class") == "query":
                self.query = self._section
            else:
                self.hits.append(self._section)
        if tag == "img":
            self._section["images"].append(attrs["src"])
        for name in ("src", "href"):
            if name in attrs and tag not in ("img",):
                self.urls.append(attrs[name])

    def handle_data(self, data: str) -> None:
        if self._section is not None:
            self._section["text"] += data


def test_html_page_shows_every_hit_as_frames(index_dir: dict, tmp_path: Path) -> None:
    from PIL import Image

    page_path = tmp_path / "results.html"
    assert main(["search", str(index_dir["out"]), "moving shapes", "-k", "5", "--html", str(page_path),
                 "--html-frames", "4"]) == 0
    page = page_path.read_text()
    assert "http://" not in page and "https://" not in page  # self-contained: no network
    parser = _Page()
    parser.feed(page)
    assert [h["rank"] for h in parser.hits] == ["1", "2", "3", "4", "5"] and not parser.urls
    for hit in parser.hits:
        assert len(hit["images"]) == 4, hit["text"]
        for src in hit["images"]:
            assert src.startswith("data:image/jpeg;base64,")
            image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
            assert image.format == "JPEG" and image.width == 240
        assert ".mp4" in hit["text"] and ("whole video" in hit["text"] or " - " in hit["text"])


def test_html_page_of_a_video_query_shows_the_query_first(index_dir: dict, tmp_path: Path) -> None:
    page_path = tmp_path / "video.html"
    query = index_dir["videos"] / "clip0.mp4"  # indexed as one whole-video row: its exact duplicate is nearest
    assert main(["search", str(index_dir["out"]), "--video", str(query), "-k", "3", "--html", str(page_path),
                 "--html-frames", "3"]) == 0
    parser = _Page()
    parser.feed(page_path.read_text())
    assert parser.query is not None and len(parser.query["images"]) == 3 and str(query) in parser.query["text"]
    assert len(parser.hits) == 3 and all(len(h["images"]) == 3 for h in parser.hits)
    assert "clip0.mp4" in parser.hits[0]["text"]


def test_html_page_says_why_a_video_has_no_frames(index_dir: dict, tmp_path: Path) -> None:
    from mammut_video.embed.html import write_results_html

    index = mv.EmbeddingIndex(index_dir["out"])
    hits = index.search_video(index_dir["videos"] / "clip0.mp4", k=2)
    moved = index_dir["root"] / "moved-away.mp4"
    hits[1].file = moved  # as if the video had been moved after embedding
    page = write_results_html(tmp_path / "r.html", "query", hits, index, frames=3).read_text()
    parser = _Page()
    parser.feed(page)
    assert len(parser.hits[0]["images"]) == 3 and parser.hits[1]["images"] == []
    assert "cannot show frames: no such file" in parser.hits[1]["text"]


def test_refusals_are_one_line_exit_2(index_dir: dict, tmp_path: Path, capsys) -> None:
    out = str(index_dir["out"])
    other = tmp_path / "other"
    torch.manual_seed(1)
    mv.create_model("mammut-video-tiny").save_pretrained(str(other))
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 64)
    (tmp_path / "plain").mkdir()
    cases = [
        ([str(tmp_path / "plain"), "x"], "is not a folder written by `mammut-video embed` (no settings.json)"),
        ([str(tmp_path / "nope"), "x"], "not found"),
        ([out], "give a text QUERY or --video FILE"),
        ([out, "x", "--video", str(tmp_path / "bad.mp4")], "give a text QUERY or --video FILE"),
        ([out, "--video", str(tmp_path / "bad.mp4")], "cannot decode video"),
        ([out, "x", "--checkpoint", str(other)], "pass --force to search anyway"),
        ([out, "x", "--checkpoint", str(tmp_path / "nockpt")], "not found"),
    ]
    for argv, message in cases:
        assert main(["search", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("mammut-video search: error: ") and message in err, err
    assert main(["search", out, "x", "--checkpoint", str(other), "--force", "-k", "1"]) == 0


def test_a_checkpoint_of_another_width_is_refused_even_with_force(index_dir: dict, tmp_path: Path) -> None:
    from mammut_video.embed.index import query_model

    settings = json.loads((index_dir["out"] / "settings.json").read_text())
    ckpt = tmp_path / "ckpt"
    shutil.copytree(index_dir["ckpt"], ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["model"]["embed_dim"] = 64
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(EmbeddingIndexError, match="makes 64-d embeddings; the ones in this folder are 128-d"):
        query_model(settings, ckpt, force=True)


def test_a_changed_or_missing_recorded_checkpoint_is_refused(index_dir: dict, tmp_path: Path) -> None:
    from mammut_video.embed.index import query_model

    settings = json.loads((index_dir["out"] / "settings.json").read_text())
    moved = {**settings, "checkpoint": str(tmp_path / "gone")}
    with pytest.raises(EmbeddingIndexError, match="is not there any more: pass --checkpoint DIR"):
        query_model(moved, None, force=False)
    changed = {**settings, "checkpoint_files": "0" * 16}
    with pytest.raises(EmbeddingIndexError, match="changed since these embeddings were made"):
        query_model(changed, None, force=False)
    assert query_model(changed, None, force=True)["checkpoint"] == settings["checkpoint"]


def test_vector_of_the_wrong_width_and_empty_folders(index_dir: dict, tmp_path: Path) -> None:
    index = mv.EmbeddingIndex(index_dir["out"])
    with pytest.raises(mv.ConfigError, match="query vector has 3 values; the embeddings .* have 128"):
        index.search(np.ones(3, dtype=np.float32))
    empty = tmp_path / "empty"
    (empty / "shards").mkdir(parents=True)
    (empty / "settings.json").write_text(json.dumps({"kind": "embed", "embed_dim": 128}))
    with pytest.raises(EmbeddingIndexError, match="holds no embeddings yet"):
        mv.EmbeddingIndex(empty)


def test_format_time() -> None:
    assert [format_time(s) for s in (0, 5.25, 83.5, 3723)] == ["0:00.0", "0:05.2", "1:23.5", "1:02:03.0"]


FINETUNED = {"source": "mammut-video", "finetune": {"step": 5, "task": "qa", "train": "qa.jsonl"}}


@pytest.mark.parametrize("provenance, warned", [
    ({**FINETUNED, "finetune": {**FINETUNED["finetune"], "text_embedding_trained": False}}, True),
    ({**FINETUNED, "finetune": {**FINETUNED["finetune"], "text_embedding_trained": True}}, False),
    ({"source": "timm", "fresh": ["visual.proj", "text decoder"]}, True),  # `convert --from timm`
    ({"source": "openmammut", "fresh": []}, False),
    (FINETUNED, False),  # saved before the record existed: not known, no warning
])
def test_text_search_warns_when_the_text_embedding_was_never_trained(tmp_path: Path, capsys, provenance: dict,
                                                                    warned: bool) -> None:
    """A model whose text embedding never trained (a decoder imported fresh, or fine-tuned without the
    contrastive pass) ranks text queries at random: a text query says so on stderr, once; a video
    query does not."""
    torch.manual_seed(0)
    model = mv.create_model("mammut-video-tiny")
    model.provenance = provenance
    model.save_pretrained(str(tmp_path / "ckpt"))
    write_clip(tmp_path / "videos" / "a.mp4", moving_pattern(16, 64, 64, seed=0), fps=8)
    mv.embed_folder(tmp_path / "videos", out=tmp_path / "out", checkpoint=tmp_path / "ckpt", frames=FRAMES,
                    workers=0, progress=False)
    assert main(["search", str(tmp_path / "out"), "--video", str(tmp_path / "videos" / "a.mp4")]) == 0
    assert "never trained" not in capsys.readouterr().err
    index = mv.EmbeddingIndex(tmp_path / "out")
    assert index.text_embedding_untrained() is warned
    index.search("a red square")
    index.search("a blue circle")
    assert main(["search", str(tmp_path / "out"), "a red square"]) == 0
    err = capsys.readouterr().err
    assert err.count("text embedding was never trained") == (2 if warned else 0)  # once per index
