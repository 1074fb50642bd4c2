"""Under torchrun, work that only rank 0 does (merging, scoring) failing must stop every rank.

A plain barrier after it leaves the other ranks waiting until the process group times out
(30 min by default) when rank 0 raises; launchers other than torchrun do not kill them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from mammut_video.eval.predictions import PredictionStore
    from mammut_video.runtime.distributed import init_distributed
    from mammut_video.runtime.loop import run_sharded

    def score():
        raise ValueError("METEOR's Java process died")

    out = Path(sys.argv[1])
    ctx = init_distributed("cpu")
    try:
        store = PredictionStore(out, "question_id", ctx.rank, ctx.world_size)
        run_sharded([], lambda units: iter(()), store, ctx, desc="eval", show_progress=False)
        ctx.on_main(score)
        result = ["returned", ""]
    except Exception as err:
        result = [type(err).__name__, str(err)]
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(result))
    ctx.close()
""")


@pytest.mark.slow
def test_a_failure_in_rank_0_scoring_stops_every_rank(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=90,
                              env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        pytest.fail("rank 1 kept waiting after rank 0 failed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    main = json.loads((tmp_path / "rank0.json").read_text())
    other = json.loads((tmp_path / "rank1.json").read_text())
    assert main == ["ValueError", "METEOR's Java process died"]
    assert other[0] == "MainRankError" and "rank 0" in other[1] and "METEOR's Java process died" in other[1]
