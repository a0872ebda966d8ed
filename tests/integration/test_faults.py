"""Faults injected into a real cluster: the broker killed and restarted mid-sweep, a worker that cannot set up,
pool children killed on a loaded machine. Each test runs its own redis-server (so it can kill it), real Celery
workers and the real ``qtrain`` client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from socket import gethostname

import pytest

from app.core.settings import load_settings
from app.distributed.broker import CeleryBroker
from app.distributed.celery_config import CHILD_START_TIMEOUT_S, make_app
from app.workflow.spec import TaskSpec
from app.workflow.trainer_rm import send
from tests.integration.celery_harness import Cluster, RedisServer, finish, make_cluster, runs_of, sweep_args, wait_for
from tests.small_specs import small_spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]
UP_TIMEOUT = "Timed out waiting for UP message"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


@pytest.fixture
def cluster(broker: RedisServer, market: Path, tmp_path: Path) -> Iterator[Cluster]:
    made = make_cluster(tmp_path / "cluster", market, 0, redis_url=broker.url)
    yield made
    made.stop_all()


def test_the_broker_killed_and_restarted_mid_sweep_is_ridden_out(cluster: Cluster, broker: RedisServer) -> None:
    cluster.start_worker("w1", wait=False)
    cluster.start_worker("w2", wait=False)
    cluster.wait_ready("w1")
    cluster.wait_ready("w2")
    proc = cluster.qtrain(*sweep_args(seeds=(0, 1, 2, 3, 4, 5)))
    pool = cluster.pool

    def one_done_all_submitted() -> bool:
        stats = pool.stats("qtrain") if "qtrain" in pool.pools() else {}
        return stats.get("done", 0) >= 1 and sum(stats.values()) == 6

    wait_for(one_done_all_submitted, 120, "the first task to finish with all six submitted", client=proc, poll=0.05)
    broker.kill()  # every queued, unacked and result key is gone with it
    time.sleep(4)
    assert proc.poll() is None, "the client died with the broker"
    broker.start()
    code, out, err = finish(proc, timeout=240)
    assert code == 0, err[-4000:] + cluster.worker_log("w1")
    assert "## sweep: 6 of 6 jobs finished" in out
    # one line when the outage starts (naming the broker's address), one when it ends
    assert out.count("the broker is unreachable") == 1 and f"127.0.0.1:{broker.port}" in out
    assert out.count("the broker is reachable again after") == 1
    tasks = pool.list("qtrain")
    assert [t.status for t in tasks] == ["done"] * 6
    assert [t.attempts for t in tasks] == [1] * 6  # nothing ran twice, nothing was retried
    runs = runs_of(cluster)
    assert sorted(s for _, s, _ in runs) == ["FINISHED"] * 6
    assert set(Counter(h for _, _, h in runs).values()) == {1} and {h for _, _, h in runs} == {t.hash for t in tasks}
    assert {t.worker.split("@")[0] for t in tasks if t.worker} == {"w1", "w2"}


def test_a_worker_that_cannot_open_the_tracking_store_fails_the_attempts_with_its_error(cluster: Cluster) -> None:
    blocker = cluster.work / "not-a-folder"
    blocker.write_text("a file where the tracking DB's folder should be")
    cluster.start_worker("w1", env={"MLFLOW_TRACKING_URI": f"sqlite:///{blocker}/mlflow.db"})
    started = time.monotonic()
    code, out, err = finish(cluster.qtrain(*sweep_args()), timeout=120)
    assert time.monotonic() - started < 90
    assert code == 1, err[-3000:]
    (task,) = cluster.pool.list("qtrain")
    assert task.status == "failed" and task.attempts == 3, task
    assert task.error and "MLFLOW_TRACKING_URI" in task.error and "not-a-folder" in task.error
    assert "restart the worker" in task.error
    (line,) = [x for x in out.splitlines() if x.startswith("- job 0:")]  # the summary's failed-jobs line
    assert "cannot run tasks" in line and "MLFLOW_TRACKING_URI" in line
    log = cluster.worker_log("w1")
    assert log.count("Until then every task attempt this process is sent fails") == 1, log  # said once
    assert log.count("attempt 3/3 failed") == 1 and "attempt 4/" not in log
    assert "qtrain" not in cluster.manager.list_experiments()  # no attempt got as far as a tracking store


def test_killed_pool_children_are_replaced_on_a_loaded_machine(cluster: Cluster, market: Path) -> None:
    settings = load_settings(cluster.env, cluster.work)
    assert make_app(settings).conf.worker_proc_alive_timeout == CHILD_START_TIMEOUT_S >= 20
    cluster.start_worker("w1")
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]  # 2 cores, 4 spinners
    try:
        for _ in range(3):
            (child,) = cluster.children("w1")
            os.kill(child, signal.SIGKILL)
            wait_for(lambda c=child: cluster.children("w1") not in ([], [c]), 60, "a new pool child")
        time.sleep(5)  # past Celery's default UP timeout (4 s), still loaded
        (last,) = cluster.children("w1")
        maps = Path(f"/proc/{last}/maps").read_text()
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert "libtorch" not in maps  # a child's start imports nothing heavy
    assert UP_TIMEOUT not in cluster.worker_log("w1"), cluster.worker_log("w1")
    # the replacement serves tasks
    spec = TaskSpec.from_mapping(
        small_spec(market, {"train": ["2015-01-05", "2015-10-30"], "valid": ["2015-11-02", "2015-12-31"],
                            "test": ["2016-01-04", "2016-05-31"]})
    )  # fmt: skip
    task, _ = cluster.pool.submit("after-kills", spec.body, spec.hash)
    send(cluster.pool, CeleryBroker(make_app(settings)), task)
    wait_for(lambda: cluster.pool.get(task.id).status == "done", 120, "the replaced child to train a task")
    assert cluster.pool.get(task.id).attempts == 1 and cluster.pool.get(task.id).worker == f"w1@{gethostname()}"
    assert UP_TIMEOUT not in cluster.worker_log("w1"), cluster.worker_log("w1")
