"""Where this process sits among the processes ``torchrun`` started (env RANK / WORLD_SIZE / LOCAL_RANK).

Every long command shards its work with :class:`DistContext`: each rank takes a strided slice
(:meth:`DistContext.shard`), rank 0 alone merges and reports (:meth:`DistContext.on_main`), and
small Python values travel with :meth:`DistContext.gather`. Work done by rank 0 alone goes
through ``on_main`` so that when it fails every rank stops with its message instead of waiting at
a barrier (NCCL) or dying on a closed socket (gloo). The backend is gloo on the CPU and NCCL on
GPUs; multi-node runs need nothing more than torchrun's own rendezvous options.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from mammut_video.errors import MammutVideoError
from mammut_video.runtime.devices import resolve_device

T = TypeVar("T")


class MainRankError(MammutVideoError):
    """Raised on the other ranks when work that rank 0 does alone failed (the message says why)."""


@dataclass
class DistContext:
    """This process: ``rank`` of ``world_size``, running on ``device``. Also a context manager that
    leaves the process group on exit."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

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

    def gather(self, values: list) -> list:
        """Concatenate a small picklable list from every rank, in rank order (every rank gets it)."""
        if not self.distributed:
            return list(values)
        parts: list[list | None] = [None] * self.world_size
        torch.distributed.all_gather_object(parts, values)
        return [v for part in parts for v in (part or [])]

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

    def __enter__(self) -> DistContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def init_distributed(device: str | None = None) -> DistContext:
    """Join the process group when started by torchrun, else a single-process context.

    device: "cpu", "cuda", "cuda:N" or None (CUDA when available). Under torchrun each rank takes
    GPU ``LOCAL_RANK`` (an index in ``device`` is ignored); the backend is nccl on GPU and gloo on
    CPU. Raises :class:`~mammut_video.errors.ConfigError` for another device string, or when CUDA
    is asked for but absent.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank, distributed=world_size > 1)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank=rank, world_size=world_size, device=dev)
