"""Distributed training on real Celery workers and the real Redis: sweeps, killed workers, failing tasks, a
broker that loses its queue, and resubmission. Every task must complete exactly once, with one FINISHED run."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable

import pytest

from tests.integration.celery_harness import Cluster, finish, runs_of, sweep_args, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MakeCluster = Callable[..., Cluster]


def _one_finished_run_per_task(cluster: Cluster, experiment: str = "qtrain") -> None:
    runs = runs_of(cluster, experiment)
    finished = Counter(task for _, status, task in runs if status == "FINISHED")
    done = {t.hash for p in cluster.pool.pools() for t in cluster.pool.list(p, ["done"])}
    assert set(finished) == done and all(n == 1 for n in finished.values()), runs
    assert all(status in ("FINISHED", "FAILED", "KILLED") for _, status, _ in runs), runs


def test_six_task_sweep_on_two_workers_then_resubmission_runs_nothing(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(3)
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    code, out, err = finish(cluster.qtrain(*sweep_args("model.num_leaves=7,15", seeds=(0, 1, 2))))
    assert code == 0, err[-4000:] + cluster.worker_log("w1")
    assert "## sweep: 6 of 6 jobs finished" in out and "±" in out
    assert cluster.pool.stats("qtrain")["done"] == 6
    assert sorted(status for _, status, _ in runs_of(cluster)) == ["FINISHED"] * 6
    workers = {t.worker.split("@")[0] for t in cluster.pool.list("qtrain") if t.worker}
    assert workers == {"w1", "w2"}  # both workers took part
    _one_finished_run_per_task(cluster)

    code, out, err = finish(cluster.qtrain(*sweep_args("model.num_leaves=7,15", seeds=(0, 1, 2))))
    assert code == 0, err[-3000:]
    assert "submitted 6 task(s) to pool qtrain (6 already done)" in out and "6 of 6 jobs finished" in out
    assert len(runs_of(cluster)) == 6  # nothing ran again


@pytest.mark.parametrize("victim", ["child", "main"])
def test_a_killed_worker_task_is_released_and_completes_once_on_the_other(
    cluster_factory: MakeCluster, victim: str
) -> None:
    cluster = cluster_factory(5 if victim == "child" else 7)
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    # a torch model that checkpoints every epoch: the retry must resume, not start over
    proc = cluster.qtrain(*sweep_args("model=mlp", "dataset=alpha158_nn", "model.n_epochs=12", "model.early_stop=12",
                                      "model.device=cpu", "model.batch_size=32", lgbm=False))  # fmt: skip
    pool = cluster.pool

    def training_epochs() -> bool:
        tasks = pool.list("qtrain", ["running"])
        if not tasks or not tasks[0].run_id:
            return False
        history = cluster.manager.get_recorder(tasks[0].run_id).get_metric_history("train.loss")
        return len(history) >= 2

    wait_for(training_epochs, 240, "the first attempt to train two epochs", client=proc, poll=0.05)
    (task,) = pool.list("qtrain", ["running"])
    assert task.worker
    victim_worker = task.worker.split("@")[0]
    survivor = "w2" if victim_worker == "w1" else "w1"
    if victim == "child":
        (child,) = cluster.children(victim_worker)
        os.kill(child, signal.SIGKILL)
    else:
        os.kill(cluster.workers[victim_worker].pid, signal.SIGKILL)  # the main process, then its orphaned child
        os.killpg(cluster.workers[victim_worker].pid, signal.SIGKILL)
    code, _, err = finish(proc, timeout=400)
    assert code == 0, err[-4000:] + cluster.worker_log(survivor)
    done = pool.get(task.id)
    assert done.status == "done" and done.attempts == 2 and done.worker
    if victim == "main":  # a killed child is replaced, so its worker may take the retry too
        assert done.worker.startswith(f"{survivor}@")
    _one_finished_run_per_task(cluster)
    killed_run = task.run_id
    assert cluster.manager.get_recorder(killed_run).status in ("KILLED", "FAILED")
    final_run = done.result["run_id"] if done.result else ""
    steps = [p.step for p in cluster.manager.get_recorder(final_run).get_metric_history("train.loss")]
    assert steps and steps[0] >= 2 and steps[-1] == 11, steps  # resumed from the last checkpoint, not epoch 0


def test_a_task_that_always_fails_ends_failed_after_its_attempts(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(9)
    cluster.start_worker("w1")
    # accepted by the config checks, refused by LightGBM when training starts
    code, out, err = finish(cluster.qtrain(*sweep_args("+model.min_data_in_leaf=-5", "hydra.launcher.max_attempts=2")))
    assert code == 1, err[-3000:]
    (task,) = cluster.pool.list("qtrain")
    assert task.status == "failed" and task.attempts == 2 and "min_data_in_leaf" in (task.error or "")
    assert "0 of 1 jobs finished" in out and "### failed jobs" in out
    assert [status for _, status, _ in runs_of(cluster)] == ["FAILED", "FAILED"]


def test_the_broker_losing_its_queue_mid_sweep_is_recovered(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(11)
    cluster.start_worker("w1")
    proc = cluster.qtrain(*sweep_args(seeds=(0, 1, 2, 3)))

    def first_running_all_submitted() -> bool:
        stats = cluster.pool.stats("qtrain")
        return stats["running"] == 1 and sum(stats.values()) == 4

    wait_for(first_running_all_submitted, 120, "the first task to start with all four submitted", client=proc)
    assert cluster.redis().llen("cpu") >= 1  # the other tasks' messages wait in Redis ...
    cluster.redis().flushdb()  # ... and are lost
    code, out, err = finish(proc, timeout=400)
    assert code == 0, err[-4000:] + cluster.worker_log("w1")
    assert cluster.pool.stats("qtrain")["done"] == 4 and "4 of 4 jobs finished" in out
    assert sorted(status for _, status, _ in runs_of(cluster)) == ["FINISHED"] * 4
    _one_finished_run_per_task(cluster)
