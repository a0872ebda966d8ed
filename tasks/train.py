"""``qtrain.train`` and ``qtrain.end_train``: claim the pool task named in the message and run it.

A task's own failure is recorded in the pool (which retries it with a new message), so these functions return
normally and the message is acked; only a killed worker leaves a message to be requeued. So is a worker process
that cannot set up (e.g. MLFLOW_TRACKING_URI unusable): each attempt it is sent fails with that error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.celery import app
from app.distributed.broker import END_TASK, TRAIN_TASK
from app.distributed.worker import run_task


@app.task(name=TRAIN_TASK, bind=True)  # type: ignore[untyped-decorator]
def train(self: Any, pool: str, task_id: str) -> dict[str, Any]:
    """Train (or, for a delayed task, begin) pool task ``task_id``."""
    return run_task(self.request.hostname, pool, task_id, "train", _publisher(self)).to_json()


@app.task(name=END_TASK, bind=True)  # type: ignore[untyped-decorator]
def end_train(self: Any, pool: str, task_id: str) -> dict[str, Any]:
    """Fit the begun (part_done) pool task ``task_id`` in its run."""
    return run_task(self.request.hostname, pool, task_id, "end", _publisher(self)).to_json()


def _publisher(task: Any) -> Callable[[dict[str, Any]], object]:
    """Each progress report of the attempt as the Celery task's state ``PROGRESS`` (Flower's task page shows its
    meta). The heartbeat thread calls it, where ``task.request`` is not this message's: the id is taken here."""
    message_id = task.request.id
    return lambda meta: task.update_state(task_id=message_id, state="PROGRESS", meta=meta)
