"""The embedded task store: one SQLite file shared by the client and every worker process on the machine.

Safe across processes and threads: WAL journal, a busy timeout, one connection per (process, thread), and every
read-modify-write inside ``BEGIN IMMEDIATE`` (the write lock is taken before reading), so two processes never
claim the same task. Spec, result and history are JSON text; times are seconds since the epoch (UTC), handed out
as timezone-aware datetimes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from app.taskpool import rules
from app.taskpool.sql import SQLTaskPool
from app.taskpool.sqlite_file import SQLiteFile

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    hash TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    queue TEXT NOT NULL,
    experiment TEXT NOT NULL,
    priority INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    delayed INTEGER NOT NULL,
    stage TEXT NOT NULL DEFAULT 'train',
    worker TEXT,
    token TEXT,
    lease_expires REAL,
    run_id TEXT,
    result TEXT,
    error TEXT,
    dispatches INTEGER NOT NULL DEFAULT 0,
    dispatched_at REAL,
    created_ns INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    history TEXT NOT NULL DEFAULT '[]',
    limits TEXT NOT NULL DEFAULT '{}',
    progress TEXT NOT NULL DEFAULT '{}',
    label TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_pool_hash ON tasks (pool, hash);
CREATE INDEX IF NOT EXISTS tasks_claim ON tasks (pool, status, priority DESC, created_ns);
CREATE INDEX IF NOT EXISTS tasks_lease ON tasks (status, lease_expires);
CREATE INDEX IF NOT EXISTS tasks_pool_created ON tasks (pool, created_ns);
"""
# schema version -> what brings an existing store up to it
_MIGRATIONS = {
    2: "ALTER TABLE tasks ADD COLUMN limits TEXT NOT NULL DEFAULT '{}'",
    3: "ALTER TABLE tasks ADD COLUMN progress TEXT NOT NULL DEFAULT '{}'",
    4: "ALTER TABLE tasks ADD COLUMN label TEXT NOT NULL DEFAULT ''",
}


class SQLiteTaskPool(SQLTaskPool):
    """The :class:`app.taskpool.base.TaskPool` in a SQLite file at ``path`` (created with its directory on first use).

    ``busy_timeout_s`` is how long a call waits for another process's write lock before it fails;
    ``clock`` gives seconds since the epoch (tests may pass a fake one).
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0, clock: rules.Clock = time.time) -> None:
        self.path = Path(path).expanduser().absolute()
        db = SQLiteFile(
            self.path,
            schema=_SCHEMA,
            version=SCHEMA_VERSION,
            what="the task store",
            busy_timeout_s=busy_timeout_s,
            migrations=_MIGRATIONS,
        )
        super().__init__(db, where=str(self.path), tiebreak="rowid", clock=clock)

    def __repr__(self) -> str:
        return f"SQLiteTaskPool({str(self.path)!r})"
