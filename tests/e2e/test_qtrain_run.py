"""`qtrain run` end to end on a small market: composed config -> task spec -> recorded run; bad configs fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.data.synth import SynthSpec, write_synth_market

pytestmark = pytest.mark.slow
SEGMENTS = [
    "dataset.segments.train=[2015-01-05,2015-10-30]",
    "dataset.segments.valid=[2015-11-02,2015-12-31]",
    "dataset.segments.test=[2016-01-04,2016-05-31]",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("run")
    write_synth_market(work / "market", SynthSpec(instruments=25, days=360, seed=8))
    return work


def _qtrain(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QTRAIN_", "MLFLOW_"))}
    env["QTRAIN_DATA_DIR"] = str(work / "market")
    qtrain = Path(sys.executable).with_name("qtrain")
    return subprocess.run([str(qtrain), "run", *args], cwd=work, env=env, capture_output=True, text=True, timeout=600)


def test_run_trains_and_records(workdir: Path) -> None:
    out = _qtrain(workdir, *SEGMENTS, "model.num_boost_round=30", "record.port_ana.config.topk=5", "seed=3")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "finished" in out.stdout and "Rank IC" in out.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{workdir / 'mlflow.db'}" in out.stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QTRAIN_", "MLFLOW_"))}
    qtrain = str(Path(sys.executable).with_name("qtrain"))
    report = subprocess.run([qtrain, "report", "qtrain"], cwd=workdir, capture_output=True, text=True, env=env)
    assert report.returncode == 0 and "LightGBMModel" in report.stdout and "FINISHED" in report.stdout


def test_bad_configs_fail_before_training(workdir: Path) -> None:
    out = _qtrain(workdir, "model=nope")
    assert out.returncode != 0 and "nope" in out.stderr
    out = _qtrain(workdir, *SEGMENTS, "model.num_leavs=3")
    assert out.returncode != 0 and "num_leavs" in out.stderr
    out = _qtrain(workdir, *SEGMENTS, "model.num_boost_round=many")
    assert out.returncode == 2 and "num_boost_round='many'" in out.stderr
    assert not (workdir / "mlflow.db").exists() or "FAILED" not in out.stdout
