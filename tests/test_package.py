import subprocess
import sys


def test_import_then_timm_and_open_clip_work():
    # In a fresh interpreter: the guard must be in place after a plain `import mammut_video`.
    code = "import mammut_video, timm, open_clip; from torchvision.transforms import v2; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


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
