"""Task store URLs: masking secrets, reading their parts, and open_pool choosing the store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mongomock
import pytest

from app.core.credentials import mask_url
from app.core.errors import ConfigError, TaskStoreError
from app.taskpool import SQLiteTaskPool, open_pool
from app.taskpool.urls import mongo_database, sqlite_path

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("mongodb://app:s3cret@db:27017/qtrain", "mongodb://app:***@db:27017/qtrain"),
        ("mongodb+srv://app:p%40ss@cluster0.example.net/x?retryWrites=true", "mongodb+srv://app:***@cluster0.example.net/x?retryWrites=true"),
        ("mongodb://a:b@h1:1,h2:2/db", "mongodb://a:***@h1:1,h2:2/db"),
        ("mongodb://app:pa@ss/w@db/qtrain", "mongodb://app:***@db/qtrain"),  # unescaped @ and / still hidden
        ("redis://:secret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("mongodb://user@db/qtrain", "mongodb://user@db/qtrain"),  # no password, nothing to hide
        ("mongodb://db:27017", "mongodb://db:27017"),
        ("sqlite:////srv/tasks.db", "sqlite:////srv/tasks.db"),
        ("mongodb://db/?tlsCertificateKeyFilePassword=pw&tls=true", "mongodb://db/?tlsCertificateKeyFilePassword=***&tls=true"),
        ("mongodb://db/?authMechanismProperties=AWS_SESSION_TOKEN:tok", "mongodb://db/?authMechanismProperties=***"),
        ("postgresql://qtrain:s3cret@postgres:5432/qtrain", "postgresql://qtrain:***@postgres:5432/qtrain"),
        ("postgres://u:p%40ss@db/qtrain?sslmode=require&password=pw2", "postgres://u:***@db/qtrain?sslmode=require&password=***"),
        ("not a url", "not a url"),
    ],
)  # fmt: skip
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("url", "database"),
    [
        ("mongodb://db:27017", "qtrain"),
        ("mongodb://db:27017/", "qtrain"),
        ("mongodb://db:27017/?authSource=admin", "qtrain"),
        ("mongodb://u:p/w@db/research?authSource=admin", "research"),
        ("mongodb+srv://cluster0.example.net/qtrain_prod", "qtrain_prod"),
    ],
)
def test_mongo_database_comes_from_the_path(url: str, database: str) -> None:
    assert mongo_database(url) == database


def test_a_bad_database_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a MongoDB database name"):
        mongo_database("mongodb://db/a.b")


def test_sqlite_paths(tmp_path: Path) -> None:
    assert sqlite_path("sqlite:///.qtrain/tasks.db") == Path(".qtrain/tasks.db")
    assert sqlite_path(f"sqlite:///{tmp_path}/tasks.db") == tmp_path / "tasks.db"
    assert sqlite_path("sqlite:///~/tasks.db") == Path.home() / "tasks.db"
    for bad in ("sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:///dir/"):
        with pytest.raises(ConfigError, match=r"sqlite:///\.qtrain/tasks\.db"):
            sqlite_path(bad)


def test_open_pool_sqlite_relative_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel = open_pool("sqlite:///state/tasks.db")
    assert isinstance(rel, SQLiteTaskPool) and rel.path == tmp_path / "state" / "tasks.db"
    absolute = open_pool(f"sqlite:///{tmp_path}/abs/tasks.db")
    assert isinstance(absolute, SQLiteTaskPool) and absolute.path == tmp_path / "abs" / "tasks.db"
    absolute.submit("p", {}, "h")
    assert (tmp_path / "abs" / "tasks.db").exists()


def test_open_pool_mongodb_uses_the_database_of_the_url() -> None:
    from app.taskpool.mongo import MongoTaskPool

    with mongomock.patch(servers=(("db.example", 27017),)):
        pool = open_pool("mongodb://trainer:pw@db.example:27017/research")
        assert isinstance(pool, MongoTaskPool)
        task, _ = pool.submit("p", {"a": 1}, "h")
        assert "research" in repr(pool) and "pw" not in repr(pool)
        assert pool.get(task.id).spec == {"a": 1}
        pool.close()


@pytest.mark.parametrize("url", ["redis://u:hunter2@host/0", "mysql://u:hunter2@host/db", "", "tasks.db"])
def test_open_pool_refuses_other_urls_naming_the_variable_and_both_forms(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_pool(url)
    text = str(info.value)
    assert "QTRAIN_TASK_STORE" in text and "sqlite:///" in text and "mongodb://" in text and "postgresql://" in text
    assert "hunter2" not in text


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://qtrain:hunter2@127.0.0.1:1/qtrain",  # nothing listens: libpq's connection error
        "postgresql://qtrain:hunter2%zz@127.0.0.1:1/qtrain",  # libpq quotes the badly encoded password it rejects
    ],
)
def test_postgresql_store_errors_hide_the_password(url: str) -> None:
    pool = open_pool(url)
    assert "hunter2" not in repr(pool)
    with pytest.raises(TaskStoreError) as info:
        pool.pools()
    text = str(info.value)
    assert "PostgreSQL at postgresql://qtrain:***@127.0.0.1:1/qtrain" in text
    assert "hunter2" not in text


def test_pool_status_shows_the_postgresql_store_masked(
    postgres_server: str, postgres_schema: str, tmp_path: Path
) -> None:
    import psycopg

    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{postgres_schema}"')
    # the suite's server trusts local logins, so it accepts (and ignores) the password
    url = postgres_server.replace("://postgres@", "://postgres:hunter2@")
    url += f"?options=-csearch_path%3D{postgres_schema}"
    env = {**os.environ, "QTRAIN_TASK_STORE": url, "QTRAIN_HOME": str(tmp_path), "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-c", "from app.cli import console; console()", "pool", "status"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    title = "".join(out.stdout.split())  # rich wraps the title to the table's width
    assert f"taskpoolsat{mask_url(url)}" in title and "postgres:***@" in title
    assert "hunter2" not in out.stdout + out.stderr


def test_importing_the_task_pool_does_not_import_pymongo() -> None:
    code = "import sys, app.taskpool; assert not {'pymongo', 'psycopg'} & set(sys.modules), 'a driver imported'"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
