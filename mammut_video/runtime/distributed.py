"""Sharding an evaluation over processes started by ``torchrun`` (env RANK / WORLD_SIZE).

Each rank evaluates the items ``rank::world_size`` and writes its own predictions file; after
a barrier rank 0 merges them and computes the metrics, so the result equals a one-process run.
Work done by rank 0 alone goes through :meth:`DistContext.on_main`, so that when it fails every
rank stops with its message instead of waiting at a barrier (NCCL) or dying on a closed socket
(gloo).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from mammut_video.argtypes import DEVICE_PATTERN

T = TypeVar("T")


class MainRankError(RuntimeError):
    """Raised on the other ranks when work that rank 0 does alone failed (the message says why)."""


@dataclass
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``, on ``device``."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's slice of ``items`` (strided, so ranks get similar mixes)."""
        return list(items[self.rank :: self.world_size])

    def barrier(self) -> None:
        if self.distributed:
            if torch.distributed.get_backend() == "nccl":
                torch.distributed.barrier(device_ids=[self.device.index])
            else:
                torch.distributed.barrier()

    def on_main(self, work: Callable[[], T]) -> T | None:
        """Run ``work`` on rank 0 only and return its result there (None elsewhere).

        Every rank returns together (it is also a barrier). When ``work`` raises, rank 0
        re-raises its exception and every other rank raises :class:`MainRankError` naming it.
        """
        result, error = None, None
        if self.is_main:
            try:
                result = work()
            except Exception as err:  # re-raised below, after telling the other ranks
                error = err
        if self.distributed:
            outcome = [None if error is None else f"{type(error).__name__}: {error}"]
            torch.distributed.broadcast_object_list(outcome, src=0)
            if not self.is_main and outcome[0] is not None:
                raise MainRankError(f"rank {self.rank} stopped: rank 0 failed ({outcome[0]})")
        if error is not None:
            raise error
        return result

    def close(self) -> None:
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def init_distributed(device: str | None = None) -> DistContext:
    """Join the process group when started by torchrun, else a single-process context.

    device: "cpu", "cuda", "cuda:N" or None (CUDA when available). Under torchrun each rank takes
    GPU ``LOCAL_RANK`` (an index in ``device`` is ignored); the backend is nccl on GPU and gloo on
    CPU. Raises ValueError for another device string, RuntimeError when CUDA is asked for but absent.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is not None and DEVICE_PATTERN.fullmatch(device) is None:
        raise ValueError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device} asked for, but CUDA is not available")
    dev = torch.device("cpu")
    if use_cuda:
        if world_size > 1:
            index = local_rank
        elif device is not None and ":" in device:
            index = int(device.split(":")[1])
        else:
            index = torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"--device cuda:{index} asked for, but only {torch.cuda.device_count()} GPUs are visible")
        dev = torch.device("cuda", index)
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    return DistContext(rank=rank, world_size=world_size, device=dev)
