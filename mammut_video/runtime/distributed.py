"""Where this process sits among the processes ``torchrun`` started (env RANK / WORLD_SIZE / LOCAL_RANK).

Every long command shards its work with :class:`DistContext`: each rank takes a strided slice
(:meth:`DistContext.shard`), rank 0 alone merges and reports (:meth:`DistContext.on_main`), and
small Python values travel with :meth:`DistContext.gather`. Work done by rank 0 alone goes
through ``on_main`` so that when it fails every rank stops with its message instead of waiting at
a barrier (NCCL) or dying on a closed socket (gloo). Work that every rank does on its own slice
reports a failure through the process group's key-value store (:meth:`DistContext.report_failure`);
the other ranks raise :class:`RankError` with its message at their next :meth:`DistContext.check_peers`
or :meth:`DistContext.barrier`, whatever launched them. The backend is gloo on the CPU and NCCL on
GPUs; multi-node runs need nothing more than torchrun's own rendezvous options.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from mammut_video.errors import MammutVideoError
from mammut_video.runtime.devices import resolve_device

T = TypeVar("T")
log = logging.getLogger(__name__)

_FAILED_KEY = "mammut_video/failed"
_BARRIER_POLL_S = 0.01


class RankError(MammutVideoError):
    """Raised on the other ranks when one rank failed (the message names the rank and says why)."""


class MainRankError(RankError):
    """Raised on the other ranks when work that rank 0 does alone failed (the message says why)."""


def _group_store() -> torch.distributed.Store | None:
    """The key-value store of the default process group (torchrun's rendezvous store), or None."""
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except (ImportError, AttributeError, ValueError, RuntimeError):
        return None


@dataclass
class DistContext:
    """This process: ``rank`` of ``world_size``, running on ``device``. Also a context manager that
    leaves the process group on exit."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _barriers: int = field(default=0, repr=False)

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
        """Wait until every rank gets here; raise :class:`RankError` if a rank reports a failure meanwhile.

        Counted in the process group's store (polled every 10 ms), so a rank that failed and left
        does not keep the others waiting; the backend's own barrier when there is no store.
        """
        if not self.distributed:
            return
        store = _group_store()
        if store is None:
            if torch.distributed.get_backend() == "nccl":
                torch.distributed.barrier(device_ids=[self.device.index])
            else:
                torch.distributed.barrier()
            return
        self._barriers += 1
        key = f"mammut_video/barrier/{self._barriers}"
        store.add(key, 1)
        while store.add(key, 0) < self.world_size:
            self.check_peers()
            time.sleep(_BARRIER_POLL_S)

    def report_failure(self, error: BaseException) -> None:
        """Tell the other ranks that this one failed with ``error`` (best effort; they raise
        :class:`RankError` at their next :meth:`check_peers` or :meth:`barrier`)."""
        store = _group_store() if self.distributed else None
        if store is None or isinstance(error, RankError):
            return
        try:
            store.set(_FAILED_KEY, f"rank {self.rank} failed ({type(error).__name__}: {error})")
        except RuntimeError as err:  # the store's host is gone: the group is ending anyway
            log.debug("could not report the failure of rank %d: %s", self.rank, err)

    def check_peers(self) -> None:
        """Raise :class:`RankError` with its message when another rank reported a failure."""
        store = _group_store() if self.distributed else None
        if store is None:
            return
        try:
            failed = store.check([_FAILED_KEY])
            message = store.get(_FAILED_KEY).decode() if failed else None
        except RuntimeError as err:
            raise RankError(f"rank {self.rank} stopped: lost contact with the process group ({err})") from None
        if message is not None:
            raise RankError(f"rank {self.rank} stopped: {message}")

    def gather(self, values: list) -> list:
        """Concatenate a small picklable list from every rank, in rank order (every rank gets it)."""
        if not self.distributed:
            return list(values)
        parts: list[list | None] = [None] * self.world_size
        torch.distributed.all_gather_object(parts, values)
        return [v for part in parts for v in (part or [])]

    def on_main(self, work: Callable[[], T], share: bool = False) -> T | None:
        """Run ``work`` on rank 0 only and return its result there (None elsewhere, or with
        ``share`` the same result, pickled and sent to every rank).

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
            outcome = [None if error is None else f"{type(error).__name__}: {error}",
                       result if share and error is None else None]
            torch.distributed.broadcast_object_list(outcome, src=0)
            if not self.is_main and outcome[0] is not None:
                raise MainRankError(f"rank {self.rank} stopped: rank 0 failed ({outcome[0]})")
            if share:
                result = outcome[1]
        if error is not None:
            raise error
        return result

    def close(self) -> None:
        """Leave the process group; objects still holding its work (a DDP reducer in a reference cycle)
        are collected first, while the group and the interpreter are alive."""
        if self.distributed and torch.distributed.is_initialized():
            gc.collect()
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
