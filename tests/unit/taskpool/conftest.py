"""The stores the task-pool contract suite runs against: SQLite, the PostgreSQL server on this machine (a schema of
its own per test), MongoDB through mongomock, and a real MongoDB server when QTRAIN_MONGO_URL is set (read through
app.core.settings, never os.environ)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.settings import load_settings
from app.taskpool import SQLiteTaskPool, TaskPool

STORES = ["sqlite", "postgresql", "mongomock", "mongodb"]
_collections = itertools.count()


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[tuple[str, str]]:
    """``(url, database)`` of the real MongoDB server for this test run; the database is dropped at the end."""
    url = load_settings().mongo_url
    if url is None:
        pytest.skip("QTRAIN_MONGO_URL is not set: no real MongoDB server to run the contract suite against")
    import pymongo

    database = f"qtrain_test_{uuid.uuid4().hex[:12]}"
    yield url, database
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(database)
    finally:
        client.close()


def make_pool(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> TaskPool:
    """A fresh, empty store of ``kind`` (one of STORES)."""
    if kind == "sqlite":
        return SQLiteTaskPool(tmp_path / "store" / "tasks.db")
    if kind == "postgresql":
        from app.taskpool.postgres import PostgresTaskPool

        return PostgresTaskPool(
            request.getfixturevalue("postgres_server"), schema=request.getfixturevalue("postgres_schema")
        )
    from app.taskpool.mongo import MongoTaskPool

    if kind == "mongomock":
        import mongomock

        return MongoTaskPool(mongomock.MongoClient(tz_aware=True), database="qtrain_test", collection="tasks")
    url, database = request.getfixturevalue("mongo_server")
    return MongoTaskPool(url, database=database, collection=f"tasks_{next(_collections)}", server_timeout_s=5)


@pytest.fixture(params=STORES)
def pool(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskPool]:
    """Each store in turn, empty."""
    store = make_pool(request.param, tmp_path, request)
    try:
        yield store
    finally:
        store.close()
