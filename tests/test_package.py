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
    code = "import sys, mammut_video, mammut_video.cli; mammut_video.cli.build_parser(); print(sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))"
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
