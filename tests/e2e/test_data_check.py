"""`qtrain data check` on a clean and a damaged store, and `qtrain run` refusing a truncated feature file before
anything is created or queued."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

QTRAIN = Path(sys.executable).with_name("qtrain")
# segments=auto of data=import would do too; fixed dates keep the message independent of the split
SEGMENTS = "data.segments={train:[2015-01-05,2015-02-27],valid:[2015-03-02,2015-03-13],test:[2015-03-16,2015-04-03]}"


def _qtrain(work: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    work.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("QTRAIN_", "MLFLOW_"))}
    return subprocess.run(
        [str(QTRAIN), *args], cwd=work, env={**base, **env}, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def market(tmp_path: Path) -> Path:
    out = _qtrain(tmp_path, "data", "synth", "--to", str(tmp_path / "mkt"), "--instruments", "5", "--days", "60")
    assert out.returncode == 0, out.stderr
    return tmp_path / "mkt"


def _bin(root: Path, symbol: str, field: str) -> Path:
    return root / "features" / symbol.lower() / f"{field}.day.bin"


def test_a_clean_market_checks_clean(tmp_path: Path, market: Path) -> None:
    out = _qtrain(tmp_path, "data", "check", "--data-dir", str(market))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith(f"checked {market}: calendar 60 days (2015-01-05 .. 2015-04-03)")
    assert "48 feature files in 6 folders" in lines[0]
    assert lines[1:] == ["clean: no problems"]
    # the store of QTRAIN_DATA_DIR when no directory is given; --json
    out = _qtrain(tmp_path, "data", "check", "--json", "--values", QTRAIN_DATA_DIR=str(market))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["store"] == str(market) and doc["clean"] is True and doc["files"] == 48
    assert doc["problems"] == [] and doc["warnings"] == []


def test_a_damaged_market_lists_each_problem_and_exits_1(tmp_path: Path, market: Path) -> None:
    truncated = _bin(market, "SH600000", "close")
    os.truncate(truncated, 7)  # `truncate -s 7`
    longer = _bin(market, "SH600001", "open")
    with longer.open("ab") as fh:
        fh.write(b"\x00\x00\x00\x00")  # a whole value more than the calendar has room for
    moved = _bin(market, "SZ000001", "volume")
    with moved.open("r+b") as fh:
        fh.write(struct.pack("<f", 75.0))  # start index beyond the 60-day calendar
    (market / "instruments" / "broken.txt").write_text("SH600000\t2015-01-05\n")

    out = _qtrain(tmp_path, "data", "check", "--data-dir", str(market))
    assert out.returncode == 1, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[1].startswith(f"problem  {market / 'instruments' / 'broken.txt'}: line 1: expected 'SYMBOL")
    assert lines[2].startswith(f"problem  {truncated}: truncated .bin file (7 bytes")
    assert lines[3].startswith(f"problem  {longer}: corrupt .bin file: 58 values from calendar index 3 run past")
    assert lines[4].startswith(f"problem  {moved}: corrupt .bin file: start index 75.0 is not a calendar position")
    assert lines[5].startswith("4 problem(s) found. Fix each file named")
    assert len(lines) == 6
    doc = json.loads(_qtrain(tmp_path, "data", "check", "--data-dir", str(market), "--json").stdout)
    assert doc["clean"] is False and len(doc["problems"]) == 4


def test_a_missing_store_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    out = _qtrain(tmp_path, "data", "check", "--data-dir", str(tmp_path / "nowhere"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere'}: no such store directory. Pass the store with --data-dir DIR (or set "
        "QTRAIN_DATA_DIR); create one with `qtrain data synth --to DIR` or `qtrain data import SRC --to DIR`."
    ]
    assert out.stdout == ""


@pytest.mark.parametrize("trainer", [[], ["trainer=celery", "trainer.wait=false"]])
def test_qtrain_run_refuses_a_truncated_file_before_anything_is_created(
    tmp_path: Path, market: Path, trainer: list[str]
) -> None:
    path = _bin(market, "SH600001", "close")
    os.truncate(path, 7)
    work = tmp_path / "work"
    # a broker nobody listens on: had the task been submitted, the error would be a connection error
    out = _qtrain(
        work, "run", SEGMENTS, *trainer, QTRAIN_DATA_DIR=str(market), QTRAIN_BROKER_URL="redis://127.0.0.1:9/0"
    )
    assert out.returncode == 2, out.stderr[-2000:]
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: truncated .bin file (7 bytes")
    assert f"Re-import SH600001 (`qtrain data import SRC --to {market}`" in line
    assert "finished" not in out.stdout
    assert not (work / "mlflow.db").exists()  # no MLflow run
    assert not (work / ".qtrain" / "tasks.db").exists()  # no task submitted to the pool
