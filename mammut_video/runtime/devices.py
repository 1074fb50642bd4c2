"""Device names (``cpu``, ``cuda``, ``cuda:N``) and the device a process runs on. Light: torch loads lazily."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from mammut_video.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")


def check_device_name(name: str) -> str:
    """``name`` if it is cpu, cuda or cuda:N; otherwise :class:`ConfigError`."""
    if DEVICE_PATTERN.fullmatch(name) is None:
        raise ConfigError(f"device {name!r}: expected cpu, cuda or cuda:N")
    return name


def resolve_device(name: str | None, local_rank: int = 0, distributed: bool = False) -> "torch.device":
    """The device to run on: ``name`` (cpu, cuda, cuda:N) or, when None, CUDA if available else the CPU.

    Under torchrun (``distributed``) each process takes GPU ``local_rank`` whatever index ``name``
    gives. Raises :class:`ConfigError` when CUDA is asked for but absent or the index is out of range.
    """
    import torch

    if name is not None:
        check_device_name(name)
    use_cuda = torch.cuda.is_available() if name is None else name.startswith("cuda")
    if not use_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name} asked for, but CUDA is not available")
    if distributed:
        index = local_rank
    elif name is not None and ":" in name:
        index = int(name.split(":")[1])
    else:
        index = torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device cuda:{index} asked for, but only {torch.cuda.device_count()} GPUs are visible")
    return torch.device("cuda", index)


def default_workers(cap: int = 4) -> int:
    """Video decoding processes by default: ``cap``, or the CPU cores this process may use when they are
    fewer (more processes than cores only compete, and PyTorch's DataLoader warns about it)."""
    try:
        cores = len(os.sched_getaffinity(0))  # what the DataLoader's warning counts
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cap, cores))
