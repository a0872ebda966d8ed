"""qtrain as a wheel: built from this checkout, installed in a fresh venv, run from a directory unrelated to the
checkout (its config tree and Hydra plugins come from the wheel, not from the source tree)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.celery_harness import Cluster, finish, runs_of, sweep_args, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BROKER_DB = 7


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the qtrain wheel installed; its dependencies are this venv's (a .pth line, no copies)."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp.glob("qtrain-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "qtrain_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True,
                   capture_output=True)  # fmt: skip
    return venv / "bin"


def test_the_wheel_carries_the_config_tree_and_the_plugins(wheel_venv: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [wheel_venv / "python", "-c", "import app.config.compose as c; print(c.__file__); print(c.conf_dir())"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert not where[0].startswith(str(ROOT)) and where[1].endswith("app/_conf"), where
    cfg = subprocess.run([wheel_venv / "qtrain", "run", "--cfg", "job"], cwd=tmp_path, capture_output=True, text=True)
    assert cfg.returncode == 0, cfg.stderr
    assert "_target_: app.models.lgbm.LightGBMModel" in cfg.stdout
    plugins = subprocess.run([wheel_venv / "qtrain", "run", "--info", "plugins"], cwd=tmp_path, capture_output=True,
                             text=True)  # fmt: skip
    assert "CeleryLauncher" in plugins.stdout and "QtrainSweeper" in plugins.stdout, plugins.stdout[-3000:]
    helps = [subprocess.run([wheel_venv / "qtrain", *args], cwd=tmp_path, capture_output=True, text=True)
             for args in (["run", "--help"], ["--help"])]  # fmt: skip
    for shown in helps:
        assert shown.returncode == 0 and "Traceback" not in shown.stdout + shown.stderr, shown.stderr[-3000:]
    assert "model: double_ensemble, gru, gru_ts, lgbm, mlp" in helps[0].stdout  # Hydra's app help, from the wheel
    assert "qtrain data import | synth | features | info | check" in helps[1].stdout


def test_a_worker_and_the_celery_launcher_from_the_wheel_train_a_job(
    wheel_venv: Path, cluster_factory: Callable[..., Cluster]
) -> None:
    cluster = cluster_factory(BROKER_DB)
    cluster.bin = wheel_venv  # both the worker and the client run the installed wheel, in the cluster's own dir
    cluster.start_worker("w1")
    code, out, err = finish(cluster.qtrain(*sweep_args(seeds=(3,))), timeout=180)
    assert code == 0, err[-3000:] + cluster.worker_log("w1")
    assert "## sweep: 1 of 1 jobs finished" in out
    (task,) = cluster.pool.list("qtrain")
    wait_for(lambda: [s for _, s, _ in runs_of(cluster)] == ["FINISHED"], 30, "the run to end")
    assert task.status == "done" and task.worker and task.worker.startswith("w1@")
