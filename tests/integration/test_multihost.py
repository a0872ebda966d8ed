"""qtrain across hosts: an infra host, two worker hosts and a client host, each a network namespace of its own.

* infra: Redis (broker and results), PostgreSQL (the task store, and MLflow's backend store) and an MLflow tracking
  server with proxied artifacts (``mlflow server --serve-artifacts``), all listening on the infra address only;
* w1, w2: a Celery worker each, with its own ``QTRAIN_HOME`` (feature cache, checkpoints), working directory and
  ``HOME``; the only path they share is the market data, mounted read-only;
* client: ``qtrain run -m ... hydra/launcher=celery`` from a directory of its own.

A four-job torch sweep runs; once a worker that has already finished a job is training another one (its checkpoint
uploaded to its run), that worker's host is killed. The sweep still ends with every job done exactly once, the
killed job resumed on the other host from the checkpoint stored on the tracking server, and every run's artifacts
(model, predictions, figures) fetched from the tracking server alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import netns
from tests.integration.celery_harness import BIN, sweep_args

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROBE = Path(__file__).with_name("multihost_probe.py")
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
# 250 quick epochs: a job trains for ~10-20 s, long enough to be caught mid-training and to checkpoint on its run
TORCH = ["model=mlp", "dataset=alpha158_nn", "model.hidden_sizes=[32]", "model.n_epochs=250",
         "model.early_stop=250", "model.lr_patience=250"]  # fmt: skip


def _why_not() -> str | None:
    if PG_BIN is None or not (PG_BIN / "postgres").exists():
        return "no PostgreSQL server binaries under /usr/lib/postgresql (the infra host runs its own)"
    if shutil.which("redis-server") is None:
        return "no redis-server"
    return netns.unavailable()


@pytest.fixture
def network() -> Iterator[netns.Network]:
    reason = _why_not()
    if reason:
        pytest.skip(f"multi-host test needs network namespaces: {reason}")
    net = netns.Network()
    try:
        yield net
    finally:
        net.close()


@pytest.fixture
def readonly_market(market: Path, tmp_path: Path) -> Iterator[Path]:
    """The market, bind-mounted read-only: what the worker hosts share, and all they share."""
    view = tmp_path / "market-ro"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(market), str(view)], check=True, capture_output=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True, capture_output=True)
        yield view
    finally:
        subprocess.run(["umount", "-l", str(view)], capture_output=True)


def _start_infra(infra: netns.Host, root: Path) -> tuple[str, str, str]:
    """PostgreSQL, Redis and the MLflow server on ``infra``; returns (task store URL, broker base URL, tracking URI)."""
    assert PG_BIN is not None
    addr = infra.address
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    pgdata = root / "pgdata"
    subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(pgdata), "-A", "trust",
                    "-U", "postgres", "--no-sync", "-E", "UTF8"], check=True, capture_output=True, env=env)  # fmt: skip
    with open(pgdata / "pg_hba.conf", "a") as hba:
        hba.write(f"host all all {netns.SUBNET}.0/24 trust\n")
    pg = infra.popen([str(PG_BIN / "postgres"), "-D", str(pgdata), "-c", f"listen_addresses={addr}", "-p", "5432",
                      "-k", str(pgdata), "-c", "fsync=off"], env=env, cwd=root, log=root / "pg.log",
                     user="postgres")  # fmt: skip
    netns.wait_port(infra, 5432, 60, pg, root / "pg.log")
    made = infra.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "createdb"), "-h", addr, "mlflow"],
                     env=env, cwd=root, timeout=60)  # fmt: skip
    assert made.returncode == 0, made.stderr
    argv = ["redis-server", "--port", "6379", "--bind", addr, "--protected-mode", "no", "--save", "", "--appendonly",
            "no", "--dir", str(root)]  # fmt: skip
    redis = infra.popen(argv, env=env, cwd=root, log=root / "redis.log")
    netns.wait_port(infra, 6379, 30, redis, root / "redis.log")
    mlflow = infra.popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"postgresql+psycopg://postgres@{addr}:5432/mlflow",
         "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"), "--host", addr, "--port", "5000",
         "--workers", "1"],
        env={**env, "HOME": str(root)}, cwd=root, log=root / "mlflow.log",
    )  # fmt: skip
    netns.wait_port(infra, 5000, 180, mlflow, root / "mlflow.log")
    return f"postgresql://postgres@{addr}:5432/postgres", f"redis://{addr}:6379", f"http://{addr}:5000"


def _host_env(home: Path, market: Path, store: str, redis: str, tracking: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QTRAIN_", "MLFLOW_"))}
    env.update(
        HOME=str(home),
        TMPDIR=str(home / "tmp"),
        QTRAIN_HOME=str(home / ".qtrain"),
        QTRAIN_DATA_DIR=str(market),
        QTRAIN_BROKER_URL=f"{redis}/0",
        QTRAIN_RESULT_BACKEND=f"{redis}/1",
        QTRAIN_TASK_STORE=store,
        MLFLOW_TRACKING_URI=tracking,
        QTRAIN_LEASE_S="6",
        QTRAIN_WORKER_THREADS="1",
    )
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return env


def _say(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", flush=True)  # the phases' times, shown when the test fails


def _log(path: Path) -> str:
    return path.read_text(errors="replace")[-5000:] if path.exists() else "(no log)"


def test_a_sweep_across_hosts_survives_a_worker_host_dying(
    network: netns.Network, readonly_market: Path, tmp_path: Path
) -> None:
    infra, w1, w2, client = (network.host(name) for name in ("infra", "w1", "w2", "cli"))
    # PostgreSQL refuses to run as root: its files live where the postgres user can reach them
    infra_root = Path(tempfile.mkdtemp(prefix="qtrain-infra-"))
    try:
        os.chmod(infra_root, 0o755)
        shutil.chown(infra_root, "postgres")
        _say("hosts made")
        store, redis, tracking = _start_infra(infra, infra_root)
        _say("infra up")
        homes = {h.name: tmp_path / h.name for h in (w1, w2, client)}
        envs = {name: _host_env(home, readonly_market, store, redis, tracking) for name, home in homes.items()}
        workers = {}
        for host in (w1, w2):
            argv = [sys.executable, "-m", "celery", "-A", "app", "worker", "-Q", "cpu", "-c", "1", "-n",
                    f"{host.name}@%h", "--without-gossip", "--without-mingle", "-l", "INFO"]  # fmt: skip
            workers[host.name] = host.popen(argv, env=envs[host.name], cwd=homes[host.name],
                                            log=homes[host.name] / "worker.log")  # fmt: skip
        sweep = subprocess.Popen(
            ["ip", "netns", "exec", client.netns, str(BIN / "qtrain"),
             *sweep_args(*TORCH, seeds=(0, 1, 2, 3), lgbm=False)],
            cwd=homes["cli"], env=envs["cli"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

        found = client.run(
            [sys.executable, str(PROBE), "victim", "400"], env=envs["cli"], cwd=homes["cli"], timeout=420
        )
        assert found.returncode == 0, (found.stderr[-3000:], _log(homes["w1"] / "worker.log"),
                                       _log(homes["w2"] / "worker.log"))  # fmt: skip
        victim = json.loads(found.stdout)
        _say(f"victim {victim}")
        dead = network.hosts[victim["worker"].split("@")[0]]
        survivor = w2 if dead is w1 else w1
        assert dead.kill(), "the victim host had no processes"

        out, err = sweep.communicate(timeout=420)
        assert sweep.returncode == 0, err[-4000:] + _log(homes[survivor.name] / "worker.log")
        assert "## sweep: 4 of 4 jobs finished" in out, out
        _say("sweep done")

        probe = client.run([sys.executable, str(PROBE), "outcome", str(homes["cli"] / "fetched")], env=envs["cli"],
                           cwd=homes["cli"], timeout=300)  # fmt: skip
        assert probe.returncode == 0, probe.stderr[-3000:]
        outcome = json.loads(probe.stdout)
        _say("outcome read")
    finally:
        network.close()
        shutil.rmtree(infra_root, ignore_errors=True)

    tasks = {t["id"]: t for t in outcome["tasks"]}
    assert len(tasks) == 4 and all(t["status"] == "done" for t in tasks.values()), tasks
    finished = [r for r in outcome["runs"] if r["status"] == "FINISHED"]
    # each job done exactly once: one finished run per task, the one its pool entry names
    assert sorted(r["hash"] for r in finished) == sorted(t["hash"] for t in tasks.values())
    assert {r["run_id"] for r in finished} == {t["run_id"] for t in tasks.values()}
    # both hosts finished jobs; the victim's job ran twice, its first run ended KILLED, the survivor finished it
    finishers = {t["worker"].split("@")[0] for t in tasks.values()}
    assert finishers == {"w1", "w2"}, tasks
    killed = tasks[victim["task"]]
    assert killed["attempts"] == 2 and killed["worker"].startswith(f"{survivor.name}@")
    assert killed["history"][0]["outcome"] == "lease_expired" and killed["history"][0]["run_id"] == victim["run_id"]
    assert {r["status"] for r in outcome["runs"] if r["run_id"] == victim["run_id"]} == {"KILLED"}
    # it resumed on the survivor from the checkpoint the dead host had uploaded to its run
    log = (homes[survivor.name] / "worker.log").read_text(errors="replace")
    assert f"downloaded from run {victim['run_id']}" in log and "resuming from checkpoint" in log, log[-5000:]
    for run in finished:
        assert run["artifact_uri"].startswith("mlflow-artifacts:/"), run
        downloaded = set(run["downloaded"])
        assert {"pred.parquet", "spec.json"} <= downloaded, downloaded
        assert any(p.startswith("model/") for p in downloaded) and any(p.endswith(".png") for p in downloaded)
    # no host kept an artifact of its own: the tracking server holds them all
    for home in homes.values():
        assert not list(home.rglob("mlartifacts")) and not list(home.rglob("mlruns")), home
    with contextlib.suppress(FileNotFoundError):
        assert not any(readonly_market.rglob("*.tmp"))
