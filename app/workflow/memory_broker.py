"""The :class:`app.workflow.trainer_rm.Broker` protocol in memory: a fast seam for the pool's state machine.

Messages wait in one FIFO list per queue until :meth:`MemoryBroker.take` delivers the oldest (a worker received
it: it is no longer pending, as a message a Celery worker took off Redis); :meth:`MemoryBroker.lose` drops every
waiting message, as a broker restarted without persistence does. ``tests/unit/workflow/test_broker_contract.py``
holds it and the Celery broker to the same contract.
"""

from __future__ import annotations

from collections import defaultdict, deque
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
    """Claim messages in per-queue FIFO lists; every message ever sent is kept in :attr:`sent`."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[Message]] = defaultdict(deque)
        self.sent: list[Message] = []

    def dispatch(self, task: TaskRecord) -> None:
        """Queue the message for ``task``: "end" for a part_done task, "train" otherwise, on the task's queue."""
        stage: Stage = "end" if task.status == "part_done" else "train"
        message = Message(task.pool, task.id, stage, task.queue, f"{task.id}.{task.dispatches + 1}")
        self.queues[task.queue].append(message)
        self.sent.append(message)

    def pending_task_ids(self) -> set[str]:
        """Ids of the tasks with a message waiting in a queue (not yet taken)."""
        return {message.task_id for queue in self.queues.values() for message in queue}

    def take(self, queue: str = "cpu") -> Message | None:
        """Deliver the oldest message of ``queue`` (None when it is empty)."""
        waiting = self.queues[queue]
        return waiting.popleft() if waiting else None

    def lose(self) -> int:
        """Drop every waiting message; returns how many were lost."""
        lost = sum(len(queue) for queue in self.queues.values())
        self.queues.clear()
        return lost
