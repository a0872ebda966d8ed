"""Detached sweeps, worker-only mode (`qtrain pool work`), stale broker messages, DelayTrainerRM and the pool
commands, on the real Redis."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from app.config.compose import build_components, conf_dir, task_limits, task_spec_from_config
from app.core.settings import load_settings
from app.distributed.broker import CeleryBroker
from app.distributed.celery_config import make_app
from app.workflow.trainer_rm import DelayTrainerRM
from tests.integration.celery_harness import Cluster, finish, runs_of, sweep_args, wait_for
from tests.small_specs import QUICK_LGBM, SEGMENTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MakeCluster = Callable[..., Cluster]


def _cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    code, out, err = finish(cluster.qtrain(*args))
    return subprocess.CompletedProcess(args, code, out, err)


def test_detached_sweeps_pool_work_stale_and_lost_messages(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(3, lease_s=3.0)
    out = _cli(cluster, *sweep_args("hydra.launcher.detach=true", seeds=(0, 1)))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "detached; follow with: qtrain pool status qtrain" in out.stdout
    assert "0 of 2 jobs finished" in out.stdout and "submitted, not finished yet" in out.stdout
    assert cluster.pool.stats("qtrain")["waiting"] == 2 and cluster.redis().llen("cpu") == 2
    assert sorted(t.label for t in cluster.pool.list("qtrain")) == ["lgbm seed=0", "lgbm seed=1"]  # the launcher's

    status = _cli(cluster, "pool", "status", "qtrain")
    assert status.returncode == 0 and "qtrain" in status.stdout and "waiting" in status.stdout
    work = _cli(cluster, "pool", "work", "qtrain")  # a worker without Celery trains both
    assert work.returncode == 0, work.stderr[-3000:]
    assert work.stdout.count(": trained (done)") == 2 and cluster.pool.stats("qtrain")["done"] == 2

    # two more tasks, submitted by trainer=celery (a local sweep whose jobs each submit one task), whose messages
    # the broker loses, beside the two stale messages of the done tasks
    out = _cli(cluster, "run", "-m", SEGMENTS, *QUICK_LGBM, "seed=2,3", "trainer=celery", "trainer.wait=false")
    assert out.returncode == 0, out.stderr[-3000:]
    said = [line for line in out.stdout.splitlines() if line.startswith("submitted 1 task(s) to pool qtrain")]
    assert len(said) == 2 and cluster.pool.stats("qtrain")["waiting"] == 2  # once per job (the summary repeats it)
    lost = {t.id for t in cluster.pool.list("qtrain", ["waiting"])}
    for raw in cluster.redis().lrange("cpu", 0, -1):
        if json.loads(raw)["headers"]["id"].split(".")[0] in lost:
            cluster.redis().lrem("cpu", 1, raw)
    assert cluster.redis().llen("cpu") == 2

    cluster.start_worker("w1")  # acks the stale messages without work; its reconciler re-sends the lost ones
    wait_for(lambda: cluster.pool.stats("qtrain")["done"] == 4, 180, "the worker to recover the lost tasks")
    log = (cluster.work / "worker-w1.log").read_text(errors="replace")  # whole log: the counts span all of it
    assert log.count("'action': 'skipped'") == 2 and "has no live message: sending one" in log
    assert sorted(s for _, s, _ in runs_of(cluster)) == ["FINISHED"] * 4

    listing = _cli(cluster, "pool", "list", "qtrain", "--status", "done")
    assert listing.returncode == 0 and listing.stdout.count("done") >= 4
    assert "lgbm seed=0" in listing.stdout and "lgbm seed=1" in listing.stdout
    refused = _cli(cluster, "pool", "purge", "qtrain")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    purged = _cli(cluster, "pool", "purge", "qtrain", "--yes")
    assert purged.returncode == 0 and "deleted 4 task(s)" in purged.stdout


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


def test_a_cuda_model_is_routed_to_the_gpu_queue(cluster_factory: MakeCluster, market: Path) -> None:
    cluster = cluster_factory(9)
    settings = load_settings(cluster.env, cluster.work)
    base = ["data=import", f"data.store.root={market}", "data.market=synth", SEGMENTS]
    limits = ["limits.soft_time_limit_s=600", "limits.time_limit_s=900"]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        gpu_cfg = compose("config", overrides=[*base, "experiment=mlp_alpha158", "model.device=cuda", *limits])
        gpu, gpu_limits = task_spec_from_config(gpu_cfg), task_limits(gpu_cfg)
        cpu = task_spec_from_config(compose("config", overrides=[*base, *QUICK_LGBM]))
    trainer = DelayTrainerRM(
        cluster.manager, build_components, experiment_name="routing", pool=cluster.pool,
        broker=CeleryBroker(make_app(settings)), pool_name="routing", wait=False,
    )  # fmt: skip
    trainer.submit([gpu], limits=gpu_limits)  # submitted only: no worker, no GPU needed
    trainer.submit([cpu])
    assert [t.queue for t in cluster.pool.list("routing")] == ["gpu", "cpu"]
    assert cluster.redis().llen("gpu") == 1 and cluster.redis().llen("cpu") == 1
    headers = [json.loads(cluster.redis().lrange(q, 0, 0)[0])["headers"] for q in ("gpu", "cpu")]
    assert headers[0]["timelimit"] == [900, 600] and headers[1]["timelimit"] == [None, None]  # from the pool task
    assert "limits" not in gpu.body and cluster.pool.list("routing")[0].limits == {
        "soft_time_limit_s": 600.0,
        "time_limit_s": 900.0,
    }
    assert headers[0]["task"] == "qtrain.train" and headers[0]["argsrepr"].startswith("['routing'")
