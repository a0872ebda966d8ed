"""Run Microsoft Qlib (pyqlib 0.9.7) in its own virtual environment, built on first use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QLIB_VENV = ROOT / ".qlib-venv"
REF_DIR = ROOT / "tests" / "qlib_ref"


def _qlib_works(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run([python, "-c", "import qlib, pandas"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="session")
def qlib_python() -> Path:
    """Path of a Python interpreter with pyqlib installed (the venv is created if missing, ~45 s)."""
    python = QLIB_VENV / "bin" / "python"
    if not _qlib_works(python):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(QLIB_VENV)], check=True)
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "--no-deps", "-r", str(REF_DIR / "requirements.txt")],
            check=True,
        )
    assert _qlib_works(python), "pyqlib could not be installed into .qlib-venv"
    return python


def run_reference(python: Path, script: str, *args: str | Path) -> None:
    """Run one of the tests/qlib_ref scripts under Qlib's interpreter; fail with its stderr."""
    out = subprocess.run(
        [python, str(REF_DIR / script), *map(str, args)], capture_output=True, text=True, cwd=REF_DIR, timeout=600
    )
    if out.returncode != 0:
        pytest.fail(f"{script} failed:\n{out.stderr[-4000:]}")
