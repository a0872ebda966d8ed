"""The :class:`app.workflow.trainer_rm.Broker` protocol in memory: a fast seam for the pool's state machine.

Messages wait in one FIFO list per queue until :meth:`MemoryBroker.take` delivers the oldest to a worker, which
holds it (no longer pending, as a message a Celery worker took off Redis) until :meth:`MemoryBroker.ack`;
:meth:`MemoryBroker.holder_died` loses the held messages (a killed worker's stay unacked, and no worker runs them);
:meth:`MemoryBroker.lose` drops every waiting message, as a broker restarted without persistence does.
``tests/unit/workflow/test_broker_contract.py`` holds it and the Celery broker to the same contract.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Collection
from dataclasses import dataclass

from app.taskpool.base import Stage, TaskRecord


@dataclass(frozen=True)
class Message:
    """One claim message: run ``stage`` of pool task ``task_id``."""

    pool: str
    task_id: str
    stage: Stage
    queue: str
    message_id: str  # "<task id>.<dispatch number>", as the Celery broker names its messages


class MemoryBroker:
    """Claim messages in per-queue FIFO lists, then held by the worker that took them until acked; every message
    ever sent is kept in :attr:`sent`. Thread-safe: a taken message is always either waiting or held."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[Message]] = defaultdict(deque)
        self.held: dict[str, Message] = {}  # message id -> message taken by a live worker, not yet acked
        self.sent: list[Message] = []
        self._lock = threading.Lock()

    def dispatch(self, task: TaskRecord) -> None:
        """Queue the message for ``task``: "end" for a part_done task, "train" otherwise, on the task's queue."""
        stage: Stage = "end" if task.status == "part_done" else "train"
        message = Message(task.pool, task.id, stage, task.queue, f"{task.id}.{task.dispatches + 1}")
        with self._lock:
            self.queues[task.queue].append(message)
            self.sent.append(message)

    def pending_task_ids(self) -> set[str]:
        """Ids of the tasks with a message waiting in a queue (not yet taken)."""
        with self._lock:
            return {message.task_id for queue in self.queues.values() for message in queue}

    def held_task_ids(self, task_ids: Collection[str]) -> set[str]:
        """Those of ``task_ids`` whose message a live worker took and has not acked."""
        with self._lock:
            return {message.task_id for message in self.held.values() if message.task_id in task_ids}

    def take(self, queue: str = "cpu") -> Message | None:
        """Deliver the oldest message of ``queue`` to a worker, which holds it until :meth:`ack` (None when the
        queue is empty)."""
        with self._lock:
            waiting = self.queues[queue]
            if not waiting:
                return None
            message = waiting.popleft()
            self.held[message.message_id] = message
            return message

    def ack(self, message: Message) -> None:
        """The worker is done with ``message``."""
        with self._lock:
            self.held.pop(message.message_id, None)

    def holder_died(self) -> int:
        """The workers holding messages were killed: their messages are lost; returns how many."""
        with self._lock:
            lost = len(self.held)
            self.held.clear()
            return lost

    def lose(self) -> int:
        """Drop every waiting message; returns how many were lost."""
        with self._lock:
            lost = sum(len(queue) for queue in self.queues.values())
            self.queues.clear()
            return lost
