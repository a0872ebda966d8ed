"""The task pool's state machine on a SQL database, written once for SQLite (:mod:`app.taskpool.sqlite`) and
PostgreSQL (:mod:`app.taskpool.postgres`).

Every read-modify-write runs in one transaction of the database layer (:class:`SQLDatabase`), whose SELECT takes
the rows it will change (SQLite: the write lock taken at BEGIN IMMEDIATE; PostgreSQL: ``FOR UPDATE``, and ``FOR
UPDATE SKIP LOCKED`` for a claim), so two processes never claim the same task nor end the same attempt. Spec,
result, history and limits are JSON text; times are seconds since the epoch (UTC), handed out as timezone-aware
datetimes.
"""

from __future__ import annotations

import builtins
import json
import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from app.core.errors import TaskNotFoundError
from app.taskpool import rules
from app.taskpool.base import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_ATTEMPTS,
    FINAL_STATUSES,
    STATUSES,
    Stage,
    Status,
    TaskRecord,
)

log = logging.getLogger(__name__)

# a task leaving "running" drops its token and lease; worker and run_id stay to say who ran it last
_OFF_LEASE = "token = NULL, lease_expires = NULL"
_INSERT = (
    "INSERT INTO tasks (id, pool, hash, spec, status, queue, experiment, priority, max_attempts, delayed, stage,"
    " created_ns, updated_at, limits, label) VALUES (:id, :pool, :hash, :spec, 'waiting', :queue, :experiment,"
    " :priority, :max_attempts, :delayed, 'train', :created_ns, :updated_at, :limits, :label)"
    " ON CONFLICT (pool, hash) DO NOTHING"
)


class SQLDatabase(Protocol):
    """The statements of one store: ``read`` and ``execute`` in a transaction of their own; ``write`` a
    transaction whose connection runs several (``conn.execute(sql, params)`` returns a cursor)."""

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    def write(self) -> AbstractContextManager[Any]: ...

    def close(self) -> None: ...


class SQLTaskPool:
    """The :class:`app.taskpool.base.TaskPool` on a SQL database: the state machine written once, in SQL that
    SQLite and PostgreSQL both run (``?`` and ``:name`` parameters; the PostgreSQL connection translates them).

    ``db`` runs the statements (:class:`SQLDatabase`); ``where`` names the store in messages; ``lock`` is appended
    to the SELECT of each read-modify-write (PostgreSQL: ``FOR UPDATE``; SQLite: nothing, its write transaction
    already holds the database), ``skip_locked`` to the claim's (``FOR UPDATE SKIP LOCKED``: two claims never wait
    for each other's row); ``tiebreak`` orders tasks created in the same nanosecond; ``clock`` gives seconds since
    the epoch (tests may pass a fake one).
    """

    def __init__(
        self, db: SQLDatabase, *, where: str, lock: str = "", skip_locked: str = "", tiebreak: str = "id",
        clock: rules.Clock = time.time,
    ) -> None:  # fmt: skip
        self._db, self.where = db, where
        self._lock, self._skip_locked = lock, skip_locked
        self._order_claim = f"ORDER BY priority DESC, created_ns, {tiebreak}"
        self._order_list = f"ORDER BY created_ns, {tiebreak}"
        self._clock = clock
        self._seq = rules.Sequencer(clock)

    def close(self) -> None:
        """Close this process's connections; a later call opens new ones."""
        self._db.close()

    # -- rows --------------------------------------------------------------------------------------------------

    def _record(self, row: Any) -> TaskRecord:
        return TaskRecord(
            id=row["id"],
            pool=row["pool"],
            hash=row["hash"],
            spec=json.loads(row["spec"]),
            status=row["status"],
            queue=row["queue"],
            experiment=row["experiment"],
            priority=row["priority"],
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            delayed=bool(row["delayed"]),
            limits=json.loads(row["limits"]),
            progress=json.loads(row["progress"]),
            label=row["label"],
            stage=row["stage"],
            worker=row["worker"],
            token=row["token"],
            lease_expires=rules.to_datetime(row["lease_expires"]),
            run_id=row["run_id"],
            result=None if row["result"] is None else json.loads(row["result"]),
            error=row["error"],
            dispatches=row["dispatches"],
            dispatched_at=rules.to_datetime(row["dispatched_at"]),
            created_at=rules.to_datetime(row["created_ns"] / 1e9),
            updated_at=rules.to_datetime(row["updated_at"]),
            started_at=rules.to_datetime(row["started_at"]),
            finished_at=rules.to_datetime(row["finished_at"]),
            history=json.loads(row["history"]),
        )

    def _row(self, conn: Any, task_id: str) -> Any | None:
        row: Any | None = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return row

    def _running(self, conn: Any, task_id: str, token: str) -> Any | None:
        row: Any | None = conn.execute(
            f"SELECT * FROM tasks WHERE id = ? AND token = ? AND status = 'running'{self._lock}", (task_id, token)
        ).fetchone()
        return row

    def _end_attempt(
        self,
        conn: Any,
        row: Any,
        status: Status,
        outcome: rules.AttemptEnd,
        error: str | None = None,
        **sets: Any,
    ) -> None:
        """Move the running task of ``row`` to ``status`` (also setting the columns ``sets``), recording the
        attempt in its history."""
        now = self._clock()
        entry = rules.history_entry(
            attempt=row["attempts"],
            stage=row["stage"],
            worker=row["worker"],
            run_id=sets.get("run_id", row["run_id"]),
            started_at=row["started_at"],
            ended_at=now,
            outcome=outcome,
            status=status,
            error=error,
        )
        if status in FINAL_STATUSES:
            sets["finished_at"] = now
        sets.update(status=status, error=error, history=json.dumps([*json.loads(row["history"]), entry]))
        columns = "".join(f", {name} = :{name}" for name in sets)
        conn.execute(
            f"UPDATE tasks SET updated_at = :now, {_OFF_LEASE}{columns} WHERE id = :id",
            {**sets, "now": now, "id": row["id"]},
        )

    # -- the contract ------------------------------------------------------------------------------------------

    def submit(
        self,
        pool: str,
        spec: Mapping[str, Any],
        spec_hash: str,
        *,
        queue: str = "cpu",
        experiment: str = "qtrain",
        priority: int = 0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        delayed: bool = False,
        limits: Mapping[str, float] | None = None,
        label: str = "",
    ) -> tuple[TaskRecord, bool]:
        """Add a waiting task, or return the pool's task with that hash; ``(task, created)``.

        Raises:
            ConfigError: a bad pool/queue name, hash, priority, max_attempts or label, or a spec that is not JSON.
            TaskStoreError: the file cannot be written.
        """
        fields = rules.check_submission(
            pool,
            spec,
            spec_hash,
            queue=queue,
            experiment=experiment,
            priority=priority,
            max_attempts=max_attempts,
            delayed=delayed,
            limits=limits,
            label=label,
        )
        task_id = rules.new_id()
        fields.update(id=task_id, spec=json.dumps(fields["spec"]), limits=json.dumps(fields["limits"]))
        fields.update(created_ns=self._seq.next(), delayed=int(fields["delayed"]), updated_at=self._clock())
        with self._db.write() as conn:
            conn.execute(_INSERT, fields)
            row = conn.execute("SELECT * FROM tasks WHERE pool = ? AND hash = ?", (pool, spec_hash)).fetchone()
        assert row is not None
        return self._record(row), row["id"] == task_id

    def get(self, task_id: str) -> TaskRecord:
        """The task with ``task_id``.

        Raises:
            TaskNotFoundError: no such task in this store.
        """
        rows = self._db.read("SELECT * FROM tasks WHERE id = ?", (task_id,))
        if not rows:
            raise TaskNotFoundError(
                f"no task {task_id!r} in the task store {self.where}; list them with pool.list(POOL)"
            )
        return self._record(rows[0])

    def find(self, pool: str, spec_hash: str) -> TaskRecord | None:
        """The pool's task with that hash, None when there is none.

        Raises:
            ConfigError: a bad pool name.
        """
        rules.check_name(pool)
        rows = self._db.read("SELECT * FROM tasks WHERE pool = ? AND hash = ?", (pool, spec_hash))
        return self._record(rows[0]) if rows else None

    def claim(
        self, pool: str, worker: str, *, lease_s: float = DEFAULT_LEASE_S, task_id: str | None = None,
        stage: Stage = "train",
    ) -> TaskRecord | None:  # fmt: skip
        """Atomically take the best waiting task (stage "end": part_done task), or exactly ``task_id``.

        Raises:
            ConfigError: a bad pool name, worker, lease or stage.
        """
        rules.check_name(pool)
        rules.check_text(worker, "worker")
        lease = rules.check_lease(lease_s)
        stage = rules.check_stage(stage)
        wanted: Status = "part_done" if stage == "end" else "waiting"
        where, args = "pool = ? AND status = ?", [pool, wanted]
        if task_id is not None:
            where, args = where + " AND id = ?", [*args, task_id]
        with self._db.write() as conn:
            claim = f"SELECT id FROM tasks WHERE {where} {self._order_claim} LIMIT 1{self._skip_locked}"
            row = conn.execute(claim, args).fetchone()
            if row is None:
                return None
            now = self._clock()
            conn.execute(
                "UPDATE tasks SET status = 'running', stage = ?, worker = ?, token = ?, attempts = attempts + 1,"
                " lease_expires = ?, started_at = ?, updated_at = ?, finished_at = NULL, progress = '{}' WHERE id = ?",
                (stage, worker, rules.new_token(), now + lease, now, now, row["id"]),
            )
            claimed = self._row(conn, row["id"])
        assert claimed is not None
        return self._record(claimed)

    def _update_running(self, task_id: str, token: str, sets: str, args: Sequence[Any]) -> bool:
        sql = f"UPDATE tasks SET {sets} WHERE id = ? AND token = ? AND status = 'running'"
        return self._db.execute(sql, (*args, task_id, token)) == 1

    def heartbeat(
        self, task_id: str, token: str, *, lease_s: float = DEFAULT_LEASE_S, progress: Mapping[str, Any] | None = None
    ) -> bool:
        """Extend the lease to now + ``lease_s`` (and store ``progress``); False when the task is no longer running
        under ``token``.

        Raises:
            ConfigError: ``lease_s`` is not a positive number, or ``progress`` is not JSON.
        """
        lease = rules.check_lease(lease_s)
        now = self._clock()
        if progress is None:
            return self._update_running(task_id, token, "lease_expires = ?, updated_at = ?", (now + lease, now))
        report = json.dumps(rules.progress_document(progress, task_id))
        sets = "lease_expires = ?, updated_at = ?, progress = ?"
        return self._update_running(task_id, token, sets, (now + lease, now, report))

    def set_run(self, task_id: str, token: str, run_id: str) -> bool:
        """Record the attempt's MLflow run id; False when the token is stale.

        Raises:
            ConfigError: ``run_id`` is empty.
        """
        rules.check_text(run_id, "run_id")
        return self._update_running(task_id, token, "run_id = ?, updated_at = ?", (run_id, self._clock()))

    def finish(self, task_id: str, token: str, result: Mapping[str, Any]) -> bool:
        """running under ``token`` → done with ``result``; False (nothing changes) when the token is stale.

        Raises:
            ConfigError: ``result`` is not JSON.
        """
        text = json.dumps(rules.json_document(result, f"the result of task {task_id!r}"))
        with self._db.write() as conn:
            row = self._running(conn, task_id, token)
            if row is None:
                return False
            self._end_attempt(conn, row, "done", "done", result=text)
        return True

    def part_done(self, task_id: str, token: str, run_id: str) -> bool:
        """running under ``token`` (stage "train" of a delayed task) → part_done with ``run_id``.

        Raises:
            ConfigError: ``run_id`` is empty.
            TaskPoolError: the task is not delayed, or its "end" stage is running.
        """
        rules.check_text(run_id, "run_id")
        with self._db.write() as conn:
            row = self._running(conn, task_id, token)
            if row is None:
                return False
            rules.check_part_done(row["id"], bool(row["delayed"]), row["stage"])
            self._end_attempt(conn, row, "part_done", "part_done", stage="end", run_id=run_id, attempts=0)
        return True

    def fail(self, task_id: str, token: str, error: str, *, retry: bool = True) -> Status | None:
        """running under ``token`` → waiting/part_done while attempts are left and ``retry``, else failed.

        Returns the new status, None when the token is stale.
        """
        with self._db.write() as conn:
            row = self._running(conn, task_id, token)
            if row is None:
                return None
            status = rules.after_failure(row["attempts"], row["max_attempts"], row["stage"], retry)
            self._end_attempt(conn, row, status, "error", str(error))
        return status

    def expire_leases(self, pool: str | None = None) -> builtins.list[TaskRecord]:
        """Running tasks whose lease has passed → waiting/part_done, or failed when out of attempts.

        Raises:
            ConfigError: a bad pool name.
        """
        where, args = "status = 'running' AND lease_expires < ?", []
        if pool is not None:
            where, args = where + " AND pool = ?", [rules.check_name(pool)]
        with self._db.write() as conn:
            now = self._clock()
            rows = conn.execute(f"SELECT * FROM tasks WHERE {where} {self._order_list}{self._lock}", [now, *args])
            rows = rows.fetchall()
            for row in rows:
                status = rules.after_failure(row["attempts"], row["max_attempts"], row["stage"], True)
                error = rules.lease_error(
                    row["worker"], row["lease_expires"], row["attempts"], row["max_attempts"], row["stage"]
                )
                self._end_attempt(conn, row, status, "lease_expired", error)
                log.warning("task %s of pool %s: %s -> %s", row["id"], row["pool"], error, status)
            ids = [row["id"] for row in rows]
            out = [self._row(conn, task_id) for task_id in ids]
        return [self._record(row) for row in out if row is not None]

    def mark_dispatched(self, task_id: str) -> None:
        """``dispatches`` + 1 and ``dispatched_at`` = now.

        Raises:
            TaskNotFoundError: no such task.
        """
        now = self._clock()
        sql = "UPDATE tasks SET dispatches = dispatches + 1, dispatched_at = ?, updated_at = ? WHERE id = ?"
        if self._db.execute(sql, (now, now, task_id)) != 1:
            raise TaskNotFoundError(f"cannot mark task {task_id!r} dispatched: it is not in {self.where}")

    def list(self, pool: str, statuses: Sequence[Status] | None = None) -> builtins.list[TaskRecord]:
        """Tasks of ``pool`` (optionally only those in ``statuses``), oldest first.

        Raises:
            ConfigError: a bad pool name or an unknown status.
        """
        rules.check_name(pool)
        where, args = "pool = ?", [pool]
        if statuses is not None:
            wanted = rules.check_statuses(statuses)
            where += f" AND status IN ({', '.join('?' * len(wanted))})"
            args += wanted
        return [
            self._record(row) for row in self._db.read(f"SELECT * FROM tasks WHERE {where} {self._order_list}", args)
        ]

    def stats(self, pool: str) -> dict[Status, int]:
        """Count per status, every status present.

        Raises:
            ConfigError: a bad pool name.
        """
        rules.check_name(pool)
        counts: dict[Status, int] = dict.fromkeys(STATUSES, 0)
        for row in self._db.read("SELECT status, COUNT(*) AS n FROM tasks WHERE pool = ? GROUP BY status", (pool,)):
            counts[row["status"]] = row["n"]
        return counts

    def _back_to_start(self, conn: Any, rows: Sequence[Any]) -> int:
        now = self._clock()
        for row in rows:
            target = rules.after_end(row["stage"])
            if row["status"] == "running":
                self._end_attempt(conn, row, target, "reset")
            conn.execute(
                f"UPDATE tasks SET status = ?, attempts = 0, error = NULL, result = NULL, finished_at = NULL,"
                f" updated_at = ?, {_OFF_LEASE} WHERE id = ?",
                (target, now, row["id"]),
            )
        return len(rows)

    def reset(self, pool: str, statuses: Sequence[Status] = ("running", "failed")) -> int:
        """Tasks of ``pool`` in ``statuses`` → waiting (part_done for a delayed task past its train stage).

        Raises:
            ConfigError: a bad pool name or an unknown status.
        """
        rules.check_name(pool)
        wanted = rules.check_statuses(statuses)
        if not wanted:
            return 0
        marks = ", ".join("?" * len(wanted))
        with self._db.write() as conn:
            rows = conn.execute(
                f"SELECT * FROM tasks WHERE pool = ? AND status IN ({marks}){self._lock}", [pool, *wanted]
            )
            return self._back_to_start(conn, rows.fetchall())

    def _rows_of(self, conn: Any, ids: Sequence[str], doing: str) -> builtins.list[Any]:
        """The rows of ``ids``, locked for this transaction.

        Raises:
            TaskNotFoundError: an id is not in the store.
        """
        marks = ", ".join("?" * len(ids))
        rows: builtins.list[Any] = conn.execute(
            f"SELECT * FROM tasks WHERE id IN ({marks}){self._lock}", ids
        ).fetchall()
        rules.check_found(ids, (row["id"] for row in rows), doing, self.where)
        return rows

    def cancel(self, task_ids: Sequence[str]) -> int:
        """These tasks → cancelled unless they ended already; a running attempt ends (its token dropped).

        Raises:
            TaskNotFoundError: an id is not in the store (nothing changes).
        """
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return 0
        with self._db.write() as conn:
            rows = self._rows_of(conn, ids, "cancel")
            live = [row for row in rows if row["status"] not in FINAL_STATUSES]
            now = self._clock()
            for row in live:
                if row["status"] == "running":
                    self._end_attempt(conn, row, "cancelled", "cancelled", rules.CANCELLED_ERROR)
                    continue
                conn.execute(
                    f"UPDATE tasks SET status = 'cancelled', error = ?, finished_at = ?, updated_at = ?, {_OFF_LEASE}"
                    " WHERE id = ?",
                    (rules.CANCELLED_ERROR, now, now, row["id"]),
                )
            return len(live)

    def requeue(self, task_ids: Sequence[str]) -> int:
        """These tasks (any status but running under a live lease) → waiting/part_done as in :meth:`reset`.

        Raises:
            TaskNotFoundError: an id is not in the store (nothing changes).
        """
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return 0
        with self._db.write() as conn:
            rows = self._rows_of(conn, ids, "requeue")
            now = self._clock()
            movable = [r for r in rows if not (r["status"] == "running" and (r["lease_expires"] or 0) >= now)]
            return self._back_to_start(conn, movable)

    def purge(self, pool: str) -> int:
        """Delete every task of ``pool``; returns how many.

        Raises:
            ConfigError: a bad pool name.
        """
        rules.check_name(pool)
        with self._db.write() as conn:
            return int(conn.execute("DELETE FROM tasks WHERE pool = ?", (pool,)).rowcount)

    def pools(self) -> builtins.list[str]:
        """Names of the pools that hold tasks, sorted."""
        return [row["pool"] for row in self._db.read("SELECT DISTINCT pool FROM tasks ORDER BY pool")]
