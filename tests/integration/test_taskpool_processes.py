"""The SQL task stores (SQLite, PostgreSQL) under real concurrency: several processes claim from one pool (and
create a new store) at the same moment. Every task must be claimed exactly once and end done; concurrent submits
must dedupe."""

from __future__ import annotations

import multiprocessing
import queue
from pathlib import Path
from typing import Any

import pytest

from app.taskpool import SQLiteTaskPool, TaskPool

Store = tuple[str, str, str]  # (kind, path or URL, PostgreSQL schema)

pytestmark = pytest.mark.integration

WORKERS = 4
TASKS = 200


def _open(store: Store) -> TaskPool:
    kind, where, schema = store
    if kind == "sqlite":
        return SQLiteTaskPool(where)
    from app.taskpool.postgres import PostgresTaskPool

    return PostgresTaskPool(where, schema=schema)


def _claim_until_empty(store: Store, barrier: Any, results: Any, index: int) -> None:
    try:
        pool = _open(store)
        barrier.wait(timeout=60)
        claimed: list[str] = []
        while (task := pool.claim("sweep", f"worker-{index}", lease_s=30)) is not None:
            token = task.token or ""
            assert pool.heartbeat(task.id, token), task.id
            assert pool.set_run(task.id, token, f"run-{task.id}"), task.id
            assert pool.finish(task.id, token, {"run_id": f"run-{task.id}", "worker": index}), task.id
            claimed.append(task.id)
        pool.close()
        results.put((index, claimed, ""))
    except BaseException as exc:  # reported to the parent, which fails the test with it
        results.put((index, [], f"{type(exc).__name__}: {exc}"))


def _submit_all(store: Store, barrier: Any, results: Any, index: int) -> None:
    try:
        pool = _open(store)  # a store nobody has created yet
        barrier.wait(timeout=60)
        ids, created = [], []
        for i in range(50):
            task, new = pool.submit("shared", {"i": i}, f"h{i}")
            ids.append(task.id)
            if new:
                created.append(task.id)
        pool.close()
        results.put((index, [*ids, "|", *created], ""))
    except BaseException as exc:
        results.put((index, [], f"{type(exc).__name__}: {exc}"))


def _run(target: Any, store: Store) -> list[tuple[int, list[str], str]]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(store, barrier, results, i)) for i in range(WORKERS)]
    for p in procs:
        p.start()
    outcomes = []
    try:
        for _ in procs:
            outcomes.append(results.get(timeout=60))
    except queue.Empty:
        pytest.fail(f"only {len(outcomes)} of {WORKERS} processes reported: {outcomes}")
    finally:
        for p in procs:
            p.join(timeout=30)
    assert [(i, err) for i, _, err in outcomes if err] == []
    assert all(p.exitcode == 0 for p in procs)
    return outcomes


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A store nobody has created yet: a SQLite file in a new directory, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        return ("sqlite", str(tmp_path / "new" / "dir" / "tasks.db"), "")
    return ("postgresql", request.getfixturevalue("postgres_server"), request.getfixturevalue("postgres_schema"))


def test_every_task_is_claimed_exactly_once_across_processes(store: Store) -> None:
    pool = _open(store)
    ids = {pool.submit("sweep", {"seed": i}, f"seed-{i}", priority=i % 3)[0].id for i in range(TASKS)}
    outcomes = _run(_claim_until_empty, store)
    claimed = [task_id for _, got, _ in outcomes for task_id in got]
    assert len(claimed) == TASKS and set(claimed) == ids  # none twice, none missed
    assert sum(1 for _, got, _ in outcomes if got) >= 2  # the work really was shared
    assert pool.stats("sweep") == {
        "waiting": 0,
        "running": 0,
        "part_done": 0,
        "done": TASKS,
        "failed": 0,
        "cancelled": 0,
    }
    for task in pool.list("sweep"):
        assert task.attempts == 1 and len(task.history) == 1 and task.result is not None
        assert task.result["run_id"] == f"run-{task.id}" == task.run_id
    pool.close()


def test_concurrent_first_use_and_submits_dedupe(store: Store) -> None:
    outcomes = _run(_submit_all, store)
    per_process = [got[: got.index("|")] for _, got, _ in outcomes]
    created = [task_id for _, got, _ in outcomes for task_id in got[got.index("|") + 1 :]]
    assert all(got == per_process[0] for got in per_process)  # every process got the same 50 tasks
    assert sorted(created) == sorted(per_process[0])  # and each was created by exactly one of them
    pool = _open(store)
    assert len(pool.list("shared")) == 50 and {t.id for t in pool.list("shared")} == set(per_process[0])
    pool.close()
