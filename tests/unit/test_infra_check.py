"""The pre-check's refusals that need no server: unsupported broker and result backend URLs, and the task store
check (a SQLite file created empty, a path under a regular file, MongoDB through mongomock)."""

from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path

import mongomock
import pytest

from app.core.errors import (
    BrokerError,
    BrokerUnreachableError,
    ConfigError,
    InfrastructureError,
    ResultBackendError,
    TaskStoreError,
)
from app.core.settings import load_settings
from app.distributed.infra_check import check_broker_url, check_services
from app.taskpool import check_store

NOWHERE = "redis://127.0.0.1:1/0"  # never contacted: the URL checks come first


@pytest.mark.parametrize("url", ["amqp://guest:pw@127.0.0.1:5672//", "sqs://", "memory://", "sentinel://h:26379"])
def test_a_broker_that_is_not_redis_is_refused_with_the_reason(url: str) -> None:
    with pytest.raises(BrokerError) as info:
        check_broker_url(url)
    text = str(info.value)
    assert "is not supported: the task pool needs a Redis broker" in text and "QTRAIN_BROKER_URL=redis://" in text
    assert info.value.variable == "QTRAIN_BROKER_URL" and "pw" not in text


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://:pw@h:6380/1"])
def test_redis_brokers_pass_the_url_check(url: str) -> None:
    check_broker_url(url)


@pytest.mark.parametrize("backend", ["rpc://", "db+sqlite:///results.db", "cache+memcached://h:11211/"])
def test_an_unsupported_result_backend_is_refused_before_any_server_is_asked(tmp_path: Path, backend: str) -> None:
    settings = load_settings({"QTRAIN_BROKER_URL": NOWHERE, "QTRAIN_RESULT_BACKEND": backend}, cwd=tmp_path)
    with pytest.raises(ResultBackendError) as info:
        check_services(settings)
    assert "not supported" in str(info.value) and info.value.variable == "QTRAIN_RESULT_BACKEND"
    assert not (tmp_path / ".qtrain").exists()  # the store was not created


def test_the_store_check_creates_an_empty_sqlite_store(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "tasks.db"
    check_store(f"sqlite:///{path}", timeout_s=2)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_the_store_check_names_the_variable_for_a_path_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(TaskStoreError, match="QTRAIN_TASK_STORE") as info:
        check_store(f"sqlite:///{tmp_path / 'a_file' / 'sub' / 'tasks.db'}", timeout_s=2)
    assert "cannot create the directory" in str(info.value)


def test_the_store_check_refuses_a_url_that_is_no_task_store() -> None:
    with pytest.raises(ConfigError, match="QTRAIN_TASK_STORE='mysql://u:\\*\\*\\*@h/db' is not a task store"):
        check_store("mysql://u:pw@h/db", timeout_s=1)


def test_the_store_check_reaches_postgresql_and_creates_the_table(postgres_server: str) -> None:
    import psycopg

    check_store(postgres_server, timeout_s=3)
    with psycopg.connect(postgres_server) as conn:
        assert conn.execute("SELECT to_regclass('tasks')").fetchone() == ("tasks",)


def test_the_store_check_reads_mongodb_and_creates_its_indexes() -> None:
    with mongomock.patch(servers=(("db.example", 27017),)):
        check_store("mongodb://db.example:27017/qtrain_check", timeout_s=1)
        import pymongo

        indexes = pymongo.MongoClient("mongodb://db.example:27017")["qtrain_check"]["tasks"].index_information()
    assert {"pool_hash", "claim", "lease", "pool_seq"} <= set(indexes)


@pytest.mark.parametrize("error", [BrokerUnreachableError, ResultBackendError])
def test_the_errors_survive_pickling_with_their_fields(error: type[InfrastructureError]) -> None:
    # a Celery prefork child hands a task's exception to its parent pickled
    raised = error("broker x is down", service="broker", url="redis://:***@h/0", variable="QTRAIN_BROKER_URL")
    copy = pickle.loads(pickle.dumps(raised))
    assert type(copy) is error and str(copy) == str(raised)
    assert (copy.service, copy.url, copy.variable) == ("broker", "redis://:***@h/0", "QTRAIN_BROKER_URL")
    assert isinstance(copy, ConnectionError) == (error is BrokerUnreachableError)
