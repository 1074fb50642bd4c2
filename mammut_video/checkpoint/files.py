"""Reading foreign weight files and writing our own atomically.

``read_state_dict`` accepts the files users actually have: a bare state dict saved with
``torch.save`` (.pth / .pt / .bin), a training checkpoint wrapping it (``{"state_dict": ...}``,
``{"model": ...}``, ``{"module": ...}``) with DDP ``module.`` prefixes, or ``.safetensors``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from mammut_video.errors import MammutVideoError
from mammut_video.runtime.rundir import file_in_the_way, file_mode

StateDict = dict[str, torch.Tensor]

_WRAPPER_KEYS = ("state_dict", "model", "module", "model_state_dict", "model_ema")


class CheckpointError(MammutVideoError, ValueError):
    """A checkpoint or weight file that cannot be read or does not fit the model."""


def read_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> StateDict:
    """Load a flat ``{name: tensor}`` dict from ``path``, unwrapped and without ``module.``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: is a directory, not a weight file")
    kind = _file_kind(path)
    if kind is None:
        raise CheckpointError(f"{path}: not a weight file (expected a PyTorch file saved with torch.save, "
                              ".pth / .pt / .bin, or a .safetensors file)")
    try:
        if kind == "safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device=str(map_location))
        else:
            obj = _torch_load(path, map_location)
    except Exception as exc:  # torch / safetensors raise many unrelated types
        raise CheckpointError(f"{path}: {_load_failure(exc)}") from exc
    return unwrap_state_dict(obj, source=str(path))


def _file_kind(path: Path) -> str | None:
    """"torch" (a zip archive or a legacy pickle), "safetensors", or None for anything else."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    return None


def _load_failure(exc: Exception) -> str:
    """One line saying why a weight file did not load (torch's own messages run to a dozen lines)."""
    text = str(exc).strip()
    if "Weights only load failed" in text:
        return ("holds pickled Python objects besides tensors; mammut-video loads with "
                "torch.load(weights_only=True) and never runs code from a file: re-save its state_dict "
                "with torch.save, or as .safetensors")
    first = _first_sentence(text.splitlines()[0]) if text else ""
    return f"cannot read weights ({type(exc).__name__}{': ' + first if first else ''})"


def _first_sentence(line: str, limit: int = 200) -> str:
    """``line`` up to its first full stop, or cut at a word within ``limit`` characters with an ellipsis:
    never half a word (torch's zip reader runs on for 300 characters of advice)."""
    end = line.find(". ")
    if 0 <= end < limit:
        return line[:end + 1]
    return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + " ..."


def _torch_load(path: Path, map_location: str | torch.device) -> object:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception:
        # OpenAI's original CLIP files are TorchScript archives, not pickled dicts
        try:
            return torch.jit.load(str(path), map_location=map_location).state_dict()
        except Exception:
            pass
        raise


def unwrap_state_dict(obj: object, source: str = "<state dict>") -> StateDict:
    """Peel training wrappers and DDP ``module.`` prefixes off a loaded checkpoint object."""
    while isinstance(obj, dict) and not _is_flat(obj):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            raise CheckpointError(
                f"{source}: not a state dict (top-level keys: {sorted(map(str, obj))[:10]})"
            )
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{source}: not a state dict (got {type(obj).__name__})")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _is_flat(obj: dict) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def normal_permissions(directory: Path) -> None:
    """Give the plain files in ``directory`` mode 0o666 minus the umask (some writers make them 0o600)."""
    mode = file_mode()
    for path in directory.iterdir():
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def _fresh_dir(parent: Path, prefix: str) -> Path:
    """A new empty directory in ``parent``, mode 0o777 minus the umask (``mkdtemp`` would give 0o700)."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent}: cannot create a temporary directory {prefix}*")


@contextmanager
def atomic_directory(
    out_dir: str | os.PathLike, foreign: Callable[[Path], list[str]] | None = None
) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``out_dir`` only on success.

    A crash (or exception) part-way leaves ``out_dir`` as it was, never half written: the
    temporary directory is removed and the rename that publishes it never happens. An existing
    non-empty ``out_dir`` is replaced only when ``foreign(out_dir)`` (the names in it that the
    writer does not own) is empty; otherwise :class:`CheckpointError` names them and nothing is
    written. Without ``foreign`` any non-empty ``out_dir`` is refused.
    """
    out_dir = Path(out_dir)
    check_replaceable(out_dir, foreign)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_dir(out_dir.parent, f".{out_dir.name}.tmp-")
    try:
        yield tmp
        check_replaceable(out_dir, foreign)  # again: something may have appeared while writing
        if out_dir.exists():
            # keep the old directory until the new one is complete, then swap
            old = _fresh_dir(out_dir.parent, f".{out_dir.name}.old-")
            os.replace(out_dir, old / out_dir.name)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _current_folder() -> Path:
    try:
        return Path.cwd().resolve()
    except FileNotFoundError:  # the folder this process started in was deleted: it holds nothing to protect
        return Path("/nonexistent-current-folder")


def check_replaceable(out_dir: Path, foreign: Callable[[Path], list[str]] | None = None) -> None:
    """Raise :class:`CheckpointError` unless ``out_dir`` is absent, empty, or holds only what ``foreign`` allows
    (and is not the current folder or one above it, which the swap that publishes a checkpoint would move)."""
    if _current_folder().is_relative_to(out_dir.resolve()):
        raise CheckpointError(f"{out_dir}: is the current folder (or holds it), which cannot be replaced; give the "
                              "checkpoint a folder of its own, such as ckpt/")
    if not out_dir.exists() and not out_dir.is_symlink():
        blocked = file_in_the_way(out_dir)
        if blocked is not None:
            raise CheckpointError(f"{out_dir}: {blocked} is a file, not a folder")
        return
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise CheckpointError(f"{out_dir}: exists and is not a directory (or is a symbolic link); "
                              "refusing to replace it")
    names = sorted(p.name for p in out_dir.iterdir())
    if not names:
        return
    alien = names if foreign is None else foreign(out_dir)
    if alien:
        shown = ", ".join(alien[:12]) + (f", ... and {len(alien) - 12} more" if len(alien) > 12 else "")
        raise CheckpointError(
            f"{out_dir}: exists and holds files that are not part of a mammut-video checkpoint ({shown}); "
            "refusing to replace it. Choose another directory, or move those files away")
