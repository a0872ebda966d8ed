"""Real Celery workers, Redis DBs and a small market for the distributed-training tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from app.taskpool import open_pool
from app.taskpool.base import TaskPool
from app.tracking.manager import ExpManager
from tests.small_specs import QUICK_LGBM, SEGMENTS

REDIS = "redis://127.0.0.1:6379"
BIN = Path(sys.executable).parent


@dataclass
class Cluster:
    """A work directory with its own Redis DBs, task store and MLflow DB, and the workers started on it."""

    work: Path
    broker_db: int
    env: dict[str, str]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def pool(self) -> TaskPool:
        return open_pool(self.env["QTRAIN_TASK_STORE"])

    @property
    def manager(self) -> ExpManager:
        return ExpManager(self.env["MLFLOW_TRACKING_URI"])

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(f"{REDIS}/{self.broker_db}")

    def start_worker(self, name: str, queues: str = "cpu") -> subprocess.Popen[bytes]:
        log = open(self.work / f"worker-{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [str(BIN / "celery"), "-A", "app", "worker", "-Q", queues, "-c", "1", "-n", f"{name}@%h",
             "--without-gossip", "--without-mingle", "-l", "INFO"],
            cwd=self.work, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.workers[name] = proc
        deadline = time.monotonic() + 90
        while b"ready." not in (self.work / f"worker-{name}.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker {name} did not start:\n{self.worker_log(name)}")
            time.sleep(0.3)
        return proc

    def worker_log(self, name: str) -> str:
        return (self.work / f"worker-{name}.log").read_text(errors="replace")[-6000:]

    def children(self, name: str) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.workers[name].pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def stop_all(self) -> None:
        for proc in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def qtrain(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([str(BIN / "qtrain"), *args], cwd=self.work, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def make_cluster(work: Path, market: Path, broker_db: int, *, lease_s: float = 6.0) -> Cluster:
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QTRAIN_", "MLFLOW_"))}
    env.update(
        QTRAIN_HOME=str(work / ".qtrain"),
        QTRAIN_DATA_DIR=str(market),
        QTRAIN_BROKER_URL=f"{REDIS}/{broker_db}",
        QTRAIN_RESULT_BACKEND=f"{REDIS}/{broker_db + 1}",
        QTRAIN_TASK_STORE=f"sqlite:///{work / 'tasks.db'}",
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        QTRAIN_LEASE_S=str(lease_s),
        QTRAIN_WORKER_THREADS="1",
    )
    for db in (broker_db, broker_db + 1):
        redis.Redis.from_url(f"{REDIS}/{db}").flushdb()
    ExpManager(env["MLFLOW_TRACKING_URI"])  # create the tracking DB once, before several processes use it
    return Cluster(work, broker_db, env)


def wait_for(
    predicate: object, timeout: float, what: str, poll: float = 0.2, client: subprocess.Popen[str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if client is not None and client.poll() is not None:
            out, err = client.communicate()
            raise AssertionError(
                f"the client exited ({client.returncode}) before {what}:\n{out[-2000:]}\n{err[-4000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def runs_of(cluster: Cluster, experiment: str = "qtrain") -> list[tuple[str, str, str]]:
    """(run_id, status, task_hash) of every run of ``experiment``."""
    frame = cluster.manager.search_records([experiment])
    return list(zip(frame["run_id"], frame["status"], frame.get("tags.task_hash", [""] * len(frame)), strict=True))


def sweep_args(*extra: str, seeds: Sequence[int] = (0,), lgbm: bool = True) -> list[str]:
    """``qtrain run -m`` on the small market through the Celery launcher (quick LightGBM unless ``lgbm=False``)."""
    model = QUICK_LGBM if lgbm else QUICK_LGBM[-2:]
    return ["run", "-m", SEGMENTS, *model, f"seed={','.join(map(str, seeds))}", "hydra/launcher=celery", *extra]
