import subprocess
import sys


def test_import_then_timm_and_open_clip_work():
    # In a fresh interpreter: the guard must be in place after a plain `import mammut_video`.
    code = "import mammut_video, timm, open_clip; from torchvision.transforms import v2; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def run_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_is_light():
    # `mammut-video --help` must not pay for torch (2 s) and torchvision (2 s more here).
    code = "import sys, mammut_video, mammut_video.commands; mammut_video.commands.build_parser(); print(sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))"
    assert run_python(code) == "[]"


def test_guard_covers_direct_and_submodule_imports():
    code = ("import mammut_video\n"
            "from torchvision.transforms import v2\n"
            "import torchvision, sys\n"
            "assert sys.modules['torchvision'] is torchvision and torchvision.transforms.v2 is v2\n"
            "assert v2.CenterCrop(4) is not None\n"
            "print(torchvision.__version__.split('.')[0])")
    assert run_python(code) == "0"


def test_unknown_attribute_is_attribute_error():
    import mammut_video

    try:
        mammut_video.not_a_name
    except AttributeError as err:
        assert "not_a_name" in str(err)
    else:
        raise AssertionError("expected AttributeError")


def test_cli_help_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "mammut_video", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "mammut-video" in out.stdout


def _fake_torchvision(root, init: str):
    pkg = root / "torchvision"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(init)
    (pkg / "extra.py").write_text("VALUE = 7\n")
    return root


def _run_with(path, code: str) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_guard_changes_nothing_when_torchvision_imports_cleanly(tmp_path):
    # A torchvision that imports (CUDA torch with its own torchvision): same module, spec and loader as
    # without the guard, its submodules import normally, and the workaround never runs.
    root = _fake_torchvision(tmp_path, "RUNS = globals().get('RUNS', 0) + 1\n__version__ = '9.9'\n")
    code = ("import importlib.machinery as m, mammut_video, mammut_video._torchvision_guard as g\n"
            "import torchvision, torchvision.extra, sys\n"
            "assert type(torchvision.__loader__) is m.SourceFileLoader, torchvision.__loader__\n"
            "assert torchvision.__spec__.loader is torchvision.__loader__\n"
            "assert torchvision.__spec__.origin == torchvision.__file__\n"
            "assert torchvision.RUNS == 1 and torchvision.extra.VALUE == 7\n"
            "assert not g.workaround_applied() and g._FINDER not in sys.meta_path\n"
            "print(torchvision.__file__)")
    out = _run_with(root, code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(root / "torchvision" / "__init__.py")


def test_guard_lets_other_import_errors_through(tmp_path):
    root = _fake_torchvision(tmp_path, "raise RuntimeError('some other problem')\n")
    out = _run_with(root, "import mammut_video, torchvision")
    assert out.returncode != 0 and "RuntimeError: some other problem" in out.stderr


def test_guard_repairs_the_cpu_torch_error(tmp_path):
    # The error the CUDA torchvision wheel raises on CPU torch: the schemas are defined and the import
    # runs again, after which torch.ops.torchvision.nms exists.
    root = _fake_torchvision(tmp_path, (
        "import torch\n"
        "if not hasattr(torch.ops.torchvision, 'nms'):\n"
        "    raise RuntimeError('operator torchvision::nms does not exist')\n"))
    code = ("import mammut_video, mammut_video._torchvision_guard as g, torchvision, torch\n"
            "assert g.workaround_applied() and torchvision.__spec__.loader is torchvision.__loader__\n"
            "print('ok')")
    out = _run_with(root, code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
