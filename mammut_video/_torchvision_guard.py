"""Make ``import torchvision`` work on a CPU-only torch, and change nothing where it already works.

The only torchvision wheel for torch 2.13 is a CUDA build. On CPU torch its compiled ops fail
to load, and ``torchvision/_meta_registrations.py`` then raises
``RuntimeError: operator torchvision::nms does not exist`` at import time, which also breaks
``import timm`` and ``import open_clip``. Defining the two op schemas it registers fake kernels
for lets the pure-Python parts (transforms.v2, models) import.

``install()`` puts a finder first on ``sys.meta_path``. For the name ``torchvision`` alone it
returns the spec the normal finders find, with the loader wrapped: the wrapper runs the real
loader, and only when that raises exactly the error above does it define the schemas and run it
again. Afterwards the module's ``__loader__`` and ``__spec__.loader`` are the real loader again,
so a torchvision that imports cleanly (CUDA torch with its matching torchvision) is imported by
its own loader, with its own spec, exactly as without the guard. ``import mammut_video`` itself
imports neither torch nor torchvision.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
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


def workaround_applied() -> bool:
    """Whether torchvision needed the CPU-torch workaround in this process."""
    return _schema_lib is not None


class _GuardedLoader(importlib.abc.Loader):
    """Runs torchvision's own loader; on the missing-op error only, defines the schemas and runs it again."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        try:
            self._run(module)
        except RuntimeError as err:
            if _MISSING_OP not in str(err) or _schema_lib is not None:
                raise
            for name in [m for m in sys.modules if m.startswith("torchvision.")]:
                del sys.modules[name]  # half-imported submodules: import them again
            _define_missing_schemas()
            self._run(module)

    def _run(self, module: ModuleType) -> None:
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)  # type: ignore[attr-defined]


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):  # noqa: ANN001
        if fullname != "torchvision":
            return None
        _uninstall()  # once: the first import decides
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _GuardedLoader(spec.loader)
        return spec


_FINDER = _TorchvisionFinder()


def _uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def install() -> None:
    """Guard the first import of torchvision (no-op once it is imported)."""
    if "torchvision" not in sys.modules and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
