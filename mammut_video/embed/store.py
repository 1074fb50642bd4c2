"""Where ``embed`` keeps its results: self-describing shard files, merged into ``index.jsonl``.

Layout of an output folder::

    settings.json          what decides the embeddings (checkpoint, frames, dtype, windows, ...)
    shards/r0-00000.safetensors   "embeddings" (rows, E), optional "tokens" (rows, N, D) float16,
                                  and "rows": the rows' index records as JSON lines (uint8)
    index.jsonl            one line per embedding: path, shard, row, window, start, end, ...
    errors.jsonl           one line per input (or window) that failed: path, cause, message

**Commit.** A shard is written beside its destination and renamed into place, so it appears
whole or not at all, and it carries its own index rows: a shard and its rows are committed
together by one rename. Each rank writes its own shards (``r{rank}-{seq}``), closing one when it
holds ``shard_rows`` rows or when its first row is ``commit_seconds`` old, and at the end.

**Resume.** The shards are the truth: the finished inputs are read from them (every window of
the input present, with the input's size and mtime). ``index.jsonl`` and ``errors.jsonl`` are
rebuilt by :func:`merge` at the end of every run: rows of inputs that changed or left the input
folder, and any row present twice (a crash between writing a compacted shard and deleting the
old one), are dropped, and the shards holding them rewritten. So after ``kill -9`` at any point,
the next run ends with exactly one row per good (input, window) and no row without its shard.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from mammut_video.embed.inputs import VideoInput, row_key
from mammut_video.runtime.rundir import JsonlWriter, RunDirError, atomic_write, jsonl_lines, read_jsonl

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
INDEX_FILE = "index.jsonl"
ERRORS_FILE = "errors.jsonl"
SHARD_FORMAT = "mammut-video-embeddings"
SHARD_VERSION = "1"
TOKEN_SHARD_BYTES = 256 << 20  # with --save-tokens a shard closes before its tokens pass this size
_SHARD_NAME = re.compile(r"(r\d+|m)-(\d+)\.safetensors")


def result_files(out_dir: Path) -> list[Path]:
    """What a run leaves in ``out_dir`` besides ``settings.json`` (removed by ``--overwrite``)."""
    return [out_dir / SHARDS_DIR, out_dir / INDEX_FILE, out_dir / ERRORS_FILE, *error_journals(out_dir)]


def error_journals(out_dir: Path) -> list[Path]:
    """The per-rank failure files of the run in progress (merged into ``errors.jsonl`` at its end)."""
    return sorted(out_dir.glob("errors.rank*.jsonl"))


def shard_paths(out_dir: Path) -> list[Path]:
    """Every committed shard of ``out_dir``, in name order."""
    folder = out_dir / SHARDS_DIR
    return sorted(p for p in folder.glob("*.safetensors") if _SHARD_NAME.fullmatch(p.name)) if folder.is_dir() else []


@contextmanager
def _shard_errors(path: Path) -> Iterator[None]:
    """Turns a failure to read a shard into :class:`RunDirError` naming it."""
    try:
        yield
    except RunDirError:
        raise
    except Exception as err:  # safetensors raises its own SafetensorError, OSError, ValueError
        if not isinstance(err, (OSError, ValueError, KeyError)) and type(err).__name__ != "SafetensorError":
            raise
        raise RunDirError(f"{path}: unreadable embedding shard ({err}); it was not written by `mammut-video "
                          "embed` or was damaged after: delete it and run embed again") from None


def _check_format(path: Path, metadata: dict | None) -> None:
    if not metadata or metadata.get("format") != SHARD_FORMAT:
        raise RunDirError(f"{path}: not an embedding shard of mammut-video (no format={SHARD_FORMAT} in its header)")


@contextmanager
def open_shard(path: Path, framework: str = "numpy") -> Iterator[Any]:
    """``safetensors.safe_open`` on a shard (memory-mapped) after checking that it is one; a failure to
    read it is a :class:`RunDirError` naming it."""
    from safetensors import safe_open

    with _shard_errors(path), safe_open(str(path), framework=framework) as f:
        _check_format(path, f.metadata())
        yield f


def shard_tensor_names(path: Path) -> list[str]:
    """The tensors a shard holds: ``embeddings``, ``rows`` and, with ``--save-tokens``, ``tokens``."""
    with open_shard(path) as f:
        return list(f.keys())


def _row_lines(path: Path) -> list[bytes]:
    with open_shard(path) as f:
        return f.get_tensor("rows").tobytes().splitlines()


def read_rows(path: Path) -> list[dict]:
    """The index rows a shard carries, in row order (without ``shard`` / ``row``)."""
    return [json.loads(line) for line in _row_lines(path)]


def read_row(path: Path, row: int) -> dict:
    """Row ``row`` of a shard's index rows (only that one is parsed)."""
    return json.loads(_row_lines(path)[row])


def shard_size(path: Path) -> tuple[int, int]:
    """``(rows, embedding width)`` of a shard, from its header."""
    with open_shard(path) as f:
        rows, width = f.get_slice("embeddings").get_shape()
    return int(rows), int(width)


_NUMPY_DTYPES = {"F16": np.float16, "F32": np.float32}


def embeddings_view(path: Path) -> np.ndarray:
    """A shard's embeddings (rows, E) as a read-only memory map of the file (nothing is read until used).

    Finds the tensor in the safetensors header (8-byte little-endian length, then JSON giving each
    tensor's dtype, shape and byte range after the header) and maps those bytes; the pages are read
    when touched and let go when the array is freed.
    """
    with _shard_errors(path), open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
        _check_format(path, header.get("__metadata__"))
        info = header["embeddings"]
        dtype = _NUMPY_DTYPES.get(info["dtype"])
        if dtype is None:
            raise RunDirError(f"{path}: embeddings stored as {info['dtype']}, expected F16 or F32")
        rows, width = info["shape"]
        begin, end = info["data_offsets"]
        if end - begin != rows * width * np.dtype(dtype).itemsize:
            raise RunDirError(f"{path}: the header's byte range does not match the embeddings' shape")
        if rows == 0:
            return np.zeros((0, width), dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r", offset=8 + length + begin, shape=(rows, width))


@dataclass
class Chunk:
    """Up to ``chunk_rows`` consecutive embeddings of one or more shards: ``embeddings`` (n, E), and for
    each row its ``shard`` (index into the list of shards) and ``row`` in that shard, both (n,) int64."""

    embeddings: torch.Tensor
    shard: torch.Tensor
    row: torch.Tensor


def iter_chunks(shards: list[Path], chunk_rows: int) -> Iterator[Chunk]:
    """The embeddings of ``shards``, ``chunk_rows`` rows at a time, copied from the memory-mapped files
    into one reused buffer (so many small shards cost one matrix product per chunk, and memory holds
    one chunk). Each chunk's tensors are valid until the next one is asked for."""
    buffer: np.ndarray | None = None
    shard_of = np.empty(chunk_rows, dtype=np.int64)
    row_of = np.empty(chunk_rows, dtype=np.int64)
    filled = 0
    for index, path in enumerate(shards):
        view = embeddings_view(path)
        if buffer is None:
            buffer = np.empty((chunk_rows, view.shape[1]), dtype=view.dtype)
        start = 0
        while start < len(view):
            n = min(len(view) - start, chunk_rows - filled)
            np.copyto(buffer[filled:filled + n], view[start:start + n])
            shard_of[filled:filled + n] = index
            row_of[filled:filled + n] = np.arange(start, start + n)
            filled, start = filled + n, start + n
            if filled == chunk_rows:
                yield Chunk(torch.from_numpy(buffer), torch.from_numpy(shard_of), torch.from_numpy(row_of))
                filled = 0
        del view  # the shard's pages can go
    if buffer is not None and filled:
        yield Chunk(torch.from_numpy(buffer[:filled]), torch.from_numpy(shard_of[:filled]),
                    torch.from_numpy(row_of[:filled]))


def read_shard_rows(path: Path, rows: list[int], name: str = "embeddings") -> torch.Tensor:
    """Tensor ``name`` of a shard at ``rows`` (stacked), read row by row from the memory-mapped file."""
    with open_shard(path, framework="pt") as f:
        if name not in f.keys():  # noqa: SIM118 - a safe_open handle is not a dict
            raise RunDirError(f"{path}: holds no {name!r} (tokens are stored only by `embed --save-tokens`)")
        part = f.get_slice(name)
        return torch.cat([part[r:r + 1] for r in rows]) if rows else torch.empty(0)


def write_shard(path: Path, rows: list[dict], embeddings: torch.Tensor, tokens: torch.Tensor | None) -> None:
    """Write one shard atomically (see the module docstring): embeddings (n, E), tokens (n, N, D) or None."""
    from safetensors.torch import save_file

    payload = jsonl_lines(rows).encode("utf-8")
    tensors = {"embeddings": embeddings.contiguous(),
               "rows": torch.from_numpy(np.frombuffer(payload, dtype=np.uint8).copy())}
    if tokens is not None:
        tensors["tokens"] = tokens.contiguous()

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata={"format": SHARD_FORMAT, "version": SHARD_VERSION})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())

    atomic_write(path, write)


def next_shard_path(out_dir: Path, prefix: str) -> Path:
    """``shards/{prefix}-{seq}.safetensors`` with the next free sequence number for ``prefix``."""
    used = [int(m.group(2)) for p in shard_paths(out_dir)
            if (m := _SHARD_NAME.fullmatch(p.name)) and m.group(1) == prefix]
    return out_dir / SHARDS_DIR / f"{prefix}-{max(used, default=-1) + 1:05d}.safetensors"


def remove_leftovers(out_dir: Path) -> None:
    """Before a run (rank 0): temporary files of a run that crashed, and its failure journals (its
    failed inputs are tried again)."""
    for tmp in [*(out_dir / SHARDS_DIR).glob(".*.tmp"), *out_dir.glob(".*.tmp")]:
        tmp.unlink(missing_ok=True)
    for journal in error_journals(out_dir):
        journal.unlink()


class ShardStore:
    """The loop's result store for ``embed`` (see ``mammut_video.runtime.loop``): this rank's shards.

    ``append`` takes rows (dicts with ``embedding`` (E,) and maybe ``tokens`` (N, D) tensors) and
    failures (dicts with ``error``). Rows wait in memory until a shard is due (``shard_rows`` rows, or
    the first is ``commit_seconds`` old); failures go to ``errors.rank{r}.jsonl`` at once.
    """

    def __init__(self, out_dir: Path, rank: int, shard_rows: int, commit_seconds: float) -> None:
        self.out_dir, self.rank = out_dir, rank
        self.shard_rows, self.commit_seconds = shard_rows, commit_seconds
        self.partial: dict[str, set[int]] = {}  # inputs with some windows stored: key -> windows done
        self.rows_written = 0
        self._rows: list[dict] = []
        self._embeddings: list[torch.Tensor] = []
        self._tokens: list[torch.Tensor] = []
        self._first_at = 0.0
        self._errors: JsonlWriter | None = None

    def finished(self) -> set[str]:
        """Keys of the inputs whose every window is in a shard; fills :attr:`partial` with the others."""
        done: dict[str, set[int]] = {}
        counts: dict[str, int] = {}
        for path in shard_paths(self.out_dir):
            for row in read_rows(path):
                key = row_key(row)
                done.setdefault(key, set()).add(int(row["window"]))
                counts[key] = int(row["windows"])
        finished = {k for k, windows in done.items() if len(windows) >= counts[k]}
        self.partial = {k: w for k, w in done.items() if k not in finished}
        return finished

    def append(self, results: list[dict]) -> None:
        failures = [r for r in results if r.get("error")]
        if failures:
            if self._errors is None:
                self._errors = JsonlWriter(self.out_dir / f"errors.rank{self.rank}.jsonl")
            self._errors.write(failures)
        for r in results:
            if r.get("error"):
                continue
            if not self._rows:
                self._first_at = time.monotonic()
            self._embeddings.append(r["embedding"])
            if r.get("tokens") is not None:
                self._tokens.append(r["tokens"])
            self._rows.append({k: v for k, v in r.items() if k not in ("embedding", "tokens")})
            if len(self._rows) >= self.shard_rows:
                self.commit()
        if self._rows and time.monotonic() - self._first_at >= self.commit_seconds:
            self.commit()

    def commit(self) -> None:
        """Write the rows waiting in memory as one shard (nothing when none wait)."""
        if not self._rows:
            return
        tokens = torch.stack(self._tokens) if self._tokens else None
        path = next_shard_path(self.out_dir, f"r{self.rank}")
        write_shard(path, self._rows, torch.stack(self._embeddings), tokens)
        log.debug("committed %s (%d rows)", path.name, len(self._rows))
        self.rows_written += len(self._rows)
        self._rows, self._embeddings, self._tokens = [], [], []

    def close(self) -> None:
        self.commit()
        if self._errors is not None:
            self._errors.close()
            self._errors = None


@dataclass
class MergeResult:
    """What :func:`merge` found: ``rows`` in the index, ``finished`` inputs (every window stored),
    ``failures`` in ``errors.jsonl``, and ``dropped`` rows (inputs changed or gone, or twice)."""

    rows: int
    finished: int
    failures: int
    dropped: int


def merge(out_dir: Path, inputs: list[VideoInput]) -> MergeResult:
    """Rebuild ``index.jsonl`` and ``errors.jsonl`` from the shards and this run's failure journals.

    Keeps the rows of ``inputs`` (by key: name, segment, size, mtime), each (input, window) once;
    a shard holding any other row is rewritten without it (a new shard, then the old one deleted).
    Reads one shard at a time; both files are replaced atomically. Runs on one rank.
    """
    order = {item.key: i for i, item in enumerate(inputs)}
    seen: set[tuple[str, int]] = set()
    stored: dict[str, list[int]] = {}  # key -> [windows stored, windows in the input]
    counts = {"rows": 0, "dropped": 0}

    def index_lines(f: TextIO) -> None:
        for path in shard_paths(out_dir):
            rows = read_rows(path)
            live = []
            for i, row in enumerate(rows):
                key, window = row_key(row), int(row["window"])
                if key in order and (key, window) not in seen:
                    seen.add((key, window))
                    live.append(i)
                    stored.setdefault(key, [0, int(row["windows"])])[0] += 1
            if len(live) < len(rows):
                counts["dropped"] += len(rows) - len(live)
                path = _compact(out_dir, path, rows, live)
                rows = [rows[i] for i in live]
            if path is not None:
                f.write(jsonl_lines({**row, "shard": f"{SHARDS_DIR}/{path.name}", "row": j}
                                    for j, row in enumerate(rows)))
                counts["rows"] += len(rows)

    _write_streaming(out_dir / INDEX_FILE, index_lines)
    failures = _merge_errors(out_dir, order)
    if counts["dropped"]:
        log.info("dropped %d stored rows of inputs that changed or are no longer in the input (or stored twice)",
                 counts["dropped"])
    finished = sum(1 for done, total in stored.values() if done >= total)
    return MergeResult(counts["rows"], finished, failures, counts["dropped"])


def _write_streaming(path: Path, produce: Callable[[TextIO], None]) -> None:
    """Write ``path`` atomically with ``produce(file)``, fsynced before the rename."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            produce(f)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def _compact(out_dir: Path, path: Path, rows: list[dict], live: list[int]) -> Path | None:
    """Replace shard ``path`` by one holding only rows ``live``; None when none is live."""
    if live:
        names = shard_tensor_names(path)
        tokens = read_shard_rows(path, live, "tokens") if "tokens" in names else None
        new = next_shard_path(out_dir, "m")
        write_shard(new, [rows[i] for i in live], read_shard_rows(path, live), tokens)
    else:
        new = None
    path.unlink()
    return new


def _merge_errors(out_dir: Path, order: dict[str, int]) -> int:
    """``errors.jsonl`` from this run's failure journals (inputs still in the input only), in input order;
    the loop's ``error`` field is its ``message``."""
    failures: list[dict] = []
    for journal in error_journals(out_dir):
        failures += [r for r in read_jsonl(journal) if row_key(r) in order]
    failures.sort(key=lambda r: (order[row_key(r)], -1 if r.get("window") is None else r["window"]))
    records = ({**{k: v for k, v in r.items() if k != "error"}, "message": r["error"]} for r in failures)
    _write_streaming(out_dir / ERRORS_FILE, lambda f: f.write(jsonl_lines(records)))
    for journal in error_journals(out_dir):
        journal.unlink()
    return len(failures)
