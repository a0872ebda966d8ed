"""Detached sweeps, worker-only mode (`qtrain pool work`), stale broker messages, DelayTrainerRM and the pool
commands, on the real Redis."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from app.broker import CeleryBroker
from app.celery import make_app
from app.config import build_components, conf_dir, task_spec_from_config
from app.settings import load_settings
from app.workflow.trainer_rm import DelayTrainerRM
from tests.integration.celery_harness import QUICK_LGBM, SEGMENTS, Cluster, finish, runs_of, sweep_args, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MakeCluster = Callable[..., Cluster]


def _cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    code, out, err = finish(cluster.qtrain(*args))
    return subprocess.CompletedProcess(args, code, out, err)


def test_detached_sweep_is_finished_by_pool_work_and_stale_messages_do_nothing(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(3)
    out = _cli(cluster, *sweep_args("hydra.launcher.detach=true", seeds=(0, 1)))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "detached; follow with: qtrain pool status qtrain" in out.stdout
    assert "0 of 2 jobs finished" in out.stdout and "submitted, not finished yet" in out.stdout
    assert cluster.pool.stats("qtrain")["waiting"] == 2 and cluster.redis().llen("cpu") == 2

    status = _cli(cluster, "pool", "status", "qtrain")
    assert status.returncode == 0 and "qtrain" in status.stdout and "waiting" in status.stdout

    work = _cli(cluster, "pool", "work", "qtrain")  # a worker without Celery
    assert work.returncode == 0, work.stderr[-3000:]
    assert work.stdout.count(": trained (done)") == 2
    assert cluster.pool.stats("qtrain")["done"] == 2
    assert sorted(s for _, s, _ in runs_of(cluster)) == ["FINISHED", "FINISHED"]

    cluster.start_worker("w1")  # it takes the two messages still queued: both tasks are done, nothing runs
    wait_for(lambda: cluster.redis().llen("cpu") == 0, 60, "the stale messages to be consumed")
    wait_for(lambda: cluster.worker_log("w1").count("succeeded") >= 2, 60, "the worker to ack them")
    assert cluster.worker_log("w1").count("'action': 'skipped'") == 2
    assert len(runs_of(cluster)) == 2

    listing = _cli(cluster, "pool", "list", "qtrain", "--status", "done")
    assert listing.returncode == 0 and listing.stdout.count("done") >= 2
    refused = _cli(cluster, "pool", "purge", "qtrain")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    purged = _cli(cluster, "pool", "purge", "qtrain", "--yes")
    assert purged.returncode == 0 and "deleted 2 task(s)" in purged.stdout
    assert cluster.pool.stats("qtrain")["done"] == 0


def test_delay_trainer_rm_begins_every_task_then_ends_them(cluster_factory: MakeCluster, market: Path) -> None:
    cluster = cluster_factory(5)
    settings = load_settings(cluster.env, cluster.work)
    overrides = ["data=import", f"data.store.root={market}", "data.market=synth", SEGMENTS, *QUICK_LGBM]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        specs = [task_spec_from_config(compose("config", overrides=[*overrides, f"seed={s}"])) for s in (0, 1)]
    trainer = DelayTrainerRM(
        cluster.manager, build_components, experiment_name="delayed", pool=cluster.pool,
        broker=CeleryBroker(make_app(settings)), pool_name="delayed", work_locally=True, poll_s=0.2,
    )  # fmt: skip
    begun = trainer.train(specs)
    assert [t.status for t in cluster.pool.list("delayed")] == ["part_done", "part_done"]
    assert sorted(s for _, s, _ in runs_of(cluster, "delayed")) == ["SCHEDULED", "SCHEDULED"]
    ended = trainer.end_train(begun)
    assert [r.run_id for r in ended] == [r.run_id for r in begun]  # fitted in the runs begun for them
    assert all(r.error is None and "Rank IC" in r.metrics for r in ended)
    assert cluster.pool.stats("delayed")["done"] == 2
    assert sorted(s for _, s, _ in runs_of(cluster, "delayed")) == ["FINISHED", "FINISHED"]


def test_workers_reconcile_a_detached_sweep_whose_messages_were_lost(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(7, lease_s=3.0)
    out = _cli(cluster, *sweep_args("hydra.launcher.detach=true", seeds=(0, 1)))
    assert out.returncode == 0, out.stderr[-3000:]
    cluster.redis().flushdb()  # the broker loses both messages; no client is waiting to notice
    cluster.start_worker("w1")
    wait_for(lambda: cluster.pool.stats("qtrain")["done"] == 2, 180, "the worker's reconciler to recover both")
    assert "has no live message: sending one" in cluster.worker_log("w1")
    assert sorted(s for _, s, _ in runs_of(cluster)) == ["FINISHED", "FINISHED"]
