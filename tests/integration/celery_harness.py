"""Real Celery workers, Redis DBs and a small market for the distributed-training tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
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
    redis_url: str = REDIS
    bin: Path = BIN  # where qtrain and celery are installed (another venv for an installed wheel)
    _log_starts: dict[str, int] = field(default_factory=dict)  # where each worker's latest start begins in its log

    @property
    def pool(self) -> TaskPool:
        return open_pool(self.env["QTRAIN_TASK_STORE"])

    @property
    def manager(self) -> ExpManager:
        return ExpManager(self.env["MLFLOW_TRACKING_URI"])

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(f"{self.redis_url}/{self.broker_db}")

    def start_worker(
        self, name: str, queues: str = "cpu", *, env: Mapping[str, str] | None = None, wait: bool = True,
        args: Sequence[str] = (),
    ) -> subprocess.Popen[bytes]:  # fmt: skip
        """Start ``celery -A app worker`` (one pool child) as ``name``; ``env`` overrides the cluster's settings,
        ``args`` are more worker options. With ``wait=False`` it returns at once (see :meth:`wait_ready`); its log is
        appended to, not replaced."""
        path = self.work / f"worker-{name}.log"
        self._log_starts[name] = path.stat().st_size if path.exists() else 0
        log = open(path, "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [str(self.bin / "python"), "-m", "celery", "-A", "app", "worker", "-Q", queues, "-c", "1",
             "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "-l", "INFO", *args],
            cwd=self.work, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.workers[name] = proc
        if wait:
            self.wait_ready(name)
        return proc

    def wait_ready(self, name: str, timeout: float = 90) -> None:
        """Wait until worker ``name``'s latest start logged ``ready.``"""
        proc, path = self.workers[name], self.work / f"worker-{name}.log"
        deadline = time.monotonic() + timeout
        while b"ready." not in path.read_bytes()[self._log_starts[name] :]:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker {name} did not start:\n{self.worker_log(name)}")
            time.sleep(0.3)

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
        return subprocess.Popen([str(self.bin / "qtrain"), *args], cwd=self.work, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server of the caller's own on a free port, without persistence: killing it loses every queue,
    unacked message and result, as a crashed broker does; :meth:`start` again brings it back empty."""

    work: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        log = open(self.work / "redis.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.work)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server on port {self.port} did not start: {self.log()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the server (no shutdown save) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def log(self) -> str:
        return (self.work / "redis.log").read_text(errors="replace")[-3000:]


def make_cluster(work: Path, market: Path, broker_db: int, *, lease_s: float = 6.0, redis_url: str = REDIS) -> Cluster:
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QTRAIN_", "MLFLOW_"))}
    env.update(
        QTRAIN_HOME=str(work / ".qtrain"),
        QTRAIN_DATA_DIR=str(market),
        QTRAIN_BROKER_URL=f"{redis_url}/{broker_db}",
        QTRAIN_RESULT_BACKEND=f"{redis_url}/{broker_db + 1}",
        QTRAIN_TASK_STORE=f"sqlite:///{work / 'tasks.db'}",
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        QTRAIN_LEASE_S=str(lease_s),
        QTRAIN_WORKER_THREADS="1",
    )
    for db in (broker_db, broker_db + 1):
        redis.Redis.from_url(f"{redis_url}/{db}").flushdb()
    ExpManager(env["MLFLOW_TRACKING_URI"])  # create the tracking DB once, before several processes use it
    return Cluster(work, broker_db, env, redis_url=redis_url)


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
