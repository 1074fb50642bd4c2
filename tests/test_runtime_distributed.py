"""Under torchrun, a rank whose share of the work fails must stop every rank with its message, and
rank 0 can share what it computed alone (the inputs of a run) with every rank."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mammut_video.runtime.distributed import DistContext, MainRankError, RankError

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys, time
    from dataclasses import dataclass, field
    from pathlib import Path
    from mammut_video.runtime.distributed import init_distributed
    from mammut_video.runtime.loop import run_sharded

    @dataclass
    class Unit:
        keys: list = field(default_factory=list)
        def restrict(self, keys):
            return self

    class Store:
        def finished(self):
            return set()
        def append(self, results):
            pass
        def close(self):
            pass

    def work(units):
        for unit in units:
            if unit.keys[0] == "u1":  # rank 1's first unit: its disk is full
                raise OSError(28, "No space left on device")
            time.sleep(0.5)  # rank 0 has 40 slow units: 20 s if nobody stops it
            yield [{}], 1

    out = Path(sys.argv[1])
    ctx = init_distributed("cpu")
    shared = ctx.on_main(lambda: {"inputs": ["a", "b"], "rank": ctx.rank}, share=True)
    started = time.monotonic()
    try:
        run_sharded([Unit([f"u{i}"]) for i in range(80)], work, Store(), ctx, desc="t", show_progress=False)
        result = ["returned", ""]
    except Exception as err:
        result = [type(err).__name__, str(err)]
    result += [time.monotonic() - started, shared]
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(result))
    ctx.close()
""")


@pytest.mark.slow
def test_a_failing_rank_stops_the_others_with_its_message(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120,
                              env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        pytest.fail("rank 0 kept working after rank 1 failed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    main = json.loads((tmp_path / "rank0.json").read_text())
    failing = json.loads((tmp_path / "rank1.json").read_text())
    assert failing[:2] == ["OSError", "[Errno 28] No space left on device"]
    assert main[0] == "RankError"
    assert "rank 1 failed" in main[1] and "No space left on device" in main[1]
    assert main[2] < 10, "rank 0 should stop at its next batch, not after its 40 units"
    assert main[3] == failing[3] == {"inputs": ["a", "b"], "rank": 0}  # rank 0's value, on every rank


def test_single_process_context_needs_no_group() -> None:
    ctx = DistContext()
    ctx.barrier()
    ctx.check_peers()
    ctx.report_failure(ValueError("ignored without a group"))
    assert ctx.on_main(lambda: 3, share=True) == 3
    with pytest.raises(ValueError):
        ctx.on_main(lambda: (_ for _ in ()).throw(ValueError("x")))
    assert issubclass(MainRankError, RankError)


def test_run_sharded_reports_a_failure_before_it_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    from mammut_video.runtime.loop import run_sharded

    reported: list[BaseException] = []
    ctx = DistContext()
    monkeypatch.setattr(ctx, "report_failure", reported.append)

    class Store:
        closed = False

        def finished(self) -> set[str]:
            return set()

        def append(self, results: list[dict]) -> None:
            pass

        def close(self) -> None:
            Store.closed = True

    class Unit:
        keys = ["a"]

        def restrict(self, keys: list[str]) -> "Unit":
            return self

    def work(units: list) -> object:
        yield [{}], 1
        raise RuntimeError("the GPU fell off the bus")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="fell off"):
        run_sharded([Unit()], work, Store(), ctx, desc="t", show_progress=False)
    assert [str(e) for e in reported] == ["the GPU fell off the bus"] and Store.closed
    assert time.monotonic() - started < 5


class _NoStore:
    """A result store that keeps nothing and has nothing finished."""

    def finished(self) -> set[str]:
        return set()

    def append(self, results: list[dict]) -> None:
        pass

    def close(self) -> None:
        pass


class _RecordingBar:
    """A stand-in progress display that keeps what it was told."""

    def __init__(self) -> None:
        self.done = 0
        self.postfixes: list[dict] = []

    def update(self, n: int = 1) -> None:
        self.done += n

    def set_postfix(self, **values: object) -> None:
        self.postfixes.append(values)

    def close(self) -> None:
        pass


def test_run_sharded_shows_the_failures_so_far_on_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    import mammut_video.runtime.loop as loop

    bar = _RecordingBar()
    monkeypatch.setattr(loop, "progress", lambda *a, **k: bar)

    class Unit:
        keys = ["a", "b", "c"]

        def restrict(self, keys: list[str]) -> "Unit":
            return self

    def work(units: list) -> object:
        yield [{"key": "a"}], 1
        yield [{"key": "b", "error": "cannot decode video x.mp4"}], 1
        yield [{"key": "c"}], 1

    made: list[tuple] = []
    monkeypatch.setattr(loop, "progress", lambda *a, **k: made.append(a) or bar)
    stats = loop.run_sharded([Unit()], work, _NoStore(), DistContext(), desc="t")
    assert stats.failed == 1 and bar.done == 3
    assert bar.postfixes == [{"failed": 1}, {"failed": 1}]  # from the bad input on, never before it
    assert made[0][1] == "t"


def test_run_sharded_under_torchrun_says_the_bar_is_rank_0s_share(monkeypatch: pytest.MonkeyPatch) -> None:
    import mammut_video.runtime.loop as loop

    made: list[tuple] = []
    monkeypatch.setattr(loop, "progress", lambda *a, **k: made.append(a) or _RecordingBar())
    ctx = DistContext(rank=0, world_size=2)
    monkeypatch.setattr(ctx, "barrier", lambda: None)
    monkeypatch.setattr(ctx, "gather", lambda values: values * 2)  # both ranks did the same

    class Unit:
        def __init__(self, key: str) -> None:
            self.keys = [key]

        def restrict(self, keys: list[str]) -> "Unit":
            return self

    loop.run_sharded([Unit("a"), Unit("b")], lambda units: iter([([{}], len(units))]), _NoStore(), ctx, desc="eval")
    assert made[0][:2] == (1, "eval (rank 0's share, 1/2)")
