"""One SQLite file shared by several processes and threads: connections, schema and write transactions.

The rules that make a SQLite file safe to share (the task store relies on each one):

* WAL journal, so readers never block the writer; ``busy_timeout`` so a writer waits for the lock instead of
  failing at once;
* one connection per (process, thread): a connection is never shared between threads, and a connection that a
  forked child inherited is neither used nor closed there;
* every read-modify-write inside ``BEGIN IMMEDIATE`` (:meth:`SQLiteFile.write`), which takes the write lock
  before the first read, so two processes never act on the same snapshot;
* the directory, the schema and the WAL switch are created on first use, idempotently, whoever comes first.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.core.errors import TaskStoreError

_INHERITED: list[sqlite3.Connection] = []  # connections a forked child got from its parent, kept alive unused


class _Connection(sqlite3.Connection):
    """A connection that can be weakly referenced (the plain C type cannot)."""


class SQLiteFile:
    """The database file at ``path`` with ``schema`` (statements separated by ``;``) at ``version``.

    ``what`` names the file in error messages (e.g. "the task store"); ``busy_timeout_s`` is how long a writer
    waits for another process's lock before :class:`app.core.errors.TaskStoreError` is raised.
    """

    def __init__(
        self,
        path: Path,
        *,
        schema: str,
        version: int,
        what: str,
        busy_timeout_s: float = 30.0,
        migrations: Mapping[int, str] | None = None,
    ) -> None:
        self.path = path
        self.what = what
        self._schema, self._version = schema, version
        self._migrations = dict(migrations or {})  # version -> the statement that brings an older file up to it
        self._busy_ms = int(busy_timeout_s * 1000)
        self._local = threading.local()
        self._lock = threading.Lock()
        # weak, so that the connection of a finished thread closes with it (heartbeat threads come and go)
        self._conns: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._pid: int | None = None
        self._schema_ready = False

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; use :meth:`write` for transactions).

        Raises:
            TaskStoreError: the file or its directory cannot be created or opened.
        """
        pid = os.getpid()
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == pid:
            return conn
        with self._lock:
            if self._pid != pid:  # first use in this process, or the first after a fork()
                # A connection inherited through fork() belongs to the parent: closing it in the child may
                # checkpoint or delete the parent's WAL, so it is kept alive and never touched.
                _INHERITED.extend(self._conns)
                if conn is not None:
                    _INHERITED.append(conn)
                self._conns = weakref.WeakSet()
                self._pid, self._schema_ready = pid, False
        conn = self._open()
        with self._lock:
            self._conns.add(conn)
        self._local.conn, self._local.pid = conn, pid
        if not self._schema_ready:
            self._create_schema(conn)
            self._schema_ready = True
        return conn

    def _open(self) -> _Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TaskStoreError(
                f"cannot create the directory of {self.what} {self.path}: {exc}; "
                "point QTRAIN_TASK_STORE at a writable place, e.g. sqlite:///.qtrain/tasks.db"
            ) from exc
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_ms / 1000,
                isolation_level=None,
                check_same_thread=False,  # only so close() may close other threads' connections
                factory=_Connection,
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            self._set_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL, and much faster
        except sqlite3.Error as exc:
            raise self.error("open", exc) from exc
        return conn

    def _set_wal(self, conn: sqlite3.Connection) -> None:
        # Switching a new file to WAL needs a lock that another process creating it may hold for a moment.
        deadline = time.monotonic() + self._busy_ms / 1000
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        if str(mode).lower() != "wal":
            raise TaskStoreError(
                f"{self.what} {self.path} cannot use SQLite's WAL journal (it reports {mode!r}); "
                "put it on a local disk, not a network share"
            )

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        with self.write(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > self._version:
                raise TaskStoreError(
                    f"{self.what} {self.path} has schema version {version}, newer than this qtrain understands "
                    f"({self._version}); upgrade qtrain or use another file"
                )
            for statement in self._schema.split(";"):
                if statement.strip():
                    conn.execute(statement)
            for target, statement in sorted(self._migrations.items()):
                if 0 < version < target:  # a file made by an older qtrain (a new one is 0 and has the latest schema)
                    conn.execute(statement)
            if version < self._version:
                conn.execute(f"PRAGMA user_version = {self._version}")

    @contextmanager
    def write(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: the write lock is held from the first read to the commit.

        Raises:
            TaskStoreError: the lock was not granted within the busy timeout, or the commit failed.
        """
        conn = self.conn() if conn is None else conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self.error("lock", exc) from exc
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:  # a busy COMMIT leaves the transaction open
                conn.execute("ROLLBACK")
            raise self.error("commit to", exc) from exc

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """The rows of one SELECT.

        Raises:
            TaskStoreError: the file cannot be read.
        """
        try:
            return self.conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self.error("read", exc) from exc

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one write statement on its own (atomic by itself); the number of rows it changed.

        Raises:
            TaskStoreError: the file cannot be written.
        """
        try:
            return self.conn().execute(sql, args).rowcount
        except sqlite3.Error as exc:
            raise self.error("write", exc) from exc

    def error(self, verb: str, exc: sqlite3.Error) -> TaskStoreError:
        """A :class:`TaskStoreError` for a failed ``verb`` (open, read, write, lock), with a hint how to fix it."""
        hint = "check that the file and its directory are writable"
        if "locked" in str(exc) or "busy" in str(exc):
            hint = (
                f"another process held the write lock for more than {self._busy_ms / 1000:g} s; "
                "raise busy_timeout_s or look for a stuck process"
            )
        return TaskStoreError(f"cannot {verb} {self.what} {self.path}: {exc}; {hint}")

    def close(self) -> None:
        """Close this process's connections to the file; a later call opens new ones."""
        with self._lock:
            conns = list(self._conns) if self._pid == os.getpid() else []
            self._conns = weakref.WeakSet()
            self._local = threading.local()
            self._pid = None
        for conn in conns:
            conn.close()
