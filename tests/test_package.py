import subprocess
import sys

import covidspark


def test_import_does_not_load_tensorflow_or_keras():
    code = ("import sys, covidspark; covidspark.__version__; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_resolves_lazily():
    for name in covidspark.__all__:
        assert getattr(covidspark, name) is not None, name


def test_unknown_attribute_raises():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        covidspark.nope


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "covidspark.cli", "train", "--help"],
                         capture_output=True, text=True, check=True)
    for flag in ("--data", "--task", "--model", "--weights", "--out", "--classifier",
                 "--threshold", "--tune", "--class-weight", "--train-source"):
        assert flag in out.stdout
