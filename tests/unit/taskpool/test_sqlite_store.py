"""What only the SQLite store promises: file and schema on first use, WAL, indexes, threads, fork-safe reopen."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from app.core.errors import TaskStoreError
from app.taskpool import SQLiteTaskPool
from app.taskpool.sqlite import SCHEMA_VERSION


def test_first_use_creates_directory_schema_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "tasks.db"
    pool = SQLiteTaskPool(path)
    assert not path.parent.exists()  # nothing happens before the first call
    assert pool.pools() == []
    assert path.exists()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {row[1]: row[2] for row in conn.execute("PRAGMA index_list(tasks)")}
        columns = {name: [r[2] for r in conn.execute(f"PRAGMA index_info({name})")] for name in indexes}
    assert indexes["tasks_pool_hash"] == 1  # unique
    assert columns["tasks_pool_hash"] == ["pool", "hash"]
    assert columns["tasks_claim"] == ["pool", "status", "priority", "created_ns"]
    assert columns["tasks_lease"] == ["status", "lease_expires"]
    pool.close()


def test_two_pools_on_one_file_share_tasks(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    a, b = SQLiteTaskPool(path), SQLiteTaskPool(str(path))
    task, _ = a.submit("p", {"x": 1}, "h")
    again, created = b.submit("p", {"x": 1}, "h")
    assert not created and again.id == task.id
    claimed = b.claim("p", "w")
    assert claimed is not None and a.get(task.id).status == "running"
    a.close()
    b.close()


def test_relative_path_is_resolved_when_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    pool = SQLiteTaskPool("state/tasks.db")
    assert pool.path == tmp_path / "state" / "tasks.db"


def test_close_then_use_again_reopens(tmp_path: Path) -> None:
    pool = SQLiteTaskPool(tmp_path / "tasks.db")
    task, _ = pool.submit("p", {}, "h")
    pool.close()
    pool.close()  # twice is fine
    assert pool.get(task.id).id == task.id
    pool.close()


def test_heartbeat_thread_and_main_thread_share_the_pool(tmp_path: Path) -> None:
    pool = SQLiteTaskPool(tmp_path / "tasks.db")
    pool.submit("p", {}, "h")
    task = pool.claim("p", "w", lease_s=0.3)
    assert task is not None and task.token is not None
    token = task.token
    stop = threading.Event()
    beats: list[bool] = []

    def beat() -> None:
        while not stop.wait(0.05):
            beats.append(pool.heartbeat(task.id, token, lease_s=0.3))

    thread = threading.Thread(target=beat)
    thread.start()
    try:
        for _ in range(10):  # the main thread keeps using the pool while the lease would have run out
            time.sleep(0.06)
            assert pool.expire_leases("p") == []
            pool.mark_dispatched(task.id)
        assert pool.finish(task.id, token, {"run_id": "r"})
    finally:
        stop.set()
        thread.join()
    assert beats and all(beats[:5])
    assert pool.get(task.id).status == "done"
    pool.close()


def test_a_store_of_schema_version_1_is_upgraded_in_place(tmp_path: Path) -> None:
    from app.taskpool.sqlite import _SCHEMA

    path = tmp_path / "tasks.db"
    version_1 = _SCHEMA.replace(
        ",\n    limits TEXT NOT NULL DEFAULT '{}',\n    progress TEXT NOT NULL DEFAULT '{}'"
        ",\n    label TEXT NOT NULL DEFAULT ''",
        "",
    )
    assert "limits" not in version_1 and "progress" not in version_1 and "label" not in version_1
    with sqlite3.connect(path) as conn:  # a store written by qtrain before the time limits moved onto the task
        conn.executescript(version_1)
        conn.execute(
            "INSERT INTO tasks (id, pool, hash, spec, status, queue, experiment, priority, max_attempts, delayed,"
            " created_ns, updated_at) VALUES ('t1', 'p', 'h', '{}', 'waiting', 'cpu', 'e', 0, 3, 0, 1, 0)"
        )
        conn.execute("PRAGMA user_version = 1")
    pool = SQLiteTaskPool(path)
    assert pool.get("t1").limits == {} == pool.get("t1").progress and pool.get("t1").status == "waiting"
    assert pool.get("t1").label == ""
    task, _ = pool.submit("p", {"a": 1}, "h2", limits={"time_limit_s": 9}, label="lgbm seed=1")
    assert pool.get(task.id).limits == {"time_limit_s": 9.0} and pool.get(task.id).label == "lgbm seed=1"
    pool.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(TaskStoreError, match="newer than this qtrain"):
        SQLiteTaskPool(path).pools()


def test_an_unusable_path_raises_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("not a directory")
    with pytest.raises(TaskStoreError, match="a_file") as info:
        SQLiteTaskPool(tmp_path / "a_file" / "tasks.db").pools()
    assert "QTRAIN_TASK_STORE" in str(info.value)


def test_a_writer_that_holds_the_lock_too_long_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    SQLiteTaskPool(path).pools()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TaskStoreError, match="write lock") as info:
            SQLiteTaskPool(path, busy_timeout_s=0.1).submit("p", {}, "h")
        assert str(path) in str(info.value)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def _claim_and_finish(pool: SQLiteTaskPool) -> None:
    task = pool.claim("p", "child")
    assert task is not None and pool.finish(task.id, task.token or "", {"run_id": "r"})


def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    pool = SQLiteTaskPool(tmp_path / "tasks.db")
    task, _ = pool.submit("p", {}, "h")  # the parent holds an open connection when it forks (Celery prefork)
    child = multiprocessing.get_context("fork").Process(target=_claim_and_finish, args=(pool,))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert pool.get(task.id).status == "done"  # and the parent's connection still works
    pool.submit("p", {}, "h2")
    pool.close()
