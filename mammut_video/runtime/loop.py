"""The sharded, resumable loop every long command runs: units in, results out, nothing done twice.

A command cuts its work into *units* (a clip and the questions asked about it; a video file),
each finishing one or more result *keys*. The loop asks the store which keys are already
finished (earlier runs, every rank's files), keeps only the pending keys of each unit, gives
this rank its strided slice, and hands the slice to the command's ``work`` function, which
yields results batch by batch. Each batch is appended to the store as it comes, so a crash loses
at most the batch in flight and ``--resume`` continues after it.

Conventions shared by every store: a result is a dict; one whose ``error`` field is set is a
failure (a clip that could not be decoded). Failures are stored and counted, and they are not
finished: a resumed run tries them again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from mammut_video.runtime.distributed import DistContext
from mammut_video.runtime.progress import progress


class Unit(Protocol):
    """A piece of work that finishes ``keys``."""

    keys: list[str]

    def restrict(self, keys: list[str]) -> Unit:
        """The same work, finishing only ``keys`` (the pending ones)."""
        ...


class ResultStore(Protocol):
    """Where this rank's results go (JSON lines, embedding shards, ...)."""

    def finished(self) -> set[str]:
        """Keys already finished by any rank of any earlier run (failures excluded)."""
        ...

    def append(self, results: list[dict]) -> None:
        """Commit one batch of this rank's results (all of it or, after a crash, none)."""
        ...

    def close(self) -> None: ...


U = TypeVar("U", bound=Unit)
Work = Callable[[list[U]], Iterable[tuple[list[dict], int]]]


@dataclass
class LoopStats:
    """What one run of the loop did. ``processed`` and ``failed`` count keys over every rank."""

    total: int
    resumed: int
    processed: int
    failed: int
    seconds: float


def pending_units(units: Sequence[U], finished: set[str]) -> list[U]:
    """Each unit restricted to its keys not in ``finished``; units with none left are dropped."""
    out = []
    for unit in units:
        keys = [k for k in unit.keys if k not in finished]
        if len(keys) == len(unit.keys):
            out.append(unit)
        elif keys:
            out.append(unit.restrict(keys))
    return out


def run_sharded(units: Sequence[U], work: Work, store: ResultStore, ctx: DistContext, *, desc: str,
                unit_name: str = "item", show_progress: bool = True) -> LoopStats:
    """Run ``work`` over this rank's share of the pending ``units`` and append what it yields to ``store``.

    ``work(units)`` yields ``(results, keys_done)`` per batch: the results to store and how many
    unit keys they finish (the progress bar counts keys). Every rank must call this together; it
    returns once every rank is done, with counts summed over ranks. When ``work`` or the store
    raises on one rank, every other rank raises :class:`~mammut_video.runtime.distributed.RankError`
    with that message at its next batch or barrier.
    """
    finished = store.finished()
    total = sum(len(u.keys) for u in units)
    resumed = sum(1 for u in units for k in u.keys if k in finished)
    mine = ctx.shard(pending_units(units, finished))
    ctx.barrier()  # every rank has read the stored results before anyone appends

    started = time.perf_counter()
    processed = failed = 0
    if ctx.distributed:  # rank 0 shows its own share only: say so, or 8 GPUs look like 1/8 of the job
        desc = f"{desc} (rank 0's share, 1/{ctx.world_size})"
    bar = progress(sum(len(u.keys) for u in mine), desc, unit_name, enabled=show_progress and ctx.is_main)
    try:
        for results, keys_done in work(mine):
            store.append(results)
            processed += keys_done
            failed += sum(1 for r in results if r.get("error"))
            if failed:
                bar.set_postfix(failed=failed)  # shown with the count, so a bad input is seen as it happens
            bar.update(keys_done)
            ctx.check_peers()
    except BaseException as err:
        ctx.report_failure(err)  # the other ranks stop with this message instead of waiting for this rank
        raise
    finally:
        bar.close()
        store.close()
    seconds = time.perf_counter() - started
    ctx.barrier()
    processed_all, failed_all = (sum(v) for v in zip(*ctx.gather([(processed, failed)])))
    return LoopStats(total, resumed, processed_all, failed_all, seconds)
