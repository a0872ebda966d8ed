"""The rules both task stores share: argument checks, the next status after an attempt ends, history entries.

Keeping them here means the SQLite and MongoDB stores differ only in how they read and write, never in what a
transition does; the contract suite (tests/unit/taskpool/test_contract.py) checks that they agree.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from app.core.errors import ConfigError, TaskNotFoundError, TaskPoolError
from app.taskpool.base import STATUSES, Stage, Status

Clock = Callable[[], float]  # seconds since the epoch, like time.time
AttemptEnd = Literal["done", "part_done", "error", "lease_expired", "reset", "cancelled"]
CANCELLED_ERROR = "cancelled (qtrain pool cancel)"


def progress_document(progress: Mapping[str, Any], task_id: str) -> dict[str, Any]:
    """A heartbeat's progress report as the JSON document the stores keep.

    Raises:
        ConfigError: it is not JSON.
    """
    return json_document(progress, f"the progress of task {task_id!r}")


NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,100}")
STAGES: tuple[Stage, ...] = ("train", "end")
_E_NAME = "{what} {name!r} is not a valid name: use 1 to 100 of the characters A-Z a-z 0-9 _ . - (e.g. {example!r})"


def check_name(name: object, what: str = "pool", example: str = "csi300_lgbm") -> str:
    """``name`` if it is a valid pool (or queue) name.

    Raises:
        ConfigError: ``name`` is empty, longer than 100 characters or holds other characters than [A-Za-z0-9_.-].
    """
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise ConfigError(_E_NAME.format(what=what, name=name, example=example))
    return name


def check_text(value: object, what: str) -> str:
    """``value`` if it is a non-empty string (worker, experiment, token, hash, run id).

    Raises:
        ConfigError: ``value`` is not a string or is empty.
    """
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a non-empty string, got {value!r}")
    return value


def check_submit(priority: object, max_attempts: object) -> tuple[int, int]:
    """``(priority, max_attempts)`` when both are whole numbers and ``max_attempts`` ≥ 1.

    Raises:
        ConfigError: naming the argument and its value.
    """
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigError(f"priority must be a whole number (higher runs first), got {priority!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ConfigError(f"max_attempts must be a whole number >= 1 (1 = no retry), got {max_attempts!r}")
    return priority, max_attempts


LIMIT_KEYS = ("soft_time_limit_s", "time_limit_s")


def check_limits(limits: Mapping[str, Any] | None) -> dict[str, float]:
    """Celery time limits of a task (``soft_time_limit_s``, ``time_limit_s``; None: no limit), the ones set.

    They are a run setting stored on the task (with queue and priority), not part of its spec: a new limit does
    not make a new task.

    Raises:
        ConfigError: an unknown key, or a value that is not a positive number of seconds.
    """
    checked: dict[str, float] = {}
    for key, value in (limits or {}).items():
        if key not in LIMIT_KEYS:
            raise ConfigError(f"limits.{key}: not a time limit; use {' or '.join(f'limits.{k}' for k in LIMIT_KEYS)}")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"limits.{key} must be a positive number of seconds or null, got {value!r}")
        checked[key] = float(value)
    return checked


LABEL_MAX = 200


def check_label(label: object) -> str:
    """``label`` (a task's name for people, e.g. ``lgbm seed=1``) on one line, cut to ``LABEL_MAX`` characters.

    Raises:
        ConfigError: it is not a string.
    """
    if not isinstance(label, str):
        raise ConfigError(f"a task label must be a string, got {label!r}")
    text = " ".join(label.split())
    return text if len(text) <= LABEL_MAX else text[: LABEL_MAX - 1] + "…"


def check_submission(
    pool: str,
    spec: Mapping[str, Any],
    spec_hash: str,
    *,
    queue: str,
    experiment: str,
    priority: int,
    max_attempts: int,
    delayed: bool,
    limits: Mapping[str, Any] | None = None,
    label: str = "",
) -> dict[str, Any]:
    """The fields of a new task (pool, hash, spec, queue, experiment, priority, max_attempts, delayed, limits,
    label), checked; ``spec`` as the JSON document either store hands back.

    Raises:
        ConfigError: a bad pool or queue name, an empty hash or experiment, a bad priority or max_attempts, or a
            spec that is not JSON.
    """
    check_name(pool)
    check_name(queue, "queue", "cpu")
    check_text(experiment, "experiment")
    check_text(spec_hash, "spec_hash")
    priority, max_attempts = check_submit(priority, max_attempts)
    return {
        "pool": pool,
        "hash": spec_hash,
        "spec": json_document(spec, f"the spec of a task in pool {pool!r}"),
        "queue": queue,
        "experiment": experiment,
        "priority": priority,
        "max_attempts": max_attempts,
        "delayed": bool(delayed),
        "limits": check_limits(limits),
        "label": check_label(label),
    }


def check_lease(lease_s: object) -> float:
    """``lease_s`` as a float when it is a positive number of seconds.

    Raises:
        ConfigError: ``lease_s`` is not a positive number.
    """
    if isinstance(lease_s, bool) or not isinstance(lease_s, int | float) or not lease_s > 0:
        raise ConfigError(f"lease_s must be a positive number of seconds, got {lease_s!r}")
    return float(lease_s)


def check_stage(stage: object) -> Stage:
    """``stage`` if it is "train" or "end".

    Raises:
        ConfigError: any other value.
    """
    if stage not in STAGES:
        raise ConfigError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    return stage


def check_statuses(statuses: Iterable[object]) -> list[Status]:
    """``statuses`` as a list when each is a known status (a lone string counts as one status).

    Raises:
        ConfigError: naming the unknown status and the known ones.
    """
    out: list[Status] = []
    for status in [statuses] if isinstance(statuses, str) else statuses:
        if status not in STATUSES:
            raise ConfigError(f"unknown task status {status!r}; use any of {', '.join(STATUSES)}")
        out.append(status)
    return out


def json_document(value: object, where: str) -> dict[str, Any]:
    """A JSON round trip of the mapping ``value``: what either store will hand back (tuples become lists).

    Raises:
        ConfigError: ``value`` is not a mapping or holds something JSON cannot represent (NaN, a set, an object).
    """
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping of JSON values, got {type(value).__name__}")
    try:
        doc: dict[str, Any] = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{where} is not JSON ({exc}); pass only str, int, float, bool, None, lists and dicts"
        ) from exc
    return doc


def check_part_done(task_id: str, delayed: bool, stage: str) -> None:
    """Check that a running task may end its attempt with part_done.

    Raises:
        TaskPoolError: the task is not delayed, or it is running its "end" stage.
    """
    if not delayed:
        raise TaskPoolError(
            f"task {task_id} is not delayed, so it cannot be part_done; finish() it, or submit it with delayed=True"
        )
    if stage != "train":
        raise TaskPoolError(f"task {task_id} is running its 'end' stage, which ends with finish(), not part_done()")


def check_found(wanted: Iterable[str], found: Iterable[str], doing: str, where: str) -> None:
    """Refuse a command naming tasks the store does not hold (before anything changes).

    Raises:
        TaskNotFoundError: one of ``wanted`` is not in ``found``.
    """
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise TaskNotFoundError(f"cannot {doing}: no task {', '.join(map(repr, missing))} in {where}")


def new_id() -> str:
    """A fresh task id (32 hex characters)."""
    return uuid.uuid4().hex


def new_token() -> str:
    """A fresh claim token."""
    return uuid.uuid4().hex


class Sequencer:
    """Nanosecond creation stamps that never repeat or go back within one process (the claim/list tie-breaker)."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        """A stamp greater than every one this sequencer handed out before."""
        with self._lock:
            self._last = max(int(self._clock() * 1e9), self._last + 1)
            return self._last


def to_datetime(epoch: float | None) -> datetime | None:
    """Seconds since the epoch as a timezone-aware UTC datetime (None stays None)."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def aware(moment: datetime | None) -> datetime | None:
    """``moment`` with UTC attached when it came back naive (a MongoClient without ``tz_aware=True``)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def iso(moment: float | datetime | None) -> str | None:
    """Seconds since the epoch (or a datetime, naive meaning UTC) as an ISO 8601 UTC string, the form times take
    inside ``history``."""
    if isinstance(moment, datetime):
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()
    at = to_datetime(moment)
    return None if at is None else at.isoformat()


def after_end(stage: str) -> Status:
    """Where a task goes back to when an attempt of ``stage`` ends without success but may run again."""
    return "part_done" if stage == "end" else "waiting"


def after_failure(attempts: int, max_attempts: int, stage: str, retry: bool) -> Status:
    """The status a running task takes when its attempt fails or its lease expires."""
    return after_end(stage) if retry and attempts < max_attempts else "failed"


def lease_error(
    worker: str | None, lease_expires: float | datetime | None, attempts: int, max_attempts: int, stage: str
) -> str:
    """The error kept on a task whose lease expired."""
    when = iso(lease_expires) or "an unknown time"
    text = (
        f"lease expired at {when} without a heartbeat from worker {worker!r} "
        f"(attempt {attempts} of {max_attempts}, stage {stage!r}): the worker died, hung or lost the task store"
    )
    if attempts >= max_attempts:
        text += "; no attempts left, requeue the task (reset/requeue) once the cause is fixed"
    return text


def history_entry(
    *,
    attempt: int,
    stage: str,
    worker: str | None,
    run_id: str | None,
    started_at: float | datetime | None,
    ended_at: float,
    outcome: AttemptEnd,
    status: Status,
    error: str | None = None,
) -> dict[str, Any]:
    """One element of ``TaskRecord.history``: how one attempt ended (plain JSON, times as ISO strings)."""
    return {
        "attempt": attempt,
        "stage": stage,
        "worker": worker,
        "run_id": run_id,
        "started_at": iso(started_at),
        "ended_at": iso(ended_at),
        "outcome": outcome,
        "status": status,
        "error": error,
    }
