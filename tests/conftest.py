"""Shared test fixtures.

Real media live in ``../shared/realdata`` beside the repository; tests that need them take
the ``realdata`` fixture, which skips cleanly when the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REALDATA = REPO_ROOT.parent / "shared" / "realdata"

# Subprocesses (torchrun, `python -m mammut_video`, scripts) import this checkout's package, not
# whatever copy an editable install elsewhere points at.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real media not found at {REALDATA}")
    return REALDATA
