"""``qtrain pool cancel`` on a sweep a real Celery worker is training: the waiting task never runs, the running one
stops at its next boosting round or epoch with its run KILLED, and the waiting client prints its table and exits 1."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest

from tests.integration.celery_harness import Cluster, finish, runs_of, sweep_args, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENDLESS = {  # training that would run for hours: only a cancel ends it in time
    "lgbm": ["model.num_boost_round=1000000", "model.early_stopping_rounds=null"],
    "mlp": ["model=mlp", "dataset=alpha158_nn", "model.n_epochs=1000000", "model.early_stop=1000000"],
}


@pytest.mark.parametrize("model", list(ENDLESS))
def test_cancel_stops_the_running_task_and_the_waiting_one_never_runs(
    cluster_factory: Callable[..., Cluster], model: str
) -> None:
    cluster = cluster_factory(0)  # lease 6 s: the worker's heartbeat asks every 2 s
    cluster.start_worker("w1")  # one pool child: seed 0 trains, seed 1 waits
    proc = cluster.qtrain(*sweep_args(*ENDLESS[model], seeds=(0, 1), lgbm=model == "lgbm"))
    pool = cluster.pool

    def training() -> bool:
        tasks = pool.list("qtrain") if "qtrain" in pool.pools() else []
        return any(t.status == "running" and t.run_id for t in tasks) and len(tasks) == 2

    wait_for(training, 180, "a task to be training", client=proc)
    time.sleep(3)  # well into training
    cancelled_at = time.monotonic()
    out = subprocess.run([str(cluster.bin / "qtrain"), "pool", "cancel", "--pool", "qtrain"], cwd=cluster.work,
                         env=cluster.env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0 and "cancelled 2 of 2 task(s)" in out.stdout, out.stdout + out.stderr
    code, stdout, err = finish(proc, timeout=120)
    assert code == 1, err[-3000:]  # a cancelled sweep fails
    assert "## sweep: 0 of 2 jobs finished" in stdout and stdout.count("cancelled (qtrain pool cancel)") >= 2
    tasks = pool.list("qtrain")
    assert [t.status for t in tasks] == ["cancelled", "cancelled"]
    assert sorted(t.attempts for t in tasks) == [0, 1]  # the waiting one never ran
    wait_for(lambda: [s for _, s, _ in runs_of(cluster)] == ["KILLED"], 60, "the stopped run to end KILLED")
    assert time.monotonic() - cancelled_at < 60  # stopped at a round or epoch, not at the end of training
    assert "stopped while training" in cluster.worker_log("w1")


def test_a_running_task_reports_its_progress_to_the_pool_and_to_celery(cluster_factory: Callable[..., Cluster]) -> None:
    from pathlib import Path

    from app.core.settings import load_settings
    from app.distributed.celery_config import make_app

    cluster = cluster_factory(0)  # lease 6 s: a heartbeat, with the latest report, every 2 s
    cluster.start_worker("w1")
    proc = cluster.qtrain(*sweep_args(*ENDLESS["lgbm"], "hydra.launcher.detach=true"))
    assert finish(proc, timeout=120)[0] == 0
    pool = cluster.pool

    def boosting() -> dict[str, object]:
        (task,) = pool.list("qtrain")
        done = task.progress.get("done")
        return task.progress if task.status == "running" and isinstance(done, int) and done > 0 else {}

    wait_for(lambda: bool(boosting()), 180, "the running task to report boosting rounds")
    report = boosting()
    assert report["stage"] == "fit" and report["total"] == 1000000 and report["unit"] == "rounds"
    assert "l2" in str(report["note"])  # the latest train/valid scores
    (task,) = pool.list("qtrain")
    celery = make_app(load_settings(cluster.env, Path(cluster.work)))
    message = celery.AsyncResult(f"{task.id}.{task.dispatches}")
    wait_for(lambda: message.state == "PROGRESS", 30, "the Celery task state PROGRESS")
    assert message.info["stage"] == "fit" and message.info["done"] > 0  # what Flower's task page shows
    watch = subprocess.run([str(cluster.bin / "qtrain"), "pool", "watch", "qtrain", "--once"], cwd=cluster.work,
                           env=cluster.env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert watch.returncode == 0 and "/1000000 rounds" in watch.stdout, watch.stdout + watch.stderr
    cancel = subprocess.run([str(cluster.bin / "qtrain"), "pool", "cancel", task.id], cwd=cluster.work,
                            env=cluster.env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert cancel.returncode == 0, cancel.stderr
    wait_for(lambda: [s for _, s, _ in runs_of(cluster)] == ["KILLED"], 60, "the run to end KILLED")
