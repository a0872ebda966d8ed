"""Shared fixtures: a clean environment for every test; Qlib's interpreter for differential tests."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Drop qtrain/MLflow variables so a developer's shell never leaks into a test."""
    for key in list(os.environ):
        if (key.startswith("QTRAIN_") and key != "QTRAIN_MONGO_URL") or key == "MLFLOW_TRACKING_URI":
            monkeypatch.delenv(key, raising=False)
    yield


ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"  # the machine's server (trust auth), as CI starts it
QLIB_VENV = ROOT / ".qlib-venv"
REF_DIR = ROOT / "tests" / "qlib_ref"


def _pins(*names: str) -> dict[str, str]:
    lines = (REF_DIR / "requirements.txt").read_text().splitlines()
    pins = dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))
    return {name: pins[name] for name in names}


def _qlib_works(python: Path) -> bool:
    """Qlib imports and the venv holds the pinned pandas/numpy/lightgbm/torch (a stale venv is rebuilt)."""
    if not python.exists():
        return False
    check = "; ".join(  # a local version label (torch's "+cpu") is not part of the pin
        f"assert importlib.metadata.version({name!r}).split('+')[0] == {version!r}"
        for name, version in _pins("pyqlib", "pandas", "numpy", "lightgbm", "torch").items()
    )
    probe = subprocess.run(
        [python, "-c", f"import importlib.metadata, qlib, pandas, lightgbm, torch; {check}"], capture_output=True
    )
    return probe.returncode == 0


@pytest.fixture(scope="session")
def qlib_python() -> Path:
    """Path of a Python interpreter with pyqlib installed (the venv is created if missing, ~45 s)."""
    import fcntl

    python = QLIB_VENV / "bin" / "python"
    QLIB_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(QLIB_VENV.parent / ".qlib-venv.lock", "w") as lock:  # pytest-xdist workers build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
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
    import tempfile

    with tempfile.TemporaryDirectory(prefix="qlib-ref-") as scratch:  # Qlib writes lock files relative to the cwd
        out = subprocess.run(
            [python, str(REF_DIR / script), *map(str, args)], capture_output=True, text=True, cwd=scratch, timeout=600
        )
    if out.returncode != 0:
        pytest.fail(f"{script} failed:\n{out.stderr[-4000:]}")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the PostgreSQL server the suite uses (skips, saying why, where none answers)."""
    import psycopg

    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at {POSTGRES_URL} ({' '.join(str(exc).split())})")
    return POSTGRES_URL


@pytest.fixture
def postgres_schema(postgres_server: str) -> Iterator[str]:
    """A schema of the test's own on the server, dropped afterwards."""
    import psycopg

    schema = f"qtrain_test_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
