"""The task pool: the system of record for every task's state (Qlib's TaskManager, without its defects)."""

from __future__ import annotations

from app.core.credentials import mask_url
from app.core.errors import ConfigError, TaskStoreError
from app.taskpool.base import DEFAULT_LEASE_S, DEFAULT_MAX_ATTEMPTS, STATUSES, Stage, Status, TaskPool, TaskRecord
from app.taskpool.sqlite import SQLiteTaskPool
from app.taskpool.urls import is_mongo_url, is_postgres_url, mongo_database, sqlite_path

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_MAX_ATTEMPTS",
    "STATUSES",
    "SQLiteTaskPool",
    "Stage",
    "Status",
    "TaskPool",
    "TaskRecord",
    "check_store",
    "mask_url",
    "open_pool",
]

E_STORE_URL = (
    "QTRAIN_TASK_STORE={url!r} is not a task store URL. Use sqlite:///PATH for the embedded store (e.g. "
    "sqlite:///.qtrain/tasks.db relative to the working directory, sqlite:////srv/qtrain/tasks.db absolute), "
    "postgresql://[user[:password]@]host[:port]/database, or mongodb://[user:password@]host[:port][/database] "
    "(mongodb+srv://... too; database defaults to qtrain)"
)


def open_pool(url: str) -> TaskPool:
    """The task store named by ``url`` (the value of QTRAIN_TASK_STORE).

    ``sqlite:///PATH`` opens a :class:`SQLiteTaskPool`; ``postgresql://`` (or ``postgres://``) a
    :class:`app.taskpool.postgres.PostgresTaskPool`; ``mongodb://`` and ``mongodb+srv://`` a
    :class:`app.taskpool.mongo.MongoTaskPool` on the database named by the URL's path (default "qtrain").
    psycopg and pymongo are imported only for their URLs.

    Raises:
        ConfigError: ``url`` is neither form (the message masks any password in it).
    """
    if not isinstance(url, str):
        raise ConfigError(E_STORE_URL.format(url=url))
    if url.startswith("sqlite:"):
        return SQLiteTaskPool(sqlite_path(url))
    if is_postgres_url(url):
        from app.taskpool.postgres import PostgresTaskPool

        return PostgresTaskPool(url)
    if is_mongo_url(url):
        from app.taskpool.mongo import MongoTaskPool

        return MongoTaskPool(url, database=mongo_database(url))
    raise ConfigError(E_STORE_URL.format(url=mask_url(url)))


def check_store(url: str, *, timeout_s: float) -> None:
    """Open the task store named by ``url`` (creating a SQLite file and its directory, or MongoDB's indexes) and
    read it once, giving up after about ``timeout_s``; the store is closed again.

    Raises:
        ConfigError: ``url`` is not a task store URL.
        TaskStoreError: the store cannot be created, opened or reached; the message names QTRAIN_TASK_STORE.
    """
    if url.startswith("sqlite:"):
        pool: TaskPool = SQLiteTaskPool(sqlite_path(url), busy_timeout_s=timeout_s)
    elif is_postgres_url(url):
        from app.taskpool.postgres import PostgresTaskPool

        pool = PostgresTaskPool(url, connect_timeout_s=timeout_s)
    elif is_mongo_url(url):
        from app.taskpool.mongo import MongoTaskPool

        pool = MongoTaskPool(url, database=mongo_database(url), server_timeout_s=timeout_s)
    else:
        raise ConfigError(E_STORE_URL.format(url=mask_url(url)))
    try:
        pool.pools()
    except TaskStoreError as exc:
        if "QTRAIN_TASK_STORE" not in str(exc):
            raise TaskStoreError(f"{exc}; the task store is QTRAIN_TASK_STORE={mask_url(url)}") from exc
        raise
    finally:
        pool.close()
