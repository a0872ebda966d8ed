"""The task pool's broker side on Celery + Redis: send claim messages, and see which tasks still have one.

Messages carry only ``(pool, task_id)``: the spec stays in the pool, the system of record. The Celery task id
is ``<pool task id>.<dispatch number>``, which lets :meth:`CeleryBroker.pending_task_ids` read the pool task
ids back from the Redis queue lists (kombu keeps each queue as a list of JSON envelopes) and from kombu's ``unacked``
hash (the messages workers have taken and not acknowledged). That is also why only Redis brokers are supported: no
other transport lets a client read a queue without consuming it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError

from app.core.credentials import mask_url
from app.core.errors import BrokerUnreachableError, ResultBackendUnreachableError
from app.distributed.celery_config import QUEUES
from app.distributed.infra_check import BACKEND_VARIABLE, BROKER_VARIABLE, check_broker_url
from app.taskpool.base import TaskRecord

log = logging.getLogger(__name__)

TRAIN_TASK, END_TASK = "qtrain.train", "qtrain.end_train"
QUEUE_READ_TIMEOUT_S = 10.0  # reading the queue lists: a hung Redis must not hang a reconciling client forever
UNACKED_KEY = "unacked"  # kombu's Redis transport: delivery tag -> [message, exchange, routing key] until the ack
HOLDER_REPLY_S = 1.0  # how long the workers are given to say which of the asked messages they hold
HELD_RECHECK_S = 30.0  # a message a worker said it holds counts as held this long before the workers are asked again


class CeleryBroker:
    """:class:`app.workflow.trainer_rm.Broker` on a Celery app whose broker is Redis.

    Raises:
        BrokerError: the app's broker is not Redis.
    """

    def __init__(self, celery: Celery, queues: Sequence[str] = QUEUES) -> None:
        self.url = str(celery.conf.broker_url)
        check_broker_url(self.url)
        self.celery, self.queues = celery, tuple(queues)
        self._redis: Any = None
        self._held_since: dict[str, float] = {}  # message id -> when a worker last said it holds it (monotonic)

    def dispatch(self, task: TaskRecord) -> None:
        """Send the claim message of ``task`` to its queue.

        Raises:
            BrokerUnreachableError: the broker did not answer.
            ResultBackendUnreachableError: the Redis result backend (Celery subscribes to the task's result
                there before it sends the message) did not answer.
        """
        name = END_TASK if task.status == "part_done" else TRAIN_TASK
        limits = task.limits
        with self._unreachable(f"sending the message of task {task.id}"):
            self.celery.send_task(
                name,
                args=[task.pool, task.id],
                queue=task.queue,
                routing_key=task.queue,
                task_id=f"{task.id}.{task.dispatches + 1}",
                shadow=f"{name} {task.label}" if task.label else None,  # Flower's task name: "qtrain.train lgbm seed=1"
                soft_time_limit=limits.get("soft_time_limit_s"),
                time_limit=limits.get("time_limit_s"),
            )
        log.info("sent %s for task %s to queue %s", name, task.id, task.queue)

    def pending_task_ids(self) -> set[str]:
        """Ids of the pool tasks with a message waiting in one of the queues.

        Raises:
            BrokerUnreachableError: Redis did not answer within ``QUEUE_READ_TIMEOUT_S``.
        """
        client = self._client()
        ids = set()
        with self._unreachable("reading the queues"):
            lists = [client.lrange(queue, 0, -1) for queue in self.queues]
        for raw in (item for items in lists for item in items):
            try:
                envelope = json.loads(raw)
                ids.add(str(envelope["headers"]["id"]).rsplit(".", 1)[0])
            except (ValueError, KeyError, TypeError):
                continue  # not one of ours
        return ids

    def held_task_ids(self, task_ids: Collection[str]) -> set[str]:
        """Those of ``task_ids`` whose message a live worker holds: taken from the queue (prefetched, reserved or
        started) and not acknowledged.

        A taken message sits in kombu's ``unacked`` hash until its ack, and a killed worker's stays there (until
        the visibility timeout), so a message found there is held only if a worker answers Celery's ``query_task``
        for it. The workers are asked only about such messages (none while every task is running or queued), and
        at most every ``HELD_RECHECK_S`` per message.

        Raises:
            BrokerUnreachableError: Redis did not answer.
        """
        wanted = set(task_ids)
        if not wanted:
            return set()
        with self._unreachable("reading the unacked messages"):
            values = self._client().hvals(UNACKED_KEY)
        unacked = {}  # message id -> pool task id
        for raw in values:
            try:
                message_id = str(json.loads(raw)[0]["headers"]["id"])
            except (ValueError, KeyError, TypeError, IndexError):
                continue  # not one of ours
            if message_id.rsplit(".", 1)[0] in wanted:
                unacked[message_id] = message_id.rsplit(".", 1)[0]
        now = time.monotonic()
        self._held_since = {m: t for m, t in self._held_since.items() if m in unacked and now - t < HELD_RECHECK_S}
        ask = [m for m in unacked if m not in self._held_since]
        if ask:
            with self._unreachable("asking the workers which messages they hold"):
                replies = self.celery.control.inspect(timeout=HOLDER_REPLY_S).query_task(*ask) or {}
            for held in replies.values():
                self._held_since.update((m, now) for m in held if m in unacked)
        return {unacked[m] for m in self._held_since}

    @contextmanager
    def _unreachable(self, doing: str) -> Iterator[None]:
        import redis.exceptions

        try:
            yield
        except (OperationalError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            masked = mask_url(self.url)
            raise BrokerUnreachableError(
                f"broker {masked} failed while {doing} ({_reason(exc)}); start Redis or set {BROKER_VARIABLE}",
                service="broker", url=masked, variable=BROKER_VARIABLE,
            ) from exc  # fmt: skip
        except RuntimeError as exc:  # Celery's Redis result backend gave up reconnecting (its retry limit)
            if not isinstance(exc.__cause__, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
                raise
            masked = mask_url(str(self.celery.conf.result_backend))
            raise ResultBackendUnreachableError(
                f"result backend {masked} failed while {doing} ({_reason(exc.__cause__)}); start it or set "
                f"{BACKEND_VARIABLE}",
                service="result backend", url=masked, variable=BACKEND_VARIABLE,
            ) from exc  # fmt: skip

    def _client(self) -> Any:
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(
                self.url, socket_connect_timeout=QUEUE_READ_TIMEOUT_S, socket_timeout=QUEUE_READ_TIMEOUT_S
            )
        return self._redis


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
