"""Broken infrastructure under the commands that send work, in real processes: each setting that points at a
service that is down or unsupported ends `qtrain run` / `qtrain pool` with one `error:` line naming the variable,
exit status 2, within seconds, before anything is stored; a broker lost mid-submission leaves a sweep that the
same command resumes; and a single job with hydra/launcher=celery goes to the workers."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.core.errors import BrokerUnreachableError, ResultBackendUnreachableError
from app.core.settings import load_settings
from app.distributed.infra_check import SERVER_TIMEOUT_S, check_services
from app.taskpool import SQLiteTaskPool
from tests.integration.celery_harness import REDIS, Cluster, finish, sweep_args

pytestmark = pytest.mark.integration
MakeCluster = Callable[..., Cluster]
BROKER_DB = 1  # and 2 for the results; the error cases only PING them
SECRET = "s3cret"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _timed(cluster: Cluster, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    code, out, err = finish(cluster.qtrain(*args), timeout=120)
    return subprocess.CompletedProcess(args, code, out, err), time.monotonic() - started


def _rows(store: Path) -> int:
    if not store.exists():
        return 0
    with sqlite3.connect(store) as conn:
        return int(conn.execute("SELECT count(*) FROM tasks").fetchone()[0])


def _assert_one_line_error(out: subprocess.CompletedProcess[str], elapsed: float, *expected: str) -> str:
    lines = out.stderr.splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-3000:]
    assert lines[0].startswith("error: ") and "Traceback" not in out.stdout, out.stdout[-2000:]
    for text in expected:
        assert text in lines[0], lines[0]
    assert SECRET not in out.stderr + out.stdout
    assert elapsed < 15, f"{elapsed:.1f} s"  # the pre-check's 5 s at most, plus starting Python and validating
    return lines[0]


CASES = {
    "broker at a closed port": (
        lambda work, port: {"QTRAIN_BROKER_URL": f"redis://:{SECRET}@127.0.0.1:{port}/14"},
        ["broker redis://:***@127.0.0.1:{port}/14 is not reachable", "Connection refused", "QTRAIN_BROKER_URL"],
    ),
    "result backend at a closed port": (
        lambda work, port: {"QTRAIN_RESULT_BACKEND": f"redis://127.0.0.1:{port}/15"},
        ["result backend redis://127.0.0.1:{port}/15 is not reachable", "QTRAIN_RESULT_BACKEND"],
    ),
    "MongoDB result backend at a closed port": (
        lambda work, port: {"QTRAIN_RESULT_BACKEND": f"mongodb://celery:{SECRET}@127.0.0.1:{port}/celery"},
        ["result backend mongodb://celery:***@127.0.0.1:{port}/celery is not reachable", "QTRAIN_RESULT_BACKEND"],
    ),
    "RabbitMQ broker": (
        lambda work, port: {"QTRAIN_BROKER_URL": f"amqp://guest:{SECRET}@127.0.0.1:5672//"},
        ["broker amqp://guest:***@127.0.0.1:5672// is not supported", "needs a Redis broker", "QTRAIN_BROKER_URL="],
    ),
    "task store under a regular file": (
        lambda work, port: {"QTRAIN_TASK_STORE": f"sqlite:///{work / 'a_file' / 'tasks.db'}"},
        ["cannot create the directory of the task store", "a_file", "QTRAIN_TASK_STORE"],
    ),
    "PostgreSQL task store at a closed port": (
        lambda work, port: {"QTRAIN_TASK_STORE": f"postgresql://trainer:{SECRET}@127.0.0.1:{port}/qtrain"},
        ["cannot reach PostgreSQL at postgresql://trainer:***@127.0.0.1:{port}/qtrain", "QTRAIN_TASK_STORE"],
    ),
    "MongoDB task store at a closed port": (
        lambda work, port: {"QTRAIN_TASK_STORE": f"mongodb://trainer:{SECRET}@127.0.0.1:{port}/qtrain"},
        ["cannot reach MongoDB at mongodb://trainer:***@127.0.0.1:{port}/qtrain", "QTRAIN_TASK_STORE"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_sweep_with_broken_infrastructure_stops_in_one_line_before_storing(
    cluster_factory: MakeCluster, case: str
) -> None:
    cluster = cluster_factory(BROKER_DB)
    (cluster.work / "a_file").write_text("not a directory\n")
    env, expected = CASES[case]
    port = _closed_port()
    cluster.env.update(env(cluster.work, port))
    out, elapsed = _timed(cluster, *sweep_args(seeds=(0, 1)))
    _assert_one_line_error(out, elapsed, *(text.format(port=port) for text in expected))
    assert _rows(cluster.work / "tasks.db") == 0
    assert not (cluster.work / ".qtrain" / "hydra").exists()  # Hydra never started: no sweep directory
    assert cluster.redis().dbsize() == 0


def test_trainer_celery_and_pool_commands_check_the_broker_first(cluster_factory: MakeCluster, market: Path) -> None:
    cluster = cluster_factory(BROKER_DB)
    pool = SQLiteTaskPool(cluster.work / "tasks.db")
    task, _ = pool.submit("qtrain", {"seed": 0}, "h0", max_attempts=1)
    claimed = pool.claim("qtrain", "w")
    assert claimed is not None and claimed.token is not None
    pool.fail(task.id, claimed.token, "boom", retry=False)
    port = _closed_port()
    cluster.env["QTRAIN_BROKER_URL"] = f"redis://127.0.0.1:{port}/14"
    expected = f"broker redis://127.0.0.1:{port}/14 is not reachable"

    single = sweep_args()[2:-1]  # one job, not a sweep: trainer=celery instead of the launcher
    out, elapsed = _timed(cluster, "run", *single, "trainer=celery", "trainer.wait=false")
    _assert_one_line_error(out, elapsed, expected, "QTRAIN_BROKER_URL")
    for command in (["reset", "qtrain"], ["requeue", task.id], ["reconcile", "qtrain"]):
        out, elapsed = _timed(cluster, "pool", *command)
        _assert_one_line_error(out, elapsed, expected)
    assert [(t.id, t.status) for t in pool.list("qtrain")] == [(task.id, "failed")]  # the reset did not happen


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose server takes connections and never answers (the kernel completes the handshakes)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def test_a_silent_broker_or_backend_fails_the_check_within_its_timeout_and_the_deadline(
    tmp_path: Path, silent_port: int
) -> None:
    silent = f"redis://127.0.0.1:{silent_port}/0"
    cases = [
        ({"QTRAIN_BROKER_URL": silent}, BrokerUnreachableError, 5.0, SERVER_TIMEOUT_S),
        ({"QTRAIN_BROKER_URL": silent}, BrokerUnreachableError, 0.5, 0.5),  # the deadline cuts the timeout
        ({"QTRAIN_BROKER_URL": f"{REDIS}/{BROKER_DB}", "QTRAIN_RESULT_BACKEND": silent},
         ResultBackendUnreachableError, 5.0, SERVER_TIMEOUT_S),
    ]  # fmt: skip
    for env, error, deadline_s, waits in cases:
        settings = load_settings({**env, "QTRAIN_TASK_STORE": f"sqlite:///{tmp_path / 'tasks.db'}"}, cwd=tmp_path)
        started = time.monotonic()
        with pytest.raises(error, match=f"is not reachable \\(no answer within {waits:g} s\\)"):
            check_services(settings, deadline_s=deadline_s)
        assert time.monotonic() - started < waits + 5
        assert not (tmp_path / "tasks.db").exists()


class CuttingProxy:
    """A TCP proxy to Redis that, on the ``cut_at``-th LPUSH (a message being queued), drops that command, closes
    every connection and stops listening: the broker is lost in the middle of a submission."""

    def __init__(self, target: tuple[str, int], *, port: int = 0, cut_at: int | None = None) -> None:
        self.target, self.cut_at, self.pushes = target, cut_at, 0
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self._lock:
                self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while True:
                for src in select.select([client, server], [], [])[0]:
                    data = src.recv(65536)
                    if not data:
                        return
                    if src is client and b"LPUSH" in data:
                        self.pushes += 1
                        if self.pushes == self.cut_at:
                            self.close()
                            return
                    (server if src is client else client).sendall(data)
        except (OSError, ValueError):
            return

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def test_a_broker_lost_mid_submission_leaves_a_sweep_the_same_command_resumes(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(BROKER_DB)
    redis_port = int(cluster.redis_url.rsplit(":", 1)[1])  # the cluster's own redis-server
    proxy = CuttingProxy(("127.0.0.1", redis_port), cut_at=2)  # the second job's message is lost
    cluster.env["QTRAIN_BROKER_URL"] = f"redis://127.0.0.1:{proxy.port}/{BROKER_DB}"
    command = sweep_args("hydra.launcher.detach=true", seeds=(0, 1))
    try:
        out, elapsed = _timed(cluster, *command)
    finally:
        proxy.close()
    line = _assert_one_line_error(out, elapsed, f"broker redis://127.0.0.1:{proxy.port}/{BROKER_DB} failed while")
    assert "stopped the submission at job 2 of 2" in line and "run the same command again to resume" in line
    first = {t.id: t for t in cluster.pool.list("qtrain")}
    assert sorted(t.dispatches for t in first.values()) == [0, 1] and len(first) == 2
    assert cluster.redis().llen("cpu") == 1

    proxy = CuttingProxy(("127.0.0.1", redis_port), port=proxy.port)  # the broker is back, at the same address
    try:
        out, _ = _timed(cluster, *command)
    finally:
        proxy.close()
    assert out.returncode == 0, out.stderr[-3000:]
    assert "submitted 2 task(s) to pool qtrain" in out.stdout and "sent 1 message(s)" in out.stdout
    tasks = cluster.pool.list("qtrain")
    assert {t.id for t in tasks} == set(first) and all(t.status == "waiting" for t in tasks)  # none stored twice
    queued = [json.loads(raw)["headers"]["id"].split(".")[0] for raw in cluster.redis().lrange("cpu", 0, -1)]
    assert sorted(queued) == sorted(first)  # exactly one message per task


def test_a_single_job_with_the_celery_launcher_goes_to_the_workers(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(BROKER_DB)
    single = [arg for arg in sweep_args("hydra.launcher.detach=true") if arg != "-m"]
    out, _ = _timed(cluster, *single)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "sending this single job to the Celery workers as a one-job sweep" in out.stdout
    assert "submitted 1 task(s) to pool qtrain" in out.stdout
    (task,) = cluster.pool.list("qtrain")
    assert task.status == "waiting" and task.spec["seed"] == 0
    (raw,) = cluster.redis().lrange("cpu", 0, -1)
    assert json.loads(raw)["headers"]["id"] == f"{task.id}.1"
    assert not list(cluster.work.glob(".qtrain/hydra/runs/*"))  # nothing trained here
