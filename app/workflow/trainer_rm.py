"""Trainers on the task pool (Qlib's ``TrainerRM`` / ``DelayTrainerRM``) and the reconciler.

``TrainerRM.train(specs)`` submits each spec to the pool (deduplicated by hash: a resubmitted sweep trains
nothing new), nudges a worker through the broker for every new waiting task, and waits with a progress bar,
reconciling as it goes: expired leases go back to waiting, and waiting tasks without a live broker message get
one. Results come back in task order. The broker is an injected :class:`Broker` (Celery + Redis in
:mod:`app.distributed.broker`), so this module knows nothing of Celery.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from app.core.errors import InfrastructureError, QtrainError, TaskStoreError
from app.core.progress import ProgressBar
from app.dataset.cache import FeatureCache
from app.taskpool.base import DEFAULT_LEASE_S, DEFAULT_MAX_ATTEMPTS, FINAL_STATUSES, TaskPool, TaskRecord
from app.tracking.manager import ExpManager
from app.workflow.pool_worker import PoolWorker
from app.workflow.spec import TaskSpec
from app.workflow.train import Components, TaskResult
from app.workflow.trainer import RunSettings, TrainerR, TrainerServices, TrainOutcome

log = logging.getLogger(__name__)

E_RESUME = (
    "the tasks stored so far stay in the pool; once it is fixed, run the same command again to resume (a spec "
    "already in the pool is not stored twice, and a stored task without a message gets one)"
)
STATUS_POLL_S = 0.2  # one read of the pool's task rows: cheap next to the tasks it waits for

DISPATCH_GRACE_S = 10.0  # a message sent this recently counts as live even if a worker already took it
OUTAGE_MAX_PAUSE_S = 10.0  # the longest pause between retries while the broker or task store is down


class Broker(Protocol):
    """Sends claim messages and says which tasks still have one: waiting in a queue, or held by a live worker."""

    def dispatch(self, task: TaskRecord) -> None:
        """Send the message for ``task``: train (waiting) or end (part_done), to the task's queue."""
        ...

    def pending_task_ids(self) -> set[str]:
        """Ids of the pool tasks that have a message in a ready queue (not yet delivered to a worker)."""
        ...

    def held_task_ids(self, task_ids: Collection[str]) -> set[str]:
        """Those of ``task_ids`` whose message a live worker holds (delivered to it, not yet acknowledged)."""
        ...


class PoolServices(TrainerServices, Protocol):
    """What a pool trainer takes from the process's wiring besides a local trainer's."""

    @property
    def pool(self) -> TaskPool: ...

    @property
    def broker(self) -> Broker: ...

    @property
    def lease_s(self) -> float: ...

    @property
    def checkpoint_dir(self) -> Path: ...


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
    grace_s: float | None = None,
) -> ReconcileReport:
    """Return expired leases to the pool, then give every waiting task (and, with ``ends``, every part_done
    task) that has no live broker message a new one.

    A message is live while it sits in a ready queue, while a live worker holds it (prefetched or reserved behind
    another task, not yet claimed), or for ``grace_s`` (default ``DISPATCH_GRACE_S``) after it was sent; a message
    a dead worker took (Redis keeps it unacked until the visibility timeout) or a restarted broker lost is not.
    Re-sending cannot duplicate work: the pool's claim lets one attempt run, and a late duplicate message finds
    the task running or done.
    ``end_run(run_id)`` ends the MLflow run of an expired attempt (KILLED), when given.
    """
    expired = pool.expire_leases(pool_name)
    for task in expired:
        log.warning("task %s: lease of %s expired; now %s", task.id, task.worker, task.status)
        if end_run is not None and task.run_id and task.stage == "train" and not task.delayed:
            end_run(task.run_id)
    pending = broker.pending_task_ids()
    now = datetime.now(UTC)
    grace = DISPATCH_GRACE_S if grace_s is None else grace_s
    unqueued = [
        task
        for task in pool.list(pool_name, ["waiting", "part_done"] if ends else ["waiting"])
        if task.id not in pending
        and (task.dispatched_at is None or (now - task.dispatched_at).total_seconds() >= grace)
    ]
    held = broker.held_task_ids({task.id for task in unqueued}) if unqueued else set()
    dispatched = 0
    for task in (task for task in unqueued if task.id not in held):
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
        limits: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(manager, build, experiment_name=experiment_name, cache=cache, fail_fast=fail_fast)
        self.limits = dict(limits or {})  # Celery time limits of the tasks it submits (not part of their specs)
        self.pool, self.broker = pool, broker
        self.pool_name = pool_name or experiment_name
        self.priority, self.max_attempts = priority, max_attempts
        self.wait_for_results, self.work_locally = wait, work_locally
        self.poll_s, self.timeout_s, self.lease_s = poll_s, timeout_s, lease_s
        self.checkpoint_root = checkpoint_root

    @classmethod
    def _wiring(cls, services: PoolServices, run: RunSettings) -> dict[str, Any]:
        """A local trainer's services (figures are the workers' business), plus the task store, the broker, the
        lease and checkpoints; ``run.limits`` become its tasks' time limits."""
        wiring = super()._wiring(services, run)
        del wiring["draw_plots_later"]
        pool = {"pool": services.pool, "broker": services.broker, "lease_s": services.lease_s}
        return {**wiring, **pool, "checkpoint_root": services.checkpoint_dir, "limits": run.limits}

    def run(self, specs: Sequence[TaskSpec]) -> TrainOutcome:
        """Submit ``specs`` and, unless ``wait=False``, wait for the workers (a delayed trainer: to begin, then,
        unless ``end=False``, to fit them).

        Raises:
            InfrastructureError, TaskStoreError: the broker or the store failed; the message says how to resume.
        """
        try:
            if not self.wait_for_results:
                results = self.train(specs)
                reconcile(self.pool, self.pool_name, self.broker)  # what an interrupted submission left unsent
                note = f"submitted {len(specs)} task(s) to pool {self.pool_name}; follow with: qtrain pool status"
                return TrainOutcome(results, f"{note} {self.pool_name}")
            return super().run(specs)
        except (InfrastructureError, TaskStoreError) as exc:
            exc.args = (f"{exc}; {E_RESUME}",)
            raise

    def submit(
        self, specs: Sequence[TaskSpec], *, limits: Mapping[str, float] | None = None, labels: Sequence[str] = ()
    ) -> list[TaskRecord]:
        """Validate (build) every spec, then add them to the pool and dispatch the new ones; ``limits`` (default:
        the trainer's) are the Celery time limits of their messages, ``labels`` (one per spec, or none) what people
        tell the tasks by (``lgbm seed=1``: Flower's task name, ``qtrain pool list``; default: each spec's run name,
        ``lgbm-alpha158-seed0-3fa2c1``, e.g. for the windows of a rolling ``trainer=celery`` run).

        Raises:
            ConfigError, DataError: a spec cannot be built; nothing has been submitted then.
        """
        queues = [self.build(spec).model.queue for spec in specs]  # every spec is checked before any is queued
        tasks = []
        for spec, queue, label in zip(specs, queues, labels or [s.run_name for s in specs], strict=True):
            task, created = self.pool.submit(
                self.pool_name, spec.body, spec.hash, queue=queue, experiment=self.experiment_name,
                priority=self.priority, max_attempts=self.max_attempts, delayed=self.delayed,
                limits=self.limits if limits is None else limits, label=label,
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

        The tasks' status is read every ``STATUS_POLL_S`` at most (a sweep ends as soon as its last task does, not
        up to ``poll_s`` later); lost messages are looked for (``reconcile``) every ``poll_s``.

        Raises:
            PoolWaitTimeout: ``timeout_s`` passed first.
            QtrainError: a task failed and ``fail_fast``.
        """
        final = {*FINAL_STATUSES, *until}
        started = time.monotonic()
        runner = self._runner()
        outage = _Outage(self.poll_s)
        errors: dict[str, str] = {}  # the last attempt error seen per task
        pending = len(task_ids)
        reconciled = float("-inf")
        with ProgressBar(len(task_ids), f"pool {self.pool_name}", unit="tasks") as bar:
            while True:
                try:
                    tasks = self._poll(task_ids, final, bar, errors)
                    pending = sum(t.status not in final for t in tasks)
                    if not pending:
                        outage.over()
                        return [_result(t) for t in tasks]
                    if time.monotonic() - reconciled >= self.poll_s:
                        reconcile(self.pool, self.pool_name, self.broker, ends=ends, end_run=runner.end_killed_run)
                        reconciled = time.monotonic()
                    worked = self.work_locally and runner.run(self.pool_name, stage="end" if ends else "train")
                except outage_errors() as exc:  # the workers go on without us: ride it out, read the pool later
                    pause = outage.failed(exc)
                    bar.update(note=f"{outage.what} unreachable, retrying")
                else:
                    outage.over()
                    pause = 0.0 if worked and worked.action != "skipped" else min(self.poll_s, STATUS_POLL_S)
                if self.timeout_s is not None and time.monotonic() - started > self.timeout_s:
                    raise PoolWaitTimeout(
                        f"{pending} of {len(task_ids)} tasks of pool {self.pool_name} are still pending after "
                        f"{self.timeout_s:g} s; they stay in the pool (qtrain pool status {self.pool_name})"
                        + "".join(f"; task {i} last failed: {e}" for i, e in list(errors.items())[:3])
                        + (f"; {outage.what} unreachable for {outage.duration():.0f} s" if outage.since else "")
                    )
                time.sleep(pause)

    def _poll(
        self, task_ids: Sequence[str], final: set[str], bar: ProgressBar, errors: dict[str, str]
    ) -> list[TaskRecord]:
        """The tasks, read once; updates the bar and logs each new attempt error.

        Raises:
            QtrainError: a task failed and ``fail_fast``.
        """
        by_id = {t.id: t for t in self.pool.list(self.pool_name)}
        tasks = [by_id[i] if i in by_id else self.pool.get(i) for i in task_ids]
        for task in tasks:
            if task.error and errors.get(task.id) != task.error:
                errors[task.id] = task.error
                log.warning(
                    "task %s: an attempt failed (%d of %d made, now %s): %s",
                    task.id, task.attempts, task.max_attempts, task.status, task.error,
                )  # fmt: skip
        settled = sum(t.status in final for t in tasks)
        counts = {s: sum(t.status == s for t in tasks) for s in ("waiting", "running", "part_done", "failed")}
        bar.update(completed=settled, note=" ".join(f"{k} {v}" for k, v in counts.items() if v))
        failed = [t for t in tasks if t.status == "failed"]
        if failed and self.fail_fast:
            raise QtrainError(f"task {failed[0].id} failed: {failed[0].error}")
        return tasks

    def _runner(self) -> PoolWorker:
        return PoolWorker(
            self.pool, self.manager, self.build, worker=f"{socket.gethostname()}:client", cache=self.cache,
            checkpoint_root=self.checkpoint_root, lease_s=self.lease_s,
            redispatch=lambda task: send(self.pool, self.broker, task),
        )  # fmt: skip


class DelayTrainerRM(TrainerRM):
    """Qlib's ``DelayTrainerRM``: ``train`` has workers begin each task (waiting → part_done, a SCHEDULED run
    per task); ``end_train`` has them fit it (part_done → running → done). ``end=False``: ``run`` only begins."""

    delayed: bool = True

    def __init__(self, *args: Any, end: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.end = end

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


@functools.cache
def outage_errors() -> tuple[type[Exception], ...]:
    """The errors that mean the broker or the task store cannot be reached for now.

    The broker's are those of its Redis client and of kombu (which wraps them when a message is sent), imported
    only if installed: this module does not depend on them.
    """
    errors: list[type[Exception]] = [TaskStoreError, ConnectionError, TimeoutError]
    with contextlib.suppress(ImportError):
        import redis.exceptions

        errors += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    with contextlib.suppress(ImportError):
        from kombu.exceptions import OperationalError

        errors.append(OperationalError)
    return tuple(errors)


class _Outage:
    """One outage of the broker or the task store while waiting: a line when it starts and one when it ends,
    and the pause before each retry (doubling from ``first_s`` up to ``OUTAGE_MAX_PAUSE_S``)."""

    def __init__(self, first_s: float) -> None:
        self.first_s = max(first_s, 0.1)
        self.since: float | None = None
        self.what = ""
        self.failures = 0

    def duration(self) -> float:
        return 0.0 if self.since is None else time.monotonic() - self.since

    def failed(self, exc: Exception) -> float:
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            service = "task store" if isinstance(exc, TaskStoreError) else getattr(exc, "service", "broker")
            self.what = f"the {service}"
            log.warning(
                "%s is unreachable (%s: %s); still waiting, retrying with backoff (the workers go on)",
                self.what, type(exc).__name__, exc,
            )  # fmt: skip
        return min(self.first_s * 2.0 ** (self.failures - 1), OUTAGE_MAX_PAUSE_S)

    def over(self) -> None:
        if self.since is not None:
            log.warning("%s is reachable again after %.0f s; waiting goes on", self.what, self.duration())
            self.since, self.failures = None, 0


def _result(task: TaskRecord) -> TaskResult:
    if task.status == "done" and task.result:
        return TaskResult(str(task.result.get("run_id") or ""), dict(task.result.get("metrics") or {}))
    if task.status in ("failed", "cancelled"):
        return TaskResult(task.run_id or "", error=task.error or task.status)
    return TaskResult(task.run_id or "")
