"""What only the MongoDB store promises: its indexes, aware times from any client, clear unreachable-server errors
that never show a password, and leaving a caller's client open."""

from __future__ import annotations

import time

import mongomock
import pytest

from app.core.errors import ConfigError, TaskStoreError
from app.taskpool.mongo import MongoTaskPool


def test_indexes_are_created_on_first_use() -> None:
    client = mongomock.MongoClient(tz_aware=True)
    pool = MongoTaskPool(client, database="db1", collection="jobs")
    assert "jobs" not in client["db1"].list_collection_names()
    pool.submit("p", {"a": 1}, "h")
    info = client["db1"]["jobs"].index_information()
    assert info["pool_hash"]["key"] == [("pool", 1), ("hash", 1)] and info["pool_hash"]["unique"]
    assert info["claim"]["key"] == [("pool", 1), ("status", 1), ("priority", -1), ("seq", 1)]
    assert info["lease"]["key"] == [("status", 1), ("lease_expires", 1)]


def test_times_are_aware_even_from_a_naive_client() -> None:
    pool = MongoTaskPool(mongomock.MongoClient(), database="db")  # tz_aware=False: BSON dates come back naive
    pool.submit("p", {}, "h")
    task = pool.claim("p", "w")
    assert task is not None
    assert task.created_at is not None and task.created_at.tzinfo is not None
    assert task.lease_expires is not None and task.lease_expires.tzinfo is not None
    assert pool.get(task.id) == task


def test_spec_and_result_are_stored_as_documents() -> None:
    client = mongomock.MongoClient(tz_aware=True)
    pool = MongoTaskPool(client)
    task, _ = pool.submit("p", {"model": {"lr": 0.1}, "segments": ["2020", "2021"]}, "h")
    claimed = pool.claim("p", "w")
    assert claimed is not None
    pool.finish(task.id, claimed.token or "", {"run_id": "r", "metrics": {"ic": 0.1}})
    raw = client["qtrain"]["tasks"].find_one({"_id": task.id})
    assert raw is not None
    assert raw["spec"] == {"model": {"lr": 0.1}, "segments": ["2020", "2021"]}
    assert raw["result"] == {"run_id": "r", "metrics": {"ic": 0.1}}


def test_a_caller_s_client_stays_open() -> None:
    client = mongomock.MongoClient(tz_aware=True)
    pool = MongoTaskPool(client)
    pool.submit("p", {}, "h")
    pool.close()
    assert client["qtrain"]["tasks"].count_documents({}) == 1


def test_an_unreachable_server_gives_a_clear_error_without_the_password() -> None:
    url = "mongodb://trainer:s3cr%40t@127.0.0.1:1/qtrain?authSource=admin"
    pool = MongoTaskPool(url, server_timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(TaskStoreError) as info:
        pool.submit("p", {}, "h")
    assert time.monotonic() - start < 5  # the client option took effect
    text = str(info.value)
    assert text.startswith("cannot reach MongoDB at mongodb://trainer:***@127.0.0.1:1/qtrain")
    assert "(credentials masked)" in text and "QTRAIN_TASK_STORE" in text and "start the server" in text
    assert "s3cr" not in text
    pool.close()


def test_a_string_that_is_not_a_mongodb_url_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"redis://u:\*\*\*@host"):
        MongoTaskPool("redis://u:secret@host:6379/0")


@pytest.mark.parametrize("url", ["mongodb://trainer:pa@ss@db/qtrain", "mongodb://trainer:pass@db:port/qtrain"])
def test_a_malformed_url_is_a_config_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError, match="not a valid MongoDB URL") as info:
        MongoTaskPool(url)
    assert "trainer:***@" in str(info.value) and "pa@ss" not in str(info.value) and ":pass@" not in str(info.value)
