"""The pool's state machine around the broker, in milliseconds: a SQLite task store in a temp dir and the
in-memory broker stand in for MongoDB/PostgreSQL and Redis (the real ones run in tests/integration)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.taskpool import SQLiteTaskPool
from app.taskpool.base import TaskPool
from app.workflow.memory_broker import MemoryBroker
from app.workflow.pool_worker import fail_unready
from app.workflow.spec import TaskSpec
from app.workflow.trainer_rm import PoolWaitTimeout, TrainerRM, reconcile, send


@pytest.fixture
def pool(tmp_path: Path) -> TaskPool:
    return SQLiteTaskPool(tmp_path / "tasks.db")


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


def _trainer(pool: TaskPool, broker: MemoryBroker, **options: Any) -> TrainerRM:
    def build(spec: TaskSpec) -> Any:  # what submit reads of the components: the model's queue
        return SimpleNamespace(model=SimpleNamespace(queue=str(spec.body.get("queue", "cpu"))))

    return TrainerRM(None, build, experiment_name="exp", pool=pool, broker=broker, **options)  # type: ignore[arg-type]


def _spec(seed: int, **extra: Any) -> TaskSpec:
    return TaskSpec.from_mapping({"seed": seed, **extra})


def test_submit_stores_each_spec_once_and_sends_one_message_to_its_queue(pool: TaskPool, broker: MemoryBroker) -> None:
    trainer = _trainer(pool, broker, priority=3, max_attempts=2)
    tasks = trainer.submit([_spec(0), _spec(1, queue="gpu")])
    again = trainer.submit([_spec(0)])  # the same spec: the pool's task, no second message
    assert again[0].id == tasks[0].id
    assert [(m.task_id, m.queue) for m in broker.sent] == [(tasks[0].id, "cpu"), (tasks[1].id, "gpu")]
    stored = pool.get(tasks[1].id)
    assert (stored.status, stored.priority, stored.max_attempts, stored.dispatches) == ("waiting", 3, 2, 1)
    # without labels (trainer=celery, rolling windows) a task is told by its run name
    assert [pool.get(t.id).label for t in tasks] == [_spec(0).run_name, _spec(1, queue="gpu").run_name]
    labelled = trainer.submit([_spec(2)], labels=["lgbm seed=2"])
    assert pool.get(labelled[0].id).label == "lgbm seed=2"


def test_reconcile_resends_only_messages_that_are_gone(pool: TaskPool, broker: MemoryBroker) -> None:
    task, _ = pool.submit("exp", {"seed": 0}, "h0")
    assert reconcile(pool, "exp", broker).dispatched == 1  # stored without a message (an interrupted submission)
    assert reconcile(pool, "exp", broker, grace_s=0).dispatched == 0  # its message waits in the queue: live
    assert broker.take("cpu") is not None  # a worker took it: reserved behind another task, not yet claimed
    assert reconcile(pool, "exp", broker, grace_s=0).dispatched == 0  # held by a live worker: live
    assert broker.holder_died() == 1  # the worker was killed before claiming
    assert reconcile(pool, "exp", broker).dispatched == 0  # sent moments ago: still counted live (grace)
    assert reconcile(pool, "exp", broker, grace_s=0).dispatched == 1  # gone: a new one
    assert broker.lose() == 1  # the broker restarted without persistence
    assert reconcile(pool, "exp", broker, grace_s=0).dispatched == 1
    assert [m.message_id for m in broker.sent] == [f"{task.id}.1", f"{task.id}.2", f"{task.id}.3"]


def test_an_expired_lease_returns_the_task_ends_its_run_and_sends_a_message(
    pool: TaskPool, broker: MemoryBroker
) -> None:
    task, _ = pool.submit("exp", {"seed": 0}, "h0", max_attempts=2)
    for attempt in (1, 2):
        claimed = pool.claim("exp", f"w{attempt}", lease_s=0.01)
        assert claimed is not None and claimed.attempts == attempt
        assert pool.set_run(task.id, claimed.token or "", f"run-{attempt}")
        time.sleep(0.05)  # the worker died: no heartbeat
        ended: list[str] = []
        report = reconcile(pool, "exp", broker, end_run=ended.append, grace_s=0)
        assert ended == [f"run-{attempt}"] and report.expired == 1
        assert report.dispatched == (1 if attempt == 1 else 0)  # out of attempts: failed, no message
        assert not pool.heartbeat(task.id, claimed.token or "")  # the dead attempt's token is stale
    final = pool.get(task.id)
    assert final.status == "failed" and final.error and "lease expired" in final.error


def test_a_worker_that_cannot_set_up_fails_attempts_until_the_task_fails(pool: TaskPool, broker: MemoryBroker) -> None:
    task, _ = pool.submit("exp", {"seed": 0}, "h0", max_attempts=3)
    redispatch = lambda t: send(pool, broker, t)  # noqa: E731
    outcomes = [
        fail_unready(pool, "exp", "w1", "MLFLOW_TRACKING_URI is broken", task_id=task.id, redispatch=redispatch)
        for _ in range(3)
    ]
    assert [o.action for o in outcomes] == ["retrying", "retrying", "failed"]
    assert len(broker.sent) == 2  # a message for each retry, none after the last attempt
    final = pool.get(task.id)
    assert (final.status, final.attempts, final.error) == ("failed", 3, "MLFLOW_TRACKING_URI is broken")
    late = fail_unready(pool, "exp", "w1", "still broken", task_id=task.id, redispatch=redispatch)
    assert late.action == "skipped" and pool.get(task.id).attempts == 3  # a stale message changes nothing


def test_wait_returns_results_in_task_order_and_resends_lost_messages(pool: TaskPool, broker: MemoryBroker) -> None:
    trainer = _trainer(pool, broker, poll_s=0.01, timeout_s=30)
    tasks = trainer.submit([_spec(0), _spec(1)])
    broker.lose()  # both messages gone before any worker took them

    def worker() -> None:  # serves whatever message comes, as a Celery worker would
        served = 0
        while served < 2:
            message = broker.take("cpu")
            if message is None:
                time.sleep(0.005)
                continue
            claimed = pool.claim("exp", "w1", task_id=message.task_id)
            if claimed is not None:
                pool.finish(claimed.id, claimed.token or "", {"run_id": f"run-{claimed.id}", "metrics": {"IC": 0.1}})
                served += 1
            broker.ack(message)

    thread = threading.Thread(target=worker)
    thread.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("app.workflow.trainer_rm.DISPATCH_GRACE_S", 0.0)
        results = trainer.wait([t.id for t in reversed(tasks)])
    thread.join(5)
    assert [r.run_id for r in results] == [f"run-{tasks[1].id}", f"run-{tasks[0].id}"]
    assert all(r.metrics == {"IC": 0.1} and r.error is None for r in results)
    # each task's lost message was sent again by the waiting client's reconcile, once: even with no grace, one the
    # worker holds (taken, not yet claimed) is live
    assert [m.message_id for m in broker.sent[2:]] == [f"{t.id}.2" for t in tasks]
    assert [pool.get(t.id).attempts for t in tasks] == [1, 1]  # nothing ran twice


def test_wait_gives_up_after_its_timeout_and_the_tasks_stay(pool: TaskPool, broker: MemoryBroker) -> None:
    trainer = _trainer(pool, broker, poll_s=0.01, timeout_s=0.05)
    (task,) = trainer.submit([_spec(0)])
    with pytest.raises(PoolWaitTimeout, match="1 of 1 tasks of pool exp are still pending"):
        trainer.wait([task.id])
    assert pool.get(task.id).status == "waiting"


def test_every_trainer_is_built_and_run_the_same_way(pool: TaskPool, broker: MemoryBroker, tmp_path: Path) -> None:
    from app.workflow.trainer import DelayTrainerR, RunSettings, TrainerR

    class Services:  # what app.runtime.Runtime hands a trainer
        feature_cache = None
        lease_s, checkpoint_dir = 7.0, tmp_path / "checkpoints"

        def __init__(self) -> None:
            self.pool, self.broker = pool, broker

        def tracking(self, *, background: bool = False) -> Any:
            return "manager"

    run = RunSettings(draw_plots_later=True, limits={"time_limit_s": 30.0})
    local = TrainerR.from_services(Services(), print, experiment_name="exp", run=run, fail_fast=True)  # type: ignore[arg-type]
    assert (local.manager, local.draw_plots_later, local.fail_fast) == ("manager", True, True)
    delayed = DelayTrainerR.from_services(Services(), print, experiment_name="exp", end=False)  # type: ignore[arg-type]
    assert delayed.delayed and not delayed.end
    pooled = TrainerRM.from_services(
        Services(), _trainer(pool, broker).build, experiment_name="exp", run=run, wait=False
    )
    assert (pooled.pool, pooled.broker, pooled.lease_s, pooled.limits) == (pool, broker, 7.0, {"time_limit_s": 30.0})
    outcome = pooled.run([_spec(0), _spec(1)])  # not waiting: submitted, and the caller is told how to follow
    assert outcome.pending == "submitted 2 task(s) to pool exp; follow with: qtrain pool status exp"
    assert [t.limits for t in pool.list("exp")] == [{"time_limit_s": 30.0}] * 2 and len(broker.sent) == 2
