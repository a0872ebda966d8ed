"""The task pool contract: documents, states and the operations every store implements atomically.

A task is a JSON task spec in a named pool, deduplicated by its canonical hash. Its life:

    waiting ──claim──▶ running ──finish──▶ done
                          │  └──part_done──▶ part_done ──claim(stage="end")──▶ running ──finish──▶ done
                          ├──fail (attempts left) / lease expired──▶ waiting (or part_done for stage "end")
                          └──fail (no attempts left) / lease expired too often──▶ failed

Every claim hands out a fresh ``token``; heartbeat, set_run, finish, part_done and fail only act while the task
is running under that token, so a worker that lost its lease (killed, paused, partitioned) can never complete a
task that another attempt owns. Times are timezone-aware UTC datetimes.

``attempts`` counts the claims of the task's current stage: part_done starts the "end" stage at 0, so the end
stage of a delayed task gets its own ``max_attempts``. ``stage`` is "train" until part_done, then "end"; every
return from an "end" attempt (fail, lease expiry, reset, requeue) goes to part_done and keeps ``run_id``.
``history`` gets one JSON entry per ended attempt: attempt, stage, worker, run_id, started_at/ended_at (ISO
strings), outcome ("done", "part_done", "error", "lease_expired", "reset"), the status it led to, and error.
Pool names are 1-100 characters of [A-Za-z0-9_.-]; bad arguments raise :class:`app.core.errors.ConfigError`, a store
that cannot be reached :class:`app.core.errors.TaskStoreError`.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

Status = Literal["waiting", "running", "part_done", "done", "failed", "cancelled"]
Stage = Literal["train", "end"]
STATUSES: tuple[Status, ...] = ("waiting", "running", "part_done", "done", "failed", "cancelled")
FINAL_STATUSES: tuple[Status, ...] = ("done", "failed", "cancelled")  # never claimed again (until requeued)
DEFAULT_LEASE_S = 30.0
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class TaskRecord:
    """One task document as stored."""

    id: str
    pool: str
    hash: str
    spec: dict[str, Any]
    status: Status
    queue: str = "cpu"
    experiment: str = "qtrain"
    priority: int = 0
    attempts: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    delayed: bool = False  # DelayTrainerRM: train = begin (→ part_done), then an "end" stage fits
    limits: dict[str, float] = field(default_factory=dict)  # Celery time limits of its messages (rules.LIMIT_KEYS)
    progress: dict[str, Any] = field(default_factory=dict)  # the running attempt's last report (stage, done/total)
    label: str = ""  # what it is to people: its model and what sets it apart in its sweep ("lgbm seed=1")
    stage: Stage = "train"
    worker: str | None = None
    token: str | None = None
    lease_expires: datetime | None = None
    run_id: str | None = None  # the MLflow run of the current (or last) attempt
    result: dict[str, Any] | None = None  # {run_id, metrics} once done
    error: str | None = None  # the last attempt's error
    dispatches: int = 0  # broker messages sent for it so far
    dispatched_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per ended attempt


class TaskPool(Protocol):
    """What every store implements (SQLite: :mod:`app.taskpool.sqlite`, MongoDB: :mod:`app.taskpool.mongo`)."""

    def submit(
        self,
        pool: str,
        spec: Mapping[str, Any],
        spec_hash: str,
        *,
        queue: str = "cpu",
        experiment: str = "qtrain",
        priority: int = 0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        delayed: bool = False,
        limits: Mapping[str, float] | None = None,
        label: str = "",
    ) -> tuple[TaskRecord, bool]:
        """Add a waiting task, or return the pool's existing task with that hash; ``(task, created)``.
        ``limits``: the Celery time limits of its messages (see :func:`app.taskpool.rules.check_limits`);
        ``label``: a name for people (see :func:`app.taskpool.rules.check_label`), not part of its identity."""
        ...

    def get(self, task_id: str) -> TaskRecord:
        """The task; raises :class:`app.core.errors.TaskNotFoundError`."""
        ...

    def find(self, pool: str, spec_hash: str) -> TaskRecord | None:
        """The pool's task with that hash, None when there is none."""
        ...

    def claim(
        self, pool: str, worker: str, *, lease_s: float = DEFAULT_LEASE_S, task_id: str | None = None,
        stage: Stage = "train",
    ) -> TaskRecord | None:  # fmt: skip
        """Atomically take one task: stage "train" takes a waiting task, stage "end" a part_done one; the
        highest priority first (then oldest), or exactly ``task_id``. It becomes running with a new token,
        ``attempts`` + 1, ``worker``, ``lease_expires`` = now + lease_s. None when nothing matches."""
        ...

    def heartbeat(
        self, task_id: str, token: str, *, lease_s: float = DEFAULT_LEASE_S, progress: Mapping[str, Any] | None = None
    ) -> bool:
        """Extend the lease (and store ``progress``, JSON); False when the task is no longer running under ``token``.
        A claim clears the progress of the attempt before."""
        ...

    def set_run(self, task_id: str, token: str, run_id: str) -> bool:
        """Record the attempt's MLflow run id (so a later attempt can end an abandoned run KILLED)."""
        ...

    def finish(self, task_id: str, token: str, result: Mapping[str, Any]) -> bool:
        """running under ``token`` → done with ``result`` ({run_id, metrics}); False otherwise (nothing changes)."""
        ...

    def part_done(self, task_id: str, token: str, run_id: str) -> bool:
        """running under ``token`` (stage "train" of a delayed task) → part_done with ``run_id``; False when
        the token is stale. Raises :class:`app.core.errors.TaskPoolError` for a task that is not delayed or is in
        its "end" stage."""
        ...

    def fail(self, task_id: str, token: str, error: str, *, retry: bool = True) -> Status | None:
        """running under ``token`` → waiting (part_done for stage "end") while attempts < max_attempts and
        ``retry``, else failed; the error is kept. Returns the new status, None when the token is stale."""
        ...

    def expire_leases(self, pool: str | None = None) -> list[TaskRecord]:
        """Running tasks whose lease has passed go back (waiting / part_done) or, out of attempts, to failed,
        with error "lease expired ..."; returns them as they are now."""
        ...

    def mark_dispatched(self, task_id: str) -> None:
        """A broker message was sent for the task: ``dispatches`` + 1, ``dispatched_at`` = now. Raises
        :class:`app.core.errors.TaskNotFoundError`."""
        ...

    def list(self, pool: str, statuses: Sequence[Status] | None = None) -> list[TaskRecord]:
        """Tasks of ``pool`` (optionally only these statuses), oldest first."""
        ...

    def stats(self, pool: str) -> dict[Status, int]:
        """Count per status (every status present, zeros included)."""
        ...

    def reset(self, pool: str, statuses: Sequence[Status] = ("running", "failed")) -> int:
        """Tasks of ``pool`` in ``statuses`` → waiting (part_done when a delayed task already has its run),
        attempts 0, lease/token/error cleared; returns how many."""
        ...

    def cancel(self, task_ids: Sequence[str]) -> int:
        """These tasks → cancelled (final: never claimed), unless done, failed or cancelled already; a running
        attempt loses its token, so its next heartbeat is refused and its worker stops it. Returns how many
        changed. Raises :class:`app.core.errors.TaskNotFoundError` for an unknown id (nothing changes)."""
        ...

    def requeue(self, task_ids: Sequence[str]) -> int:
        """These tasks (any status but running under a live lease) → waiting as in :meth:`reset`; returns how
        many moved. Raises :class:`app.core.errors.TaskNotFoundError` (changing nothing) when an id is unknown."""
        ...

    def purge(self, pool: str) -> int:
        """Delete every task of ``pool``; returns how many."""
        ...

    def pools(self) -> builtins.list[str]:  # plain `list` here would name the method above
        """Names of the pools that hold tasks, sorted."""
        ...

    def close(self) -> None:
        """Release connections (a client passed in by the caller stays open)."""
        ...
