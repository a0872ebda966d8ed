"""The task pool's broker side on Celery + Redis: send claim messages, and see which tasks still have one.

Messages carry only ``(pool, task_id)``: the spec stays in the pool, the system of record. The Celery task id
is ``<pool task id>.<dispatch number>``, which lets :meth:`CeleryBroker.pending_task_ids` read the pool task
ids back from the Redis queue lists (kombu keeps each queue as a list of JSON envelopes).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery

from app.celery import QUEUES
from app.errors import ConfigError
from app.taskpool.base import TaskRecord
from app.urls import mask_url

log = logging.getLogger(__name__)

TRAIN_TASK, END_TASK = "qtrain.train", "qtrain.end_train"


class CeleryBroker:
    """:class:`app.workflow.trainer_rm.Broker` on a Celery app whose broker is Redis."""

    def __init__(self, celery: Celery, queues: Sequence[str] = QUEUES) -> None:
        url = str(celery.conf.broker_url)
        if not url.startswith(("redis://", "rediss://")):
            raise ConfigError(f"QTRAIN_BROKER_URL={mask_url(url)}: the task pool needs a Redis broker (redis://...)")
        self.celery, self.queues = celery, tuple(queues)
        self._redis: Any = None

    def dispatch(self, task: TaskRecord) -> None:
        name = END_TASK if task.status == "part_done" else TRAIN_TASK
        limits = task.spec.get("limits")
        limits = limits if isinstance(limits, dict) else {}
        self.celery.send_task(
            name,
            args=[task.pool, task.id],
            queue=task.queue,
            routing_key=task.queue,
            task_id=f"{task.id}.{task.dispatches + 1}",
            soft_time_limit=limits.get("soft_time_limit_s"),
            time_limit=limits.get("time_limit_s"),
        )
        log.info("sent %s for task %s to queue %s", name, task.id, task.queue)

    def pending_task_ids(self) -> set[str]:
        client = self._client()
        ids = set()
        for queue in self.queues:
            for raw in client.lrange(queue, 0, -1):
                try:
                    envelope = json.loads(raw)
                    ids.add(str(envelope["headers"]["id"]).rsplit(".", 1)[0])
                except (ValueError, KeyError, TypeError):
                    continue  # not one of ours
        return ids

    def _client(self) -> Any:
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(str(self.celery.conf.broker_url))
        return self._redis
