"""Reading foreign weight files and writing our own atomically.

``read_state_dict`` accepts the files users actually have: a bare state dict saved with
``torch.save`` (.pth / .pt / .bin), a training checkpoint wrapping it (``{"state_dict": ...}``,
``{"model": ...}``, ``{"module": ...}``) with DDP ``module.`` prefixes, or ``.safetensors``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

StateDict = dict[str, torch.Tensor]

_WRAPPER_KEYS = ("state_dict", "model", "module", "model_state_dict", "model_ema")


class CheckpointError(ValueError):
    """A checkpoint or weight file that cannot be read or does not fit the model."""


def read_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> StateDict:
    """Load a flat ``{name: tensor}`` dict from ``path``, unwrapped and without ``module.``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weight file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device=str(map_location))
        else:
            obj = _torch_load(path, map_location)
    except Exception as exc:  # torch / safetensors raise many unrelated types
        raise CheckpointError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    return unwrap_state_dict(obj, source=str(path))


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


@contextmanager
def atomic_directory(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``out_dir`` only on success.

    A crash (or exception) part-way leaves ``out_dir`` as it was, never half written: the
    temporary directory is removed and the rename that publishes it never happens.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            # keep the old checkpoint until the new one is complete, then swap
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / out_dir.name)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
