"""Make ``import torchvision`` work on a CPU-only torch.

The only torchvision wheel for torch 2.13 is a CUDA build. On CPU torch its compiled ops
fail to load, and ``torchvision/_meta_registrations.py`` then raises
``RuntimeError: operator torchvision::nms does not exist`` at import time, which also
breaks ``import timm`` and ``import open_clip``. Defining the two op schemas it registers
fake kernels for lets the pure-Python parts (transforms.v2, models) import. The guard acts
only when the normal import fails with exactly that error.
"""

from __future__ import annotations

import sys

import torch

_MISSING_OP = "torchvision::nms does not exist"
_schema_lib: torch.library.Library | None = None  # kept alive: dropping it drops the schemas


def _define_missing_schemas() -> None:
    global _schema_lib
    _schema_lib = torch.library.Library("torchvision", "DEF")
    _schema_lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _schema_lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def import_torchvision():
    """Import torchvision, applying the CPU-torch workaround only if it is needed."""
    try:
        import torchvision
    except RuntimeError as err:
        if _MISSING_OP not in str(err) or _schema_lib is not None:
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _define_missing_schemas()
        import torchvision
    return torchvision


import_torchvision()
