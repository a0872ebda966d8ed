"""Running pool tasks: claim, heartbeat, train (or begin / end), and record the outcome in the pool.

The same code runs inside a Celery worker (``tasks/``) and in ``qtrain pool work`` / ``TrainerRM(work_locally)``.
The pool, not the broker, decides who trains what: a broker message is only a nudge to claim a task, so a stale
or duplicated message finds the task running under someone else's live lease (or done) and does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.core.interrupt import TaskStopped, stop_when
from app.core.progress import report_to
from app.dataset.cache import FeatureCache
from app.taskpool.base import DEFAULT_LEASE_S, Stage, TaskPool, TaskRecord
from app.tracking.manager import ExpManager
from app.workflow.spec import TaskSpec
from app.workflow.train import Components, begin_task_train, end_task_train, task_train

log = logging.getLogger(__name__)

RUNNING, KILLED = "RUNNING", "KILLED"


@dataclass(frozen=True)
class AttemptOutcome:
    """What one delivery did: ``trained`` / ``begun`` / ``ended``, ``retrying``, ``failed``, or ``skipped``."""

    action: str
    task_id: str
    status: str
    run_id: str | None = None
    error: str | None = None
    metrics: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class PoolWorker:
    """Executes pool tasks in this process with everything a task needs."""

    pool: TaskPool
    manager: ExpManager
    build: Callable[[TaskSpec], Components]
    worker: str
    cache: FeatureCache | None = None
    checkpoint_root: Path | None = None
    lease_s: float = DEFAULT_LEASE_S
    redispatch: Callable[[TaskRecord], object] | None = None  # a message for a failed attempt's retry
    draw_plots_later: bool = False  # figures drawn after the task's result is recorded (a warm worker)
    checkpoint_artifacts: bool = False  # torch checkpoints also go to the run's artifacts (hosts share no disk)

    def run(
        self,
        pool_name: str,
        task_id: str | None = None,
        *,
        stage: Stage = "train",
        on_progress: Callable[[dict[str, Any]], object] | None = None,
    ) -> AttemptOutcome:
        """Claim ``task_id`` (or the pool's next task) and run it to an outcome recorded in the pool.

        What the attempt reports of its progress (stage, round or epoch, loss) goes to the pool with each heartbeat,
        and to ``on_progress`` too (e.g. the Celery task's state). Never raises for a task's own failure: the pool
        keeps the error and the attempt count.
        """
        task = self.pool.claim(pool_name, self.worker, lease_s=self.lease_s, task_id=task_id, stage=stage)
        if task is None:
            status = self.pool.get(task_id).status if task_id else "none"
            log.info("nothing to claim in pool %s (task %s is %s)", pool_name, task_id or "-", status)
            return AttemptOutcome("skipped", task_id or "", status)
        assert task.token is not None
        self._end_abandoned_run(task)
        lost = threading.Event()
        latest: dict[str, Any] = {}
        runs: list[str] = []  # the MLflow run this attempt started, whatever the pool says of the task later
        with _Heartbeat(self.pool, task, self.lease_s, lost, latest, on_progress), self._checkpoints(task, runs):
            try:
                # training stops at its next round or epoch once the heartbeat is refused
                with stop_when(lost), report_to(latest.update):
                    outcome = self._execute(task, runs.append)
            except TaskStopped:
                return self._stopped(task, runs[-1] if runs else None)
            except Exception as exc:  # the task's own failure: recorded, retried by the pool
                return self._failed(task, f"{type(exc).__name__}: {exc}")
        if lost.is_set() or not self._record(task, outcome):
            # another attempt owns the task now: this attempt's run must not count as the task's result
            if outcome.run_id:
                self._end_run(outcome.run_id, KILLED)
            log.warning("task %s: lease lost while running; its run %s was ended KILLED", task.id, outcome.run_id)
            return replace(outcome, action="superseded", status=self.pool.get(task.id).status)
        return outcome

    def _checkpoints(self, task: TaskRecord, runs: list[str]) -> contextlib.AbstractContextManager[object]:
        """With ``checkpoint_artifacts``: the previous attempt's checkpoint (an artifact of its run) is brought into
        this host's checkpoint directory, and this attempt's checkpoints go to its own run while it trains."""
        if not self.checkpoint_artifacts or self.checkpoint_root is None or task.stage != "train" or task.delayed:
            return contextlib.nullcontext()
        from app.workflow.checkpoint_sync import CheckpointUploader, download_checkpoint

        directory = self.checkpoint_root / task.hash  # where _build points the model (the spec's hash)
        if task.run_id:
            download_checkpoint(self.manager.client, task.run_id, directory)
        return CheckpointUploader(self.manager.client, directory, lambda: runs[-1] if runs else None, self.lease_s / 3)

    def _execute(self, task: TaskRecord, started: Callable[[str], object]) -> AttemptOutcome:
        token = task.token or ""
        if task.stage == "end":  # the spec is read back from the begun run
            ended = end_task_train(task.run_id or "", self.manager, self._build, cache=self.cache)
            return AttemptOutcome("ended", task.id, "done", ended.run_id, metrics=ended.metrics)
        spec = TaskSpec.from_mapping(task.spec)
        if task.delayed:
            run_id = begin_task_train(spec, self.manager, experiment_name=task.experiment)
            self.pool.set_run(task.id, token, run_id)
            return AttemptOutcome("begun", task.id, "part_done", run_id)
        trained = task_train(
            spec, self._build(spec), self.manager, experiment_name=task.experiment, cache=self.cache,
            on_run=lambda run_id: (started(run_id), self.pool.set_run(task.id, token, run_id)),
            draw_plots_later=self.draw_plots_later,
        )  # fmt: skip
        return AttemptOutcome("trained", task.id, "done", trained.run_id, metrics=trained.metrics)

    def _record(self, task: TaskRecord, outcome: AttemptOutcome) -> bool:
        token = task.token or ""
        if outcome.action == "begun":
            return self.pool.part_done(task.id, token, outcome.run_id or "")
        return self.pool.finish(task.id, token, {"run_id": outcome.run_id, "metrics": outcome.metrics or {}})

    def _stopped(self, task: TaskRecord, run_id: str | None) -> AttemptOutcome:
        """The attempt was stopped mid-training (cancelled, or superseded): its run ends KILLED, the pool keeps what
        the canceller or the new attempt wrote."""
        if run_id:
            self._end_run(run_id, KILLED)
        status = self.pool.get(task.id).status
        log.warning("task %s: stopped while training (now %s); its run %s ended KILLED", task.id, status, run_id)
        return AttemptOutcome("stopped", task.id, status, run_id)

    def _failed(self, task: TaskRecord, error: str) -> AttemptOutcome:
        return _fail_attempt(self.pool, task, error, self.redispatch)

    def _build(self, spec: TaskSpec) -> Components:
        components = self.build(spec)
        model: Any = components.model
        if self.checkpoint_root is not None and getattr(model, "checkpoint_dir", "") is None:
            # a retried attempt of the same spec (same hash) resumes from the last epoch, on any worker
            # that shares this directory
            model.checkpoint_dir = str(self.checkpoint_root / spec.hash)
        return components

    def _end_abandoned_run(self, task: TaskRecord) -> None:
        """A previous attempt that died mid-run left its MLflow run RUNNING: end it KILLED."""
        # stage "end" resumes the same run, which end_task_train accepts once it is KILLED
        if task.run_id:
            self._end_run(task.run_id, KILLED, only_if_running=True)

    def end_killed_run(self, run_id: str) -> None:
        """End ``run_id`` KILLED if it is still RUNNING (its attempt's lease expired)."""
        self._end_run(run_id, KILLED, only_if_running=True)

    def _end_run(self, run_id: str, status: str, *, only_if_running: bool = False) -> None:
        try:
            if only_if_running and self.manager.get_recorder(run_id).status != RUNNING:
                return
            self.manager.client.set_terminated(run_id, status)
        except Exception as exc:  # tracking trouble must not stop the task itself
            log.warning("could not end run %s %s: %s", run_id, status, exc)


def fail_unready(
    pool: TaskPool,
    pool_name: str,
    worker: str,
    error: str,
    *,
    task_id: str | None = None,
    stage: Stage = "train",
    lease_s: float = DEFAULT_LEASE_S,
    redispatch: Callable[[TaskRecord], object] | None = None,
) -> AttemptOutcome:
    """Fail an attempt at ``task_id`` (or the pool's next task) with ``error``: this process cannot run tasks.

    The attempt is claimed first, as any attempt is, so it counts against ``max_attempts`` and the pool keeps
    the error (the task ends failed with it); a message for a task that is running elsewhere or done claims
    nothing and changes nothing. Acking the message without a claim would leave the task waiting, its error
    unrecorded, and the reconcilers re-sending it forever.
    """
    task = pool.claim(pool_name, worker, lease_s=lease_s, task_id=task_id, stage=stage)
    if task is None:
        return AttemptOutcome("skipped", task_id or "", pool.get(task_id).status if task_id else "none")
    return _fail_attempt(pool, task, error, redispatch)


def _fail_attempt(
    pool: TaskPool, task: TaskRecord, error: str, redispatch: Callable[[TaskRecord], object] | None
) -> AttemptOutcome:
    status = pool.fail(task.id, task.token or "", error)
    log.error("task %s attempt %d/%d failed: %s", task.id, task.attempts, task.max_attempts, error)
    retrying = status in ("waiting", "part_done")
    now = pool.get(task.id)
    if retrying and redispatch is not None:
        redispatch(now)
    return AttemptOutcome("retrying" if retrying else "failed", task.id, str(status), now.run_id, error)


class _Heartbeat:
    """Extends the task's lease every lease_s / 3 seconds in a daemon thread; sets ``lost`` when refused."""

    def __init__(
        self,
        pool: TaskPool,
        task: TaskRecord,
        lease_s: float,
        lost: threading.Event,
        progress: dict[str, Any] | None = None,
        on_progress: Callable[[dict[str, Any]], object] | None = None,
    ) -> None:
        self.pool, self.task, self.lease_s, self.lost = pool, task, lease_s, lost
        self.progress, self.on_progress = progress if progress is not None else {}, on_progress
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{task.id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def _beat(self) -> None:
        while not self.stop.wait(self.lease_s / 3):
            try:
                report = dict(self.progress) or None  # the training thread's latest report, copied under the GIL
                if not self.pool.heartbeat(self.task.id, self.task.token or "", lease_s=self.lease_s, progress=report):
                    self.lost.set()
                    return
            except Exception as exc:  # a flaky store: try again next beat; the lease covers two misses
                log.warning("heartbeat of task %s failed: %s", self.task.id, exc)
                continue
            if report and self.on_progress is not None:
                try:
                    self.on_progress(report)
                except Exception as exc:  # e.g. the result backend is down: the task goes on
                    log.warning("progress of task %s not published: %s", self.task.id, exc)
