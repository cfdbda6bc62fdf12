"""The type hints are ones a checker accepts.

mypy checks the checkout's ``alectio_core`` and ``alectio_plugins`` with the
settings in ``pyproject.toml``. The checkout, not the installed copy: mypy
silences every error in site-packages, so checking what pip installed would
pass whatever it held; and the wheel holds exactly these files, ``py.typed``
included (``test_installed.py::test_the_wheel_holds_every_file_of_its_packages``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mypy_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert result.returncode == 0, f"mypy found errors:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("package", ["alectio_core", "alectio_plugins"])
def test_each_package_says_it_is_typed(package):
    """PEP 561: without the marker a user's checker ignores our hints."""
    assert (ROOT / package / "py.typed").is_file()
