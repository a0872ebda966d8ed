"""A message a live worker holds (taken from the queue, reserved behind the task it runs) is live: the waiting
client sends no second one, so each task of a sweep has exactly one message (and Flower one task)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from app.config.compose import build_components, conf_dir, task_spec_from_config
from app.core.settings import load_settings
from app.distributed.broker import CeleryBroker
from app.distributed.celery_config import make_app
from app.workflow.trainer_rm import TrainerRM
from tests.integration.celery_harness import Cluster
from tests.small_specs import QUICK_LGBM, SEGMENTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_message_reserved_by_a_live_worker_is_not_sent_again(
    cluster_factory: Callable[..., Cluster], market: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = cluster_factory(3)
    # one pool child that takes two messages: the second waits, reserved, while the first trains
    cluster.start_worker("w1", args=["--prefetch-multiplier", "2"])
    overrides = ["data=import", f"data.store.root={market}", "data.market=synth", SEGMENTS, *QUICK_LGBM]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        specs = [task_spec_from_config(compose("config", overrides=[*overrides, f"seed={s}"])) for s in (0, 1)]
    celery = make_app(load_settings(cluster.env, cluster.work))
    trainer = TrainerRM(
        cluster.manager, build_components, experiment_name="held", pool=cluster.pool,
        broker=CeleryBroker(celery), pool_name="held", poll_s=0.2, timeout_s=300,
    )  # fmt: skip
    monkeypatch.setattr("app.workflow.trainer_rm.DISPATCH_GRACE_S", 0.0)  # no grace: only the broker says "live"
    try:
        results = trainer.train(specs)
    finally:
        celery.close()
    assert all(r.error is None and "Rank IC" in r.metrics for r in results)

    tasks = cluster.pool.list("held")
    assert [(t.status, t.dispatches, t.attempts) for t in tasks] == [("done", 1, 1)] * 2
    log = (cluster.work / "worker-w1.log").read_text(errors="replace")
    first, second = (f"[{t.id}.1]" for t in tasks)
    # the worker held the second message while the first task ran (else this test proves nothing)
    assert log.index(f"{second} received") < log.index(f"{first} succeeded")
    assert "'action': 'skipped'" not in log and ".2]" not in log
    results_db = cluster.redis().connection_pool.connection_kwargs["db"] + 1
    backend = type(cluster.redis()).from_url(f"{cluster.redis_url}/{results_db}")
    assert sorted(k.decode() for k in backend.keys("celery-task-meta-*")) == sorted(
        f"celery-task-meta-{t.id}.1" for t in tasks
    )  # one Celery task per pool task, as Flower counts them
