"""Make ``import torchvision`` work on a CPU-only torch.

The only torchvision wheel for torch 2.13 is a CUDA build. On CPU torch its compiled ops
fail to load, and ``torchvision/_meta_registrations.py`` then raises
``RuntimeError: operator torchvision::nms does not exist`` at import time, which also
breaks ``import timm`` and ``import open_clip``. Defining the two op schemas it registers
fake kernels for lets the pure-Python parts (transforms.v2, models) import. The workaround
acts only when the normal import fails with exactly that error.

``install()`` puts a finder on ``sys.meta_path`` that runs :func:`import_torchvision` the
first time anything imports torchvision (directly or through timm / open_clip), so
``import mammut_video`` itself imports neither torch nor torchvision and stays fast.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from types import ModuleType

_MISSING_OP = "torchvision::nms does not exist"
_schema_lib = None  # torch.library.Library kept alive: dropping it drops the schemas


def _define_missing_schemas() -> None:
    global _schema_lib
    import torch

    _schema_lib = torch.library.Library("torchvision", "DEF")
    _schema_lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _schema_lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def import_torchvision() -> ModuleType:
    """Import torchvision, applying the CPU-torch workaround only if it is needed."""
    _uninstall()
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


class _Imported(importlib.abc.Loader):
    """Hands the import system a module that :func:`import_torchvision` already executed."""

    def __init__(self, module: ModuleType):
        self.module = module

    def create_module(self, spec):  # noqa: ANN001
        return self.module

    def exec_module(self, module: ModuleType) -> None:
        pass


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):  # noqa: ANN001
        if fullname != "torchvision":
            return None
        module = import_torchvision()
        # The import system would return the module's own spec (and execute it again) if
        # the name were still registered; hand it over through a loader that does nothing.
        sys.modules.pop("torchvision", None)
        return importlib.util.spec_from_loader("torchvision", _Imported(module))


_FINDER = _TorchvisionFinder()


def _uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def install() -> None:
    """Guard the first import of torchvision (no-op once it is imported)."""
    if "torchvision" not in sys.modules and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
