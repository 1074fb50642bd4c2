"""Shards carry their own index rows; finished inputs come from the shards; merge rebuilds the index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mammut_video.embed.inputs import VideoInput
from mammut_video.embed.store import (
    ShardStore,
    iter_chunks,
    merge,
    read_rows,
    read_shard_rows,
    remove_leftovers,
    shard_paths,
    write_shard,
)
from mammut_video.runtime.rundir import RunDirError, read_jsonl


def _input(name: str, size: int = 10, mtime: float = 1.5) -> VideoInput:
    return VideoInput(path=Path("/videos") / name, name=name, size=size, mtime=mtime)


def _rows(item: VideoInput, windows: int, only: list[int] | None = None, dim: int = 4) -> list[dict]:
    return [{"path": item.name, "window": w, "windows": windows, "start": float(w), "end": w + 1.0, "frames": 2,
             "duration": float(windows), "size": item.size, "mtime": item.mtime,
             "embedding": torch.full((dim,), float(w)), "tokens": None}
            for w in (range(windows) if only is None else only)]


def _failure(item: VideoInput, message: str = "cannot decode") -> dict:
    return {"path": item.name, "window": None, "windows": None, "start": None, "end": None, "frames": 2,
            "duration": None, "size": item.size, "mtime": item.mtime, "cause": "empty file", "error": message}


def test_a_shard_holds_its_rows_and_reads_back_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "shards" / "r0-00000.safetensors"
    rows = [{"path": f"v{i}.mp4", "window": 0} for i in range(5)]
    embeddings = torch.randn(5, 3).half()
    tokens = torch.randn(5, 2, 3).half()
    write_shard(path, rows, embeddings, tokens)
    assert read_rows(path) == rows
    chunks = [(c.embeddings.clone(), c.shard.clone(), c.row.clone()) for c in iter_chunks([path, path], chunk_rows=3)]
    assert [len(e) for e, _, _ in chunks] == [3, 3, 3, 1]  # chunks run across shards
    assert torch.equal(torch.cat([e for e, _, _ in chunks]), torch.cat([embeddings, embeddings]))
    assert torch.cat([s for _, s, _ in chunks]).tolist() == [0] * 5 + [1] * 5
    assert torch.cat([r for _, _, r in chunks]).tolist() == [0, 1, 2, 3, 4] * 2
    assert torch.equal(read_shard_rows(path, [4, 1], "tokens"), tokens[[4, 1]])
    assert not list(path.parent.glob(".*.tmp"))


def test_a_file_that_is_not_a_shard_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "r0-00000.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(RunDirError, match="r0-00000.safetensors"):
        read_rows(bad)


def test_store_commits_full_shards_then_the_rest_on_close(tmp_path: Path) -> None:
    store = ShardStore(tmp_path, rank=1, shard_rows=4, commit_seconds=3600)
    a, b = _input("a.mp4"), _input("b.mp4")
    assert store.finished() == set()
    store.append(_rows(a, 3) + _rows(b, 3))  # 6 rows: one shard of 4 now, 2 waiting
    assert [p.name for p in shard_paths(tmp_path)] == ["r1-00000.safetensors"]
    store.append([_failure(_input("c.mp4"))])
    store.close()
    assert [p.name for p in shard_paths(tmp_path)] == ["r1-00000.safetensors", "r1-00001.safetensors"]
    assert store.rows_written == 6
    assert [r["path"] for r in read_jsonl(tmp_path / "errors.rank1.jsonl")] == ["c.mp4"]
    assert ShardStore(tmp_path, 0, 4, 3600).finished() == {a.key, b.key}


def test_store_commits_rows_older_than_commit_seconds(tmp_path: Path) -> None:
    store = ShardStore(tmp_path, rank=0, shard_rows=1000, commit_seconds=1e-9)
    store.append(_rows(_input("a.mp4"), 1))
    assert len(shard_paths(tmp_path)) == 1  # a crash now loses nothing


def test_partly_stored_inputs_are_pending_with_their_stored_windows(tmp_path: Path) -> None:
    a, b = _input("a.mp4"), _input("b.mp4")
    store = ShardStore(tmp_path, 0, 100, 3600)
    store.append(_rows(a, 4, only=[0, 2]) + _rows(b, 1))
    store.close()
    again = ShardStore(tmp_path, 0, 100, 3600)
    assert again.finished() == {b.key}
    assert again.partial == {a.key: {0, 2}}


def test_merge_keeps_current_inputs_once_and_compacts_shards(tmp_path: Path) -> None:
    a, b, gone = _input("a.mp4"), _input("b.mp4"), _input("gone.mp4")
    changed_before, changed_now = _input("c.mp4", size=5), _input("c.mp4", size=6)
    store = ShardStore(tmp_path, 0, 100, 3600)
    store.append(_rows(a, 2) + _rows(gone, 1) + _rows(changed_before, 1))
    store.close()
    duplicate = ShardStore(tmp_path, 1, 100, 3600)  # a crash between a compaction's write and delete
    duplicate.append(_rows(a, 2, only=[1]) + _rows(b, 1) + _rows(changed_now, 1))
    duplicate.append([_failure(_input("bad.mp4")), _failure(gone)])
    duplicate.close()

    result = merge(tmp_path, [a, b, changed_now, _input("bad.mp4")])
    assert (result.rows, result.finished, result.failures, result.dropped) == (4, 3, 1, 3)
    index = read_jsonl(tmp_path / "index.jsonl")
    assert sorted((r["path"], r["window"], r["size"]) for r in index) == [
        ("a.mp4", 0, 10), ("a.mp4", 1, 10), ("b.mp4", 0, 10), ("c.mp4", 0, 6)]
    for r in index:  # every row points at its shard and row, and that row is it
        stored = read_rows(tmp_path / r["shard"])[r["row"]]
        assert stored == {k: v for k, v in r.items() if k not in ("shard", "row")}
        assert float(read_shard_rows(tmp_path / r["shard"], [r["row"]])[0, 0]) == r["window"]
    # both shards held rows to drop: each rewritten as a merged shard, the old ones deleted
    assert [p.name for p in shard_paths(tmp_path)] == ["m-00000.safetensors", "m-00001.safetensors"]
    errors = read_jsonl(tmp_path / "errors.jsonl")
    assert [(e["path"], e["cause"], e["message"]) for e in errors] == [("bad.mp4", "empty file", "cannot decode")]
    assert "error" not in errors[0] and not list(tmp_path.glob("errors.rank*.jsonl"))

    again = merge(tmp_path, [a, b, changed_now, _input("bad.mp4")])  # nothing left to drop: nothing rewritten
    assert (again.rows, again.dropped, again.failures) == (4, 0, 0)
    assert [p.name for p in shard_paths(tmp_path)] == ["m-00000.safetensors", "m-00001.safetensors"]


def test_leftovers_of_a_crashed_run_are_removed(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / ".r0-00003.safetensors.x1y2.tmp").write_bytes(b"half a shard")
    (tmp_path / ".index.jsonl.abc.tmp").write_text("{")
    (tmp_path / "errors.rank0.jsonl").write_text(json.dumps({"path": "a"}) + "\n")
    remove_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["shards"]
