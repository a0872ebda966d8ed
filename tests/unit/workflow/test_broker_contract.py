"""One contract for both brokers: the in-memory one the fast tests use and the Celery broker on a real Redis
(its own redis-server on a free port, so no other test's queues are seen)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.taskpool import SQLiteTaskPool
from app.taskpool.base import TaskPool
from app.workflow.memory_broker import MemoryBroker
from app.workflow.trainer_rm import send

# deliver the oldest message of a queue to a worker that is then killed: (task id, stage), None when it is empty
Take = Callable[[str], tuple[str, str] | None]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    from tests.integration.celery_harness import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.kill()


def _memory() -> tuple[Any, Take]:
    broker = MemoryBroker()

    def take(queue: str) -> tuple[str, str] | None:
        message = broker.take(queue)
        broker.holder_died()
        return (message.task_id, message.stage) if message else None

    return broker, take


def _celery(url: str) -> tuple[Any, Take]:
    import redis

    from app.core.settings import load_settings
    from app.distributed.broker import END_TASK, TRAIN_TASK, CeleryBroker
    from app.distributed.celery_config import make_app

    settings = load_settings({"QTRAIN_BROKER_URL": f"{url}/0", "QTRAIN_RESULT_BACKEND": f"{url}/1"}, Path.cwd())
    client = redis.Redis.from_url(f"{url}/0")
    client.flushdb()

    stages = {TRAIN_TASK: "train", END_TASK: "end"}

    def take(queue: str) -> tuple[str, str] | None:
        # a worker's receive as kombu's Redis transport does it (pop the far end, keep it in the unacked hash until
        # the ack), by no live worker: as if the worker was killed after receiving
        raw = client.rpop(queue)
        if raw is None:
            return None
        envelope = json.loads(raw)
        client.hset("unacked", envelope["properties"]["delivery_tag"], json.dumps([envelope, queue, queue]))
        headers = envelope["headers"]
        return str(headers["id"]).rsplit(".", 1)[0], stages[headers["task"]]

    return CeleryBroker(make_app(settings)), take


@pytest.fixture(params=["memory", "celery"])
def broker(request: pytest.FixtureRequest) -> tuple[Any, Take]:
    return _memory() if request.param == "memory" else _celery(request.getfixturevalue("redis_url"))


@pytest.fixture
def pool(tmp_path: Path) -> TaskPool:
    return SQLiteTaskPool(tmp_path / "tasks.db")


def test_a_sent_message_is_pending_until_a_worker_takes_it(broker: tuple[Any, Take], pool: TaskPool) -> None:
    sender, take = broker
    first, _ = pool.submit("p", {"seed": 1}, "h1")
    second, _ = pool.submit("p", {"seed": 2}, "h2", queue="gpu")
    send(pool, sender, first)
    send(pool, sender, second)
    assert sender.pending_task_ids() == {first.id, second.id}
    assert pool.get(first.id).dispatches == 1 and pool.get(first.id).dispatched_at is not None
    assert take("cpu") == (first.id, "train") and take("cpu") is None  # each message on its task's queue, once
    assert sender.pending_task_ids() == {second.id}
    assert take("gpu") == (second.id, "train")
    assert sender.pending_task_ids() == set()


def test_a_message_taken_by_a_killed_worker_is_not_held(broker: tuple[Any, Take], pool: TaskPool) -> None:
    sender, take = broker
    task, _ = pool.submit("p", {"seed": 1}, "h1")
    send(pool, sender, task)
    assert sender.held_task_ids({task.id}) == set()  # waiting in its queue, not held
    assert take("cpu") == (task.id, "train")
    assert sender.pending_task_ids() == set() and sender.held_task_ids({task.id}) == set()
    assert sender.held_task_ids(set()) == set()


def test_messages_are_delivered_oldest_first(broker: tuple[Any, Take], pool: TaskPool) -> None:
    sender, take = broker
    tasks = [pool.submit("p", {"seed": i}, f"h{i}")[0] for i in range(3)]
    for task in tasks:
        send(pool, sender, task)
    assert [take("cpu") for _ in tasks] == [(t.id, "train") for t in tasks]


def test_a_part_done_task_gets_an_end_message(broker: tuple[Any, Take], pool: TaskPool) -> None:
    sender, take = broker
    task, _ = pool.submit("p", {"seed": 1}, "h1", delayed=True)
    claimed = pool.claim("p", "w", task_id=task.id)
    assert claimed is not None and pool.part_done(task.id, claimed.token or "", "run-1")
    send(pool, sender, pool.get(task.id))
    assert sender.pending_task_ids() == {task.id} and take("cpu") == (task.id, "end")
