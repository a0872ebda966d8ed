"""Trainers on the task pool (Qlib's ``TrainerRM`` / ``DelayTrainerRM``) and the reconciler.

``TrainerRM.train(specs)`` submits each spec to the pool (deduplicated by hash: a resubmitted sweep trains
nothing new), nudges a worker through the broker for every new waiting task, and waits with a progress bar,
reconciling as it goes: expired leases go back to waiting, and waiting tasks without a live broker message get
one. Results come back in task order. The broker is an injected :class:`Broker` (Celery + Redis in
:mod:`app.broker`), so this module knows nothing of Celery.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from app.dataset.cache import FeatureCache
from app.errors import QtrainError
from app.progress import ProgressBar
from app.taskpool.base import DEFAULT_LEASE_S, DEFAULT_MAX_ATTEMPTS, TaskPool, TaskRecord
from app.tracking.manager import ExpManager
from app.workflow.pool_worker import PoolWorker
from app.workflow.spec import TaskSpec
from app.workflow.train import Components, TaskResult
from app.workflow.trainer import TrainerR

log = logging.getLogger(__name__)

DISPATCH_GRACE_S = 10.0  # a message sent this recently counts as live even if a worker already took it


class Broker(Protocol):
    """Sends claim messages and says which tasks still have one waiting in a queue."""

    def dispatch(self, task: TaskRecord) -> None:
        """Send the message for ``task``: train (waiting) or end (part_done), to the task's queue."""
        ...

    def pending_task_ids(self) -> set[str]:
        """Ids of the pool tasks that have a message in a ready queue (not yet delivered to a worker)."""
        ...


class PoolWaitTimeout(QtrainError):
    """Waiting for pool tasks took longer than allowed; the tasks stay in the pool."""


def send(pool: TaskPool, broker: Broker, task: TaskRecord) -> None:
    """Dispatch ``task`` and note it in the pool."""
    broker.dispatch(task)
    pool.mark_dispatched(task.id)


@dataclass(frozen=True)
class ReconcileReport:
    expired: int
    dispatched: int


def reconcile(
    pool: TaskPool,
    pool_name: str,
    broker: Broker,
    *,
    ends: bool = False,
    end_run: Callable[[str], object] | None = None,
    grace_s: float = DISPATCH_GRACE_S,
) -> ReconcileReport:
    """Return expired leases to the pool, then give every waiting task (and, with ``ends``, every part_done
    task) that has no live broker message a new one.

    A message is live while it sits in a ready queue, or for ``grace_s`` after it was sent; a message a dead
    worker took (Redis keeps it unacked until the visibility timeout) is not. Re-sending cannot duplicate work:
    the pool's claim lets one attempt run, and a late duplicate message finds the task running or done.
    ``end_run(run_id)`` ends the MLflow run of an expired attempt (KILLED), when given.
    """
    expired = pool.expire_leases(pool_name)
    for task in expired:
        log.warning("task %s: lease of %s expired; now %s", task.id, task.worker, task.status)
        if end_run is not None and task.run_id and task.stage == "train" and not task.delayed:
            end_run(task.run_id)
    pending = broker.pending_task_ids()
    now = datetime.now(UTC)
    dispatched = 0
    for task in pool.list(pool_name, ["waiting", "part_done"] if ends else ["waiting"]):
        recent = task.dispatched_at is not None and (now - task.dispatched_at).total_seconds() < grace_s
        if task.id in pending or recent:
            continue
        log.info("task %s (%s) has no live message: sending one", task.id, task.status)
        send(pool, broker, task)
        dispatched += 1
    return ReconcileReport(len(expired), dispatched)


class TrainerRM(TrainerR):
    """Qlib's ``TrainerRM`` on the task pool and a broker; ``train`` returns results in task order.

    ``wait=False`` only submits (results carry no run yet; ``qtrain pool status`` follows them).
    ``work_locally=True`` makes this process a worker too (Qlib's default, ``skip_run_task=False``): it trains
    claimable tasks itself while it waits.
    """

    def __init__(
        self,
        manager: ExpManager,
        build: Callable[[TaskSpec], Components],
        *,
        experiment_name: str,
        cache: FeatureCache | None = None,
        fail_fast: bool = False,
        pool: TaskPool,
        broker: Broker,
        pool_name: str | None = None,
        priority: int = 0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        wait: bool = True,
        work_locally: bool = False,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        checkpoint_root: Path | None = None,
    ) -> None:
        super().__init__(manager, build, experiment_name=experiment_name, cache=cache, fail_fast=fail_fast)
        self.pool, self.broker = pool, broker
        self.pool_name = pool_name or experiment_name
        self.priority, self.max_attempts = priority, max_attempts
        self.wait_for_results, self.work_locally = wait, work_locally
        self.poll_s, self.timeout_s, self.lease_s = poll_s, timeout_s, lease_s
        self.checkpoint_root = checkpoint_root

    def submit(self, specs: Sequence[TaskSpec]) -> list[TaskRecord]:
        """Validate (build) every spec, then add them to the pool and dispatch the new ones.

        Raises:
            ConfigError, DataError: a spec cannot be built; nothing has been submitted then.
        """
        queues = [self.build(spec).model.queue for spec in specs]  # every spec is checked before any is queued
        tasks = []
        for spec, queue in zip(specs, queues, strict=True):
            task, created = self.pool.submit(
                self.pool_name, spec.body, spec.hash, queue=queue, experiment=self.experiment_name,
                priority=self.priority, max_attempts=self.max_attempts, delayed=self.delayed,
            )  # fmt: skip
            if created:
                send(self.pool, self.broker, task)
            else:
                log.info("task %s already in pool %s (%s): not resubmitted", task.id, self.pool_name, task.status)
            tasks.append(task)
        return tasks

    def train(self, specs: Sequence[TaskSpec]) -> list[TaskResult]:
        tasks = self.submit(specs)
        if not self.wait_for_results:
            return [TaskResult(t.run_id or "") for t in tasks]
        return self.wait([t.id for t in tasks], until=("part_done",) if self.delayed else ())

    def wait(self, task_ids: Sequence[str], *, until: Sequence[str] = (), ends: bool = False) -> list[TaskResult]:
        """Block until every task is done or failed (or in a status of ``until``); results in the given order.

        Raises:
            PoolWaitTimeout: ``timeout_s`` passed first.
            QtrainError: a task failed and ``fail_fast``.
        """
        final = {"done", "failed", *until}
        started = time.monotonic()
        runner = self._runner()
        with ProgressBar(len(task_ids), f"pool {self.pool_name}", unit="tasks") as bar:
            while True:
                by_id = {t.id: t for t in self.pool.list(self.pool_name)}
                tasks = [by_id[i] if i in by_id else self.pool.get(i) for i in task_ids]
                settled = sum(t.status in final for t in tasks)
                counts = {s: sum(t.status == s for t in tasks) for s in ("waiting", "running", "part_done", "failed")}
                bar.update(completed=settled, note=" ".join(f"{k} {v}" for k, v in counts.items() if v))
                failed = [t for t in tasks if t.status == "failed"]
                if failed and self.fail_fast:
                    raise QtrainError(f"task {failed[0].id} failed: {failed[0].error}")
                if settled == len(tasks):
                    return [_result(t) for t in tasks]
                if self.timeout_s is not None and time.monotonic() - started > self.timeout_s:
                    raise PoolWaitTimeout(
                        f"{len(tasks) - settled} of {len(tasks)} tasks of pool {self.pool_name} are still pending "
                        f"after {self.timeout_s:g} s; they stay in the pool (qtrain pool status {self.pool_name})"
                    )
                reconcile(self.pool, self.pool_name, self.broker, ends=ends, end_run=runner.end_killed_run)
                if (
                    self.work_locally
                    and runner.run(self.pool_name, stage="end" if ends else "train").action != "skipped"
                ):
                    continue
                time.sleep(self.poll_s)

    def _runner(self) -> PoolWorker:
        return PoolWorker(
            self.pool, self.manager, self.build, worker=f"{socket.gethostname()}:client", cache=self.cache,
            checkpoint_root=self.checkpoint_root, lease_s=self.lease_s,
            redispatch=lambda task: send(self.pool, self.broker, task),
        )  # fmt: skip


class DelayTrainerRM(TrainerRM):
    """Qlib's ``DelayTrainerRM``: ``train`` has workers begin each task (waiting → part_done, a SCHEDULED run
    per task); ``end_train`` has them fit it (part_done → running → done)."""

    delayed: bool = True

    def end_train(self, results: Sequence[TaskResult]) -> list[TaskResult]:
        by_run = {t.run_id: t for t in self.pool.list(self.pool_name) if t.run_id}
        ids = []
        for result in results:
            task = by_run.get(result.run_id)
            if task is None:
                raise QtrainError(f"run {result.run_id!r} belongs to no task of pool {self.pool_name}")
            if task.status == "part_done":
                send(self.pool, self.broker, task)
            ids.append(task.id)
        return self.wait(ids, ends=True)


def _result(task: TaskRecord) -> TaskResult:
    if task.status == "done" and task.result:
        return TaskResult(str(task.result.get("run_id") or ""), dict(task.result.get("metrics") or {}))
    if task.status == "failed":
        return TaskResult(task.run_id or "", error=task.error or "failed")
    return TaskResult(task.run_id or "")
