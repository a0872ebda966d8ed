"""``qtrain.train`` and ``qtrain.end_train``: claim the pool task named in the message and run it.

A task's own failure is recorded in the pool (which retries it with a new message), so these functions return
normally and the message is acked; only a killed worker leaves a message to be requeued.
"""

from __future__ import annotations

from typing import Any

from app.celery import app
from app.pool_runtime import pool_worker


@app.task(name="qtrain.train", bind=True)  # type: ignore[untyped-decorator]
def train(self: Any, pool: str, task_id: str) -> dict[str, Any]:
    """Train (or, for a delayed task, begin) pool task ``task_id``."""
    return pool_worker(self.request.hostname).run(pool, task_id, stage="train").to_json()


@app.task(name="qtrain.end_train", bind=True)  # type: ignore[untyped-decorator]
def end_train(self: Any, pool: str, task_id: str) -> dict[str, Any]:
    """Fit the begun (part_done) pool task ``task_id`` in its run."""
    return pool_worker(self.request.hostname).run(pool, task_id, stage="end").to_json()
