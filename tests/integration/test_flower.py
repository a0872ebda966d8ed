"""Flower (as the Procfile starts it) on a real worker and Redis: basic auth guards the UI and API, and a task sent
through Celery shows up in its task list.

Redis DB 13 is this module's own (the Celery training tests use DBs 3-12); it is flushed before and after.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))
REDIS_URL = "redis://127.0.0.1:6379/13"
USER, PASSWORD = "ops", "flower-test-pw"
WORKER = f"flowertest@{socket.gethostname()}"
START_TIMEOUT_S = 45.0


@dataclass
class Stack:
    base: str
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]]
    logs: dict[str, Path]

    def output(self) -> str:
        return "\n".join(
            f"----- {name} (exit {self.procs[name].poll()}) -----\n{path.read_text(errors='replace')[-4000:]}"
            for name, path in self.logs.items()
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        return exc.code, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def _wait(stack: Stack, predicate: Callable[[], bool], what: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (OSError, urllib.error.URLError):
            pass  # Flower not listening yet
        dead = [name for name, proc in stack.procs.items() if proc.poll() is not None]
        if dead or time.monotonic() > deadline:
            why = f"{', '.join(dead)} exited" if dead else f"timed out after {timeout:g}s"
            pytest.fail(f"waiting for {what}: {why}\n{stack.output()}")
        time.sleep(0.3)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the process group this test started (the worker's pool children included)."""
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # a pool child that outlived its parent is still in the group
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("flower")
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QTRAIN_", "MLFLOW_", "FLOWER_"))}
    env.update(QTRAIN_BROKER_URL=REDIS_URL, QTRAIN_RESULT_BACKEND=REDIS_URL, QTRAIN_HOME=str(work / ".qtrain"))
    port = _free_port()
    commands = {
        "worker": [CELERY, "-A", "app", "worker", "-Q", "cpu", "-c", "1", "-n", "flowertest@%h",
                   "--without-gossip", "--without-mingle", "-l", "INFO"],
        "flower": [CELERY, "-A", "app", "flower", "--address=127.0.0.1", f"--port={port}",
                   f"--basic-auth={USER}:{PASSWORD}"],
    }  # fmt: skip
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {name: work / f"{name}.log" for name in commands}
    stack = Stack(f"http://127.0.0.1:{port}", env, procs, logs)
    try:
        for name, command in commands.items():
            with logs[name].open("wb") as log:
                procs[name] = subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
        auth = (USER, PASSWORD)
        _wait(stack, lambda: WORKER in (_get(f"{stack.base}/api/workers?refresh=1", auth)[1] or {}), "the worker")
        yield stack
    finally:
        for proc in procs.values():
            _stop(proc)
        client.flushdb()
        client.close()


def test_basic_auth_guards_the_api(stack: Stack) -> None:
    assert _get(f"{stack.base}/api/workers")[0] == 401
    assert _get(f"{stack.base}/api/workers", (USER, "wrong"))[0] == 401
    assert _get(f"{stack.base}/api/tasks")[0] == 401
    assert _get(f"{stack.base}/", None)[0] == 401
    status, workers = _get(f"{stack.base}/api/workers", (USER, PASSWORD))
    assert status == 200
    info = workers[WORKER]
    assert [q["name"] for q in info["active_queues"]] == ["cpu"]
    assert {"qtrain.train", "qtrain.end_train"} <= set(info["registered"])


def test_healthcheck_is_unauthenticated(stack: Stack) -> None:
    # why the Procfile and compose.yaml keep Flower on 127.0.0.1: these answer anyone who can connect
    assert _get(f"{stack.base}/healthcheck") == (200, "OK")
    assert _get(f"{stack.base}/metrics")[0] == 200


def test_task_sent_after_start_is_listed(stack: Stack) -> None:
    from app.core.settings import load_settings
    from app.distributed.celery_config import make_app

    celery = make_app(load_settings(stack.env))
    try:
        # celery.accumulate is a built-in no-op (it returns its arguments), registered on every worker
        result = celery.send_task("celery.accumulate", args=[1, 2], queue="cpu", routing_key="cpu")
        assert result.get(timeout=20) == [1, 2]

        def listed() -> bool:
            status, tasks = _get(f"{stack.base}/api/tasks?limit=50", (USER, PASSWORD))
            return status == 200 and tasks.get(result.id, {}).get("state") == "SUCCESS"

        _wait(stack, listed, f"task {result.id} in /api/tasks", timeout=15)
        status, info = _get(f"{stack.base}/api/task/info/{result.id}", (USER, PASSWORD))
        assert status == 200
        assert info["name"] == "celery.accumulate"
        assert info["worker"] == WORKER
    finally:
        celery.close()


def test_a_pool_task_is_listed_under_its_label(stack: Stack) -> None:
    from app.core.settings import load_settings
    from app.distributed.broker import CeleryBroker
    from app.distributed.celery_config import make_app
    from app.taskpool import open_pool
    from app.workflow.trainer_rm import send

    settings = load_settings(stack.env)
    pool = open_pool(settings.task_store)  # the worker's store too (QTRAIN_HOME)
    celery = make_app(settings)
    try:
        # the spec builds nothing: the attempt fails in the pool, the Celery task still ends and Flower lists it
        task, _ = pool.submit("flower", {"seed": 1}, "flower-h1", label="lgbm seed=1", max_attempts=1)
        send(pool, CeleryBroker(celery), task)
        message_id = f"{task.id}.1"

        def ended() -> bool:
            status, tasks = _get(f"{stack.base}/api/tasks?limit=50", (USER, PASSWORD))
            return status == 200 and tasks.get(message_id, {}).get("state") in ("SUCCESS", "FAILURE")

        _wait(stack, ended, f"task {message_id} in /api/tasks", timeout=90)
        status, info = _get(f"{stack.base}/api/task/info/{message_id}", (USER, PASSWORD))
        assert status == 200
        assert info["name"] == "qtrain.train lgbm seed=1"  # what a researcher tells it by
        assert info["args"] == str(["flower", task.id])  # and the pool task it runs
    finally:
        celery.close()
        pool.close()
