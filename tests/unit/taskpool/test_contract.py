"""The task-pool contract (app/taskpool/base.py), run against every store: SQLite, mongomock, real MongoDB.

Each test gets an empty store from the ``pool`` fixture (tests/unit/taskpool/conftest.py). Leases are short
(LEASE seconds) and waited out with sleep, so the whole suite stays within a few seconds per store.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.core.errors import ConfigError, TaskNotFoundError, TaskPoolError
from app.taskpool import STATUSES, TaskPool, TaskRecord

LEASE = 0.2
POOL = "csi300_lgbm"


def submit(pool: TaskPool, name: str, pool_name: str = POOL, **kwargs: Any) -> TaskRecord:
    task, created = pool.submit(pool_name, {"model": name, "seed": 7}, f"hash-{name}", **kwargs)
    assert created
    return task


def claim(pool: TaskPool, worker: str = "w1", **kwargs: Any) -> TaskRecord:
    task = pool.claim(POOL, worker, lease_s=kwargs.pop("lease_s", 30.0), **kwargs)
    assert task is not None
    assert task.token is not None
    return task


def expire(pool: TaskPool) -> list[TaskRecord]:
    time.sleep(LEASE + 0.05)
    return pool.expire_leases(POOL)


def assert_aware(task: TaskRecord) -> None:
    for name in ("lease_expires", "dispatched_at", "created_at", "updated_at", "started_at", "finished_at"):
        value = getattr(task, name)
        assert value is None or (isinstance(value, datetime) and value.utcoffset() == timedelta(0)), name
    for entry in task.history:
        for key in ("started_at", "ended_at"):
            assert datetime.fromisoformat(entry[key]).utcoffset() == timedelta(0)


# -- submit, get, find ---------------------------------------------------------------------------------------------


def test_submit_creates_a_waiting_task(pool: TaskPool) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    task, created = pool.submit(
        POOL, {"model": {"lr": 0.05, "layers": (2, 3)}}, "abc", queue="gpu", experiment="exp1", priority=5,
        max_attempts=4, delayed=True,
    )  # fmt: skip
    assert created
    assert (task.pool, task.hash, task.status, task.queue, task.experiment) == (POOL, "abc", "waiting", "gpu", "exp1")
    assert (task.priority, task.max_attempts, task.delayed, task.attempts, task.stage) == (5, 4, True, 0, "train")
    assert task.spec == {"model": {"lr": 0.05, "layers": [2, 3]}}  # stored as JSON: tuples come back as lists
    assert task.token is task.worker is task.lease_expires is task.result is task.error is task.run_id is None
    assert task.history == [] and task.dispatches == 0
    assert task.created_at is not None and before < task.created_at < datetime.now(UTC) + timedelta(seconds=1)
    assert_aware(task)
    assert pool.get(task.id) == task


def test_submit_dedupes_by_hash_within_a_pool(pool: TaskPool) -> None:
    first, created = pool.submit(POOL, {"a": 1}, "same", priority=1)
    again, created_again = pool.submit(POOL, {"a": 2}, "same", priority=9)
    assert created and not created_again
    assert again == first  # the existing task, untouched
    other, created_other = pool.submit("other_pool", {"a": 1}, "same")
    assert created_other and other.id != first.id and other.pool == "other_pool"
    assert len(pool.list(POOL)) == 1 and len(pool.list("other_pool")) == 1


def test_the_time_limits_are_stored_with_the_task_not_in_its_spec(pool: TaskPool) -> None:
    task, _ = pool.submit(POOL, {"a": 1}, "h1", limits={"soft_time_limit_s": 60, "time_limit_s": None})
    assert task.limits == {"soft_time_limit_s": 60.0} and task.spec == {"a": 1}
    assert pool.get(task.id).limits == {"soft_time_limit_s": 60.0}
    assert pool.submit(POOL, {"a": 2}, "h2")[0].limits == {}
    again, created = pool.submit(POOL, {"a": 1}, "h1", limits={"time_limit_s": 5})
    assert not created and again.limits == {"soft_time_limit_s": 60.0}  # the stored task is not changed
    for bad, message in [({"hard_s": 1}, "not a time limit"), ({"time_limit_s": 0}, "positive number"),
                         ({"time_limit_s": "9"}, "positive number")]:  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            pool.submit(POOL, {"a": 3}, "h3", limits=bad)
    assert pool.find(POOL, "h3") is None


def test_the_label_is_stored_on_one_line_and_is_not_the_tasks_identity(pool: TaskPool) -> None:
    task, _ = pool.submit(POOL, {"a": 1}, "h1", label="lgbm  seed=1\nmodel.lr=0.1")
    assert task.label == "lgbm seed=1 model.lr=0.1" == pool.get(task.id).label and task.spec == {"a": 1}
    again, created = pool.submit(POOL, {"a": 1}, "h1", label="other")
    assert not created and again.label == "lgbm seed=1 model.lr=0.1"
    assert pool.submit(POOL, {"a": 2}, "h2")[0].label == ""
    assert len(pool.submit(POOL, {"a": 3}, "h3", label="x" * 500)[0].label) == 200
    with pytest.raises(ConfigError, match="label must be a string"):
        pool.submit(POOL, {"a": 4}, "h4", label=7)  # type: ignore[arg-type]
    assert pool.find(POOL, "h4") is None


def test_cancel_ends_waiting_and_running_tasks_and_requeue_brings_them_back(pool: TaskPool) -> None:
    waiting, _ = pool.submit(POOL, {"a": 1}, "h1")
    running, _ = pool.submit(POOL, {"a": 2}, "h2")
    done, _ = pool.submit(POOL, {"a": 3}, "h3")
    claimed = pool.claim(POOL, "w1", task_id=running.id)
    finished = pool.claim(POOL, "w1", task_id=done.id)
    assert claimed and finished and pool.finish(done.id, finished.token or "", {"run_id": "r"})
    assert pool.cancel([waiting.id, running.id, done.id]) == 2  # a done task stays done
    assert [pool.get(t.id).status for t in (waiting, running, done)] == ["cancelled", "cancelled", "done"]
    assert not pool.heartbeat(running.id, claimed.token or "")  # the running attempt is told to stop
    assert not pool.finish(running.id, claimed.token or "", {"run_id": "late"})  # and cannot finish
    gone = pool.get(running.id)
    assert gone.error == "cancelled (qtrain pool cancel)" and gone.finished_at is not None and gone.token is None
    assert gone.history[-1]["outcome"] == "cancelled" and gone.history[-1]["status"] == "cancelled"
    assert pool.claim(POOL, "w2") is None  # cancelled tasks are never claimed
    assert pool.stats(POOL)["cancelled"] == 2 and pool.cancel([waiting.id]) == 0
    with pytest.raises(TaskNotFoundError):
        pool.cancel([waiting.id, "nope"])
    assert pool.requeue([waiting.id, running.id]) == 2
    assert [pool.get(t.id).status for t in (waiting, running)] == ["waiting", "waiting"]


def test_a_heartbeat_carries_the_attempts_progress_and_a_claim_clears_it(pool: TaskPool) -> None:
    task, _ = pool.submit(POOL, {"a": 1}, "h1", max_attempts=2)
    claimed = pool.claim(POOL, "w1", lease_s=0.05)
    assert claimed is not None and claimed.progress == {}
    report = {"stage": "fit", "step": "LightGBMModel", "done": 120, "total": 1000, "unit": "rounds", "note": "l2 0.9"}
    assert pool.heartbeat(task.id, claimed.token or "", lease_s=0.05, progress=report)
    assert pool.get(task.id).progress == report
    assert pool.heartbeat(task.id, claimed.token or "", lease_s=0.05)  # a beat without a report keeps the last one
    assert pool.get(task.id).progress == report
    with pytest.raises(ConfigError):
        pool.heartbeat(task.id, claimed.token or "", progress={"done": object()})
    time.sleep(0.1)
    pool.expire_leases(POOL)
    again = pool.claim(POOL, "w2")
    assert again is not None and again.progress == {}  # the new attempt starts with none


def test_get_unknown_task_raises_a_named_key_error(pool: TaskPool) -> None:
    with pytest.raises(TaskNotFoundError, match="'nope'") as info:
        pool.get("nope")
    assert isinstance(info.value, KeyError)
    assert str(info.value).startswith("no task 'nope'")


def test_find_by_hash(pool: TaskPool) -> None:
    task = submit(pool, "a")
    assert pool.find(POOL, "hash-a") == task
    assert pool.find(POOL, "hash-b") is None
    assert pool.find("other", "hash-a") is None


# -- claim ---------------------------------------------------------------------------------------------------------


def test_claim_takes_highest_priority_then_oldest(pool: TaskPool) -> None:
    low = submit(pool, "low", priority=0)
    high_old = submit(pool, "high_old", priority=5)
    high_new = submit(pool, "high_new", priority=5)
    negative = submit(pool, "negative", priority=-3)
    low_new = submit(pool, "low_new", priority=0)
    order = [claim(pool).id for _ in range(5)]
    assert order == [high_old.id, high_new.id, low.id, low_new.id, negative.id]
    assert pool.claim(POOL, "w1") is None


def test_claim_marks_the_task_running_under_a_new_token(pool: TaskPool) -> None:
    submitted = submit(pool, "a")
    start = datetime.now(UTC)
    task = claim(pool, "worker-7", lease_s=10)
    assert task.id == submitted.id
    assert (task.status, task.worker, task.attempts, task.stage) == ("running", "worker-7", 1, "train")
    assert task.lease_expires is not None and task.started_at is not None
    assert timedelta(seconds=9) < task.lease_expires - start < timedelta(seconds=11)
    assert_aware(task)
    assert pool.get(task.id) == task


def test_claim_only_looks_in_its_own_pool(pool: TaskPool) -> None:
    submit(pool, "a", pool_name="elsewhere")
    assert pool.claim(POOL, "w1") is None
    assert pool.claim("elsewhere", "w1") is not None


def test_claim_by_id(pool: TaskPool) -> None:
    submit(pool, "first", priority=9)
    wanted = submit(pool, "wanted")
    task = claim(pool, task_id=wanted.id)
    assert task.id == wanted.id
    assert pool.claim(POOL, "w2", task_id=wanted.id) is None  # running now: not claimable again
    assert pool.claim(POOL, "w2", task_id="missing") is None
    assert pool.claim("other_pool", "w2", task_id=submit(pool, "x").id) is None  # wrong pool


def test_claim_stage_end_takes_part_done_tasks_only(pool: TaskPool) -> None:
    submit(pool, "plain", delayed=True)
    assert pool.claim(POOL, "w1", stage="end") is None  # waiting is not part_done
    trained = claim(pool)
    assert pool.part_done(trained.id, trained.token or "", "run-1")
    submit(pool, "second", delayed=True)
    end = pool.claim(POOL, "w2", stage="end")
    assert end is not None and end.id == trained.id and end.stage == "end" and end.run_id == "run-1"
    assert pool.claim(POOL, "w3", stage="end") is None


# -- token checks --------------------------------------------------------------------------------------------------


def test_a_stale_token_can_do_nothing(pool: TaskPool) -> None:
    submit(pool, "a", delayed=True)
    old = claim(pool, "w-old", lease_s=LEASE)
    assert [t.id for t in expire(pool)] == [old.id]
    new = claim(pool, "w-new")
    assert new.id == old.id and new.token != old.token
    stale = old.token or ""
    assert not pool.heartbeat(old.id, stale)
    assert not pool.set_run(old.id, stale, "run-stale")
    assert not pool.finish(old.id, stale, {"run_id": "run-stale"})
    assert not pool.part_done(old.id, stale, "run-stale")
    assert pool.fail(old.id, stale, "boom") is None
    assert not pool.heartbeat(old.id, "never-issued")
    after = pool.get(old.id)
    assert (after.status, after.token, after.worker, after.run_id) == ("running", new.token, "w-new", None)
    assert pool.finish(new.id, new.token or "", {"run_id": "run-new"})


def test_heartbeat_extends_the_lease(pool: TaskPool) -> None:
    submit(pool, "a")
    task = claim(pool, lease_s=LEASE)
    for _ in range(3):
        time.sleep(LEASE / 2)
        assert pool.heartbeat(task.id, task.token or "", lease_s=LEASE)
    assert pool.expire_leases(POOL) == []
    renewed = pool.get(task.id)
    assert renewed.lease_expires is not None and task.lease_expires is not None
    assert renewed.lease_expires > task.lease_expires and renewed.status == "running"


def test_set_run_records_the_attempts_run(pool: TaskPool) -> None:
    submit(pool, "a")
    task = claim(pool)
    assert pool.set_run(task.id, task.token or "", "run-42")
    assert pool.get(task.id).run_id == "run-42"


# -- finish and fail -----------------------------------------------------------------------------------------------


def test_finish_stores_the_result_and_ends_the_attempt(pool: TaskPool) -> None:
    submit(pool, "a")
    task = claim(pool, "w9")
    pool.set_run(task.id, task.token or "", "run-1")
    result = {"run_id": "run-1", "metrics": {"ic": 0.05, "rank_ic": -0.01}}
    assert pool.finish(task.id, task.token or "", result)
    done = pool.get(task.id)
    assert (done.status, done.result, done.token, done.lease_expires, done.error) == ("done", result, None, None, None)
    assert done.finished_at is not None and done.worker == "w9"
    [entry] = done.history
    assert entry["outcome"] == "done" and entry["status"] == "done" and entry["attempt"] == 1
    assert entry["worker"] == "w9" and entry["run_id"] == "run-1" and entry["stage"] == "train"
    assert_aware(done)
    assert not pool.finish(task.id, task.token or "", result)  # once done, nothing more


def test_fail_retries_until_attempts_run_out(pool: TaskPool) -> None:
    submit(pool, "a", max_attempts=2)
    first = claim(pool)
    assert pool.fail(first.id, first.token or "", "CUDA out of memory") == "waiting"
    retried = pool.get(first.id)
    assert (retried.status, retried.error, retried.attempts, retried.token) == (
        "waiting",
        "CUDA out of memory",
        1,
        None,
    )
    second = claim(pool)
    assert second.attempts == 2
    assert pool.fail(second.id, second.token or "", "still out of memory") == "failed"
    failed = pool.get(first.id)
    assert (failed.status, failed.error, failed.attempts) == ("failed", "still out of memory", 2)
    assert failed.finished_at is not None
    assert [(h["attempt"], h["outcome"], h["status"], h["error"]) for h in failed.history] == [
        (1, "error", "waiting", "CUDA out of memory"),
        (2, "error", "failed", "still out of memory"),
    ]
    assert pool.claim(POOL, "w1") is None


def test_fail_without_retry_fails_at_once(pool: TaskPool) -> None:
    submit(pool, "a", max_attempts=5)
    task = claim(pool)
    assert pool.fail(task.id, task.token or "", "bad config", retry=False) == "failed"
    assert pool.get(task.id).status == "failed"


# -- leases --------------------------------------------------------------------------------------------------------


def test_expired_lease_goes_back_to_waiting_then_fails(pool: TaskPool) -> None:
    submit(pool, "a", max_attempts=2)
    claim(pool, "gpu-host-1", lease_s=LEASE)
    [back] = expire(pool)
    assert (back.status, back.attempts, back.token, back.lease_expires) == ("waiting", 1, None, None)
    assert back.error is not None and "lease expired" in back.error and "gpu-host-1" in back.error
    assert pool.get(back.id) == back
    claim(pool, "gpu-host-2", lease_s=LEASE)
    [failed] = expire(pool)
    assert failed.status == "failed" and failed.attempts == 2
    assert failed.error is not None and "lease expired" in failed.error and "gpu-host-2" in failed.error
    assert [(h["worker"], h["outcome"], h["status"]) for h in failed.history] == [
        ("gpu-host-1", "lease_expired", "waiting"),
        ("gpu-host-2", "lease_expired", "failed"),
    ]
    assert pool.expire_leases(POOL) == []


def test_expire_leases_leaves_live_leases_and_filters_by_pool(pool: TaskPool) -> None:
    submit(pool, "live")
    live = claim(pool, lease_s=30)
    submit(pool, "elsewhere", pool_name="other")
    other = pool.claim("other", "w1", lease_s=LEASE)
    assert other is not None
    assert expire(pool) == []  # only POOL, whose lease is live
    assert [t.id for t in pool.expire_leases()] == [other.id]  # every pool
    assert pool.get(live.id).status == "running"


# -- delayed tasks (train, then end) -------------------------------------------------------------------------------


def test_delayed_flow_train_part_done_end_done(pool: TaskPool) -> None:
    submitted = submit(pool, "a", delayed=True, max_attempts=2)
    train = claim(pool, "w-train")
    assert pool.set_run(train.id, train.token or "", "run-1")
    assert pool.part_done(train.id, train.token or "", "run-1")
    parked = pool.get(submitted.id)
    assert (parked.status, parked.stage, parked.run_id, parked.attempts, parked.token) == (
        "part_done", "end", "run-1", 0, None,
    )  # fmt: skip
    assert pool.claim(POOL, "w1") is None  # stage "train" does not take it
    end = claim(pool, "w-end", stage="end")
    assert (end.status, end.stage, end.attempts, end.run_id) == ("running", "end", 1, "run-1")
    assert pool.finish(end.id, end.token or "", {"run_id": "run-1", "metrics": {"ic": 0.1}})
    done = pool.get(submitted.id)
    assert done.status == "done" and done.result == {"run_id": "run-1", "metrics": {"ic": 0.1}}
    assert [(h["stage"], h["outcome"], h["status"], h["worker"]) for h in done.history] == [
        ("train", "part_done", "part_done", "w-train"),
        ("end", "done", "done", "w-end"),
    ]
    assert_aware(done)


def test_an_end_attempt_returns_to_part_done(pool: TaskPool) -> None:
    submit(pool, "a", delayed=True, max_attempts=2)
    train = claim(pool)
    pool.part_done(train.id, train.token or "", "run-1")
    end = claim(pool, "w-end", stage="end", lease_s=LEASE)
    [back] = expire(pool)
    assert (back.status, back.stage, back.run_id, back.attempts) == ("part_done", "end", "run-1", 1)
    end = claim(pool, "w-end", stage="end")
    assert pool.fail(end.id, end.token or "", "plot failed") == "failed"
    failed = pool.get(end.id)
    assert failed.status == "failed" and failed.run_id == "run-1" and failed.error == "plot failed"


def test_fail_of_an_end_attempt_with_attempts_left_returns_to_part_done(pool: TaskPool) -> None:
    submit(pool, "a", delayed=True)
    train = claim(pool)
    pool.part_done(train.id, train.token or "", "run-1")
    end = claim(pool, stage="end")
    assert pool.fail(end.id, end.token or "", "transient") == "part_done"
    assert pool.get(end.id).status == "part_done"


def test_part_done_is_only_for_the_train_stage_of_delayed_tasks(pool: TaskPool) -> None:
    submit(pool, "plain")
    task = claim(pool)
    with pytest.raises(TaskPoolError, match="not delayed"):
        pool.part_done(task.id, task.token or "", "run-1")
    assert pool.get(task.id).status == "running"
    submit(pool, "delayed", delayed=True)
    train = claim(pool)
    pool.part_done(train.id, train.token or "", "run-2")
    end = claim(pool, stage="end")
    with pytest.raises(TaskPoolError, match="'end' stage"):
        pool.part_done(end.id, end.token or "", "run-2")


# -- reset, requeue, purge -----------------------------------------------------------------------------------------


def test_reset_returns_running_and_failed_tasks_to_the_start(pool: TaskPool) -> None:
    waiting = submit(pool, "waiting")
    submit(pool, "running", priority=3)
    submit(pool, "failed", priority=2, max_attempts=1)
    submit(pool, "done", priority=1)
    running = claim(pool, "w-run")
    failing = claim(pool)
    pool.fail(failing.id, failing.token or "", "boom")
    finishing = claim(pool)
    pool.finish(finishing.id, finishing.token or "", {"run_id": "r"})
    assert pool.reset(POOL) == 2
    for task_id in (running.id, failing.id):
        task = pool.get(task_id)
        assert (task.status, task.attempts, task.token, task.lease_expires, task.error) == (
            "waiting",
            0,
            None,
            None,
            None,
        )
    assert pool.get(running.id).history[-1]["outcome"] == "reset"
    assert not pool.finish(running.id, running.token or "", {"run_id": "late"})  # its token died with the reset
    assert pool.get(finishing.id).status == "done"
    assert pool.get(waiting.id).status == "waiting"
    assert pool.reset(POOL, ["done"]) == 1
    redo = pool.get(finishing.id)
    assert (redo.status, redo.result, redo.finished_at) == ("waiting", None, None)


def test_reset_keeps_a_trained_delayed_task_at_part_done(pool: TaskPool) -> None:
    submit(pool, "a", delayed=True)
    train = claim(pool)
    pool.part_done(train.id, train.token or "", "run-1")
    claim(pool, stage="end")
    assert pool.reset(POOL, ("running",)) == 1
    task = pool.get(train.id)
    assert (task.status, task.stage, task.run_id, task.attempts) == ("part_done", "end", "run-1", 0)


def test_requeue_skips_live_leases_and_rejects_unknown_ids(pool: TaskPool) -> None:
    submit(pool, "done", priority=3)
    submit(pool, "live", priority=2)
    submit(pool, "stale", priority=1)
    done = claim(pool)
    pool.finish(done.id, done.token or "", {"run_id": "r"})
    live = claim(pool, lease_s=30)
    stale = claim(pool, lease_s=LEASE)
    time.sleep(LEASE + 0.05)
    with pytest.raises(TaskNotFoundError, match="'ghost'"):
        pool.requeue([done.id, "ghost"])
    assert pool.get(done.id).status == "done"  # nothing changed
    assert pool.requeue([done.id, live.id, stale.id]) == 2
    assert [pool.get(t.id).status for t in (done, live, stale)] == ["waiting", "running", "waiting"]
    assert pool.requeue([]) == 0


def test_purge_deletes_one_pool(pool: TaskPool) -> None:
    submit(pool, "a")
    submit(pool, "b")
    kept = submit(pool, "a", pool_name="keep")
    assert pool.purge(POOL) == 2
    assert pool.list(POOL) == [] and pool.pools() == ["keep"]
    assert pool.get(kept.id) == kept
    assert pool.purge(POOL) == 0


# -- listing -------------------------------------------------------------------------------------------------------


def test_list_stats_and_pools(pool: TaskPool) -> None:
    assert pool.pools() == [] and pool.stats(POOL) == dict.fromkeys(STATUSES, 0)
    names = ["t0", "t1", "t2", "t3"]
    tasks = [submit(pool, name, priority=i) for i, name in enumerate(names)]
    submit(pool, "z", pool_name="b_pool")
    first = claim(pool)  # t3, the highest priority
    pool.finish(first.id, first.token or "", {"run_id": "r"})
    claim(pool)  # t2 keeps running
    assert [t.id for t in pool.list(POOL)] == [t.id for t in tasks]  # oldest first
    assert [t.spec["model"] for t in pool.list(POOL, ["waiting"])] == ["t0", "t1"]
    assert [t.spec["model"] for t in pool.list(POOL, ("done", "running"))] == ["t2", "t3"]
    assert pool.stats(POOL) == {"waiting": 2, "running": 1, "part_done": 0, "done": 1, "failed": 0, "cancelled": 0}
    assert list(pool.stats(POOL)) == list(STATUSES)
    assert pool.pools() == ["b_pool", POOL]


def test_mark_dispatched_counts_broker_messages(pool: TaskPool) -> None:
    task = submit(pool, "a")
    pool.mark_dispatched(task.id)
    pool.mark_dispatched(task.id)
    after = pool.get(task.id)
    assert after.dispatches == 2 and after.dispatched_at is not None and after.status == "waiting"
    assert_aware(after)
    with pytest.raises(TaskNotFoundError, match="'nope'"):
        pool.mark_dispatched("nope")


# -- arguments -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "with space", "slash/name", "x" * 101, "ünïcode", "a$b"])
def test_bad_pool_names_are_refused(pool: TaskPool, name: str) -> None:
    with pytest.raises(ConfigError, match=r"A-Z a-z 0-9 _ \. -"):
        pool.submit(name, {}, "h")
    with pytest.raises(ConfigError, match="pool"):
        pool.claim(name, "w1")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"priority": 1.5}, "priority"),
        ({"priority": True}, "priority"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"queue": "gpu queue"}, "queue"),
        ({"experiment": ""}, "experiment"),
    ],
)
def test_bad_submit_arguments_are_refused(pool: TaskPool, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        pool.submit(POOL, {"a": 1}, "h", **kwargs)
    assert pool.list(POOL) == []


@pytest.mark.parametrize("spec", [{"lr": math.nan}, {"tags": {1, 2}}, {"obj": object()}])
def test_a_spec_that_is_not_json_is_refused(pool: TaskPool, spec: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="not JSON"):
        pool.submit(POOL, spec, "h")


def test_bad_claim_arguments_are_refused(pool: TaskPool) -> None:
    with pytest.raises(ConfigError, match="lease_s"):
        pool.claim(POOL, "w1", lease_s=0)
    with pytest.raises(ConfigError, match="stage"):
        pool.claim(POOL, "w1", stage="middle")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="worker"):
        pool.claim(POOL, "")
    with pytest.raises(ConfigError, match="unknown task status 'lost'"):
        pool.list(POOL, ["lost"])  # type: ignore[list-item]
