"""The task store on PostgreSQL (``QTRAIN_TASK_STORE=postgresql://user[:password]@host[:port]/database``): the
same state machine as the SQLite store (:mod:`app.taskpool.sql`), for pools shared by several hosts.

A claim is ``SELECT ... FOR UPDATE SKIP LOCKED`` (two workers never wait on, nor take, the same row); every other
read-modify-write locks its rows with ``FOR UPDATE``; submissions of the same spec at once are settled by the
unique (pool, hash) index. One connection per (process, thread), so forked Celery children and heartbeat threads
never share one. The table and its indexes are created on first use (under an advisory lock, so processes that
start together do not race). psycopg is imported only for PostgreSQL URLs.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from app.core.credentials import mask_url, url_password
from app.core.errors import TaskStoreError
from app.taskpool import rules
from app.taskpool.sql import SQLTaskPool
from app.taskpool.sqlite import _MIGRATIONS as SQLITE_MIGRATIONS
from app.taskpool.sqlite import _SCHEMA as SQLITE_SCHEMA

# the SQLite store's table in PostgreSQL's types (seconds as double precision, nanoseconds as bigint)
SCHEMA = SQLITE_SCHEMA.replace(" REAL", " DOUBLE PRECISION").replace("created_ns INTEGER", "created_ns BIGINT")
_SCHEMA_LOCK = 0x71747261696E  # pg_advisory_xact_lock key of the table's creation ("qtrain")
_NAMED = re.compile(r"(?<![:\w]):([a-z_]+)\b")


def to_psycopg(sql: str) -> str:
    """The store's SQL (``?`` and ``:name`` parameters, as SQLite takes them) in psycopg's ``%s``/``%(name)s``."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%")).replace("?", "%s")


class _Connection:
    """A psycopg connection that takes the store's SQL."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self.conn.execute(to_psycopg(sql), params)


def _add_missing_columns(conn: Any) -> None:
    """Bring a table an older qtrain made up to date: the SQLite store's migrations (each adds a column) that it
    lacks. Only a missing column is altered: even a no-op ALTER locks a busy table."""
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'tasks'"
        " AND table_schema = current_schema()"
    ).fetchall()
    present = {row["column_name"] for row in rows}
    for statement in SQLITE_MIGRATIONS.values():  # "ALTER TABLE tasks ADD COLUMN <name> <type> ..."
        if statement.split()[5] not in present:
            conn.execute(statement)


class PostgresDatabase:
    """:class:`app.taskpool.sql.SQLDatabase` on the PostgreSQL server of ``url`` (``schema``: its search path).

    Raises (from every call):
        TaskStoreError: the server cannot be reached, refuses the login or the statement; names QTRAIN_TASK_STORE.
    """

    def __init__(self, url: str, *, schema: str | None = None, connect_timeout_s: float = 10.0) -> None:
        self.url, self.schema, self.connect_timeout_s = url, schema, connect_timeout_s
        self._local = threading.local()
        self._created_in: int | None = None  # the process that made sure the table exists

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid() and not conn.closed:
            return conn
        import psycopg
        from psycopg.rows import dict_row

        options = f"-c search_path={self.schema}" if self.schema else ""
        with self._errors("connecting"):
            conn = psycopg.connect(
                self.url, autocommit=True, row_factory=dict_row, connect_timeout=max(1, round(self.connect_timeout_s)),
                options=options or None,
            )  # fmt: skip
            if self._created_in != os.getpid():
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                    if self.schema:
                        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                    # DDL only for a new table: even a no-op CREATE INDEX IF NOT EXISTS locks a busy one
                    found = conn.execute("SELECT to_regclass('tasks') AS t").fetchone()
                    if found is None or found["t"] is None:
                        for statement in filter(str.strip, SCHEMA.split(";")):
                            conn.execute(statement)
                    else:
                        _add_missing_columns(conn)
                self._created_in = os.getpid()
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        import psycopg

        try:
            yield
        except psycopg.OperationalError as exc:
            self._local.conn = None
            reason = self._reason(exc)
            raise TaskStoreError(
                f"cannot reach PostgreSQL at {mask_url(self.url)} while {doing} ({reason}); start it or fix "
                "QTRAIN_TASK_STORE"
            ) from exc
        except psycopg.Error as exc:
            reason = self._reason(exc)
            raise TaskStoreError(f"PostgreSQL at {mask_url(self.url)} refused {doing} ({reason})") from exc

    def _reason(self, exc: BaseException) -> str:
        # libpq quotes the part of the URL it cannot parse, e.g. a badly percent-encoded password
        reason = " ".join(str(exc).split()) or type(exc).__name__
        password = url_password(self.url)
        return reason.replace(password, "***") if password else reason

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        conn = self._connection()
        with self._errors("reading the task store"), conn.transaction():
            return list(conn.execute(to_psycopg(sql), params).fetchall())

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        conn = self._connection()
        with self._errors("writing the task store"), conn.transaction():
            return int(conn.execute(to_psycopg(sql), params).rowcount)

    @contextmanager
    def write(self) -> Iterator[_Connection]:
        conn = self._connection()
        with self._errors("writing the task store"), conn.transaction():
            yield _Connection(conn)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local.conn = None


class PostgresTaskPool(SQLTaskPool):
    """The :class:`app.taskpool.base.TaskPool` in the ``tasks`` table of a PostgreSQL database (``schema``: another
    schema than the user's default, e.g. one per test)."""

    def __init__(
        self, url: str, *, schema: str | None = None, connect_timeout_s: float = 10.0, clock: rules.Clock = time.time
    ) -> None:
        self.url = url
        db = PostgresDatabase(url, schema=schema, connect_timeout_s=connect_timeout_s)
        where = mask_url(url) + (f" (schema {schema})" if schema else "")
        super().__init__(db, where=where, lock=" FOR UPDATE", skip_locked=" FOR UPDATE SKIP LOCKED", clock=clock)

    def __repr__(self) -> str:
        return f"PostgresTaskPool({mask_url(self.url)!r})"
