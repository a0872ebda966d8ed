"""Everything a worker process needs to run pool tasks, built once per process from the settings.

A process that cannot build it (the tracking store or the feature cache cannot be opened, the broker is not
Redis) remembers why, says so once in an ERROR line that names the setting to fix, and fails every attempt it
is sent with that error: the tasks end failed after their attempts, with the error the client prints, instead
of being redelivered forever without a trace.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from app.config.compose import build_components
from app.core.credentials import mask_url
from app.core.settings import Settings, get_settings
from app.runtime import get_runtime
from app.taskpool.base import Stage, TaskPool, TaskRecord
from app.workflow.pool_worker import AttemptOutcome, PoolWorker, fail_unready
from app.workflow.spec import TaskSpec
from app.workflow.train import Components

log = logging.getLogger(__name__)

T = TypeVar("T")
_UNREADY: dict[str, str] = {}  # worker name -> why this process cannot run its tasks
_RECONCILER_WARNED: list[str] = []


def _setup(what: str, setting: str, value: str, build: Callable[[], T]) -> T:
    from app.core.errors import ConfigError, QtrainError

    try:
        return build()
    except Exception as exc:  # whatever it is, the process cannot serve tasks until the setting is fixed
        detail = str(exc) if isinstance(exc, QtrainError) else f"{type(exc).__name__}: {exc}"
        raise ConfigError(
            f"{what} cannot be used ({setting}={value}): {detail}; fix {setting} and restart the worker"
        ) from exc


def _redispatcher(pool: TaskPool) -> Callable[[TaskRecord], object]:
    from app.workflow.trainer_rm import send

    wiring = get_runtime()
    url = mask_url(wiring.settings.broker_url)
    broker = _setup("the broker", "QTRAIN_BROKER_URL", url, lambda: wiring.broker)
    return lambda task: send(pool, broker, task)


def _writable_dir(path: os.PathLike[str]) -> None:
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"{os.fspath(path)} is not writable by this process")


def limit_torch_threads(threads: int | None) -> None:
    """Cap torch's intra-op threads at ``threads`` once torch is loaded; never imports it (that costs ~2 s)."""
    torch = sys.modules.get("torch")
    if threads and torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _build(spec: TaskSpec) -> Components:
    components: Components = build_components(spec)
    limit_torch_threads(get_settings().worker_threads)  # a torch model's module has imported torch by now
    return components


@functools.cache
def pool_worker(hostname: str) -> PoolWorker:
    """The process's :class:`PoolWorker` (task store, MLflow, feature cache, checkpoints, Celery dispatcher).

    Raises:
        ConfigError: one of them cannot be used; the message names the setting.
    """
    wiring = get_runtime()
    settings = wiring.settings
    redispatch = _redispatcher(wiring.pool)
    manager = _setup("the tracking store", "MLFLOW_TRACKING_URI", mask_url(settings.tracking_uri), wiring.tracking)
    cache = wiring.feature_cache
    _setup("the feature cache", "QTRAIN_CACHE_DIR", str(settings.cache_dir), lambda: _writable_dir(cache.root))
    return wiring.pool_worker(
        hostname,
        build=_build,
        manager=manager,
        redispatch=redispatch,
        draw_plots_later=True,  # the next task trains while they are drawn; waited for when the child exits
    )


def _ready_worker(hostname: str) -> PoolWorker | str:
    """The process's worker, or why this process cannot run tasks (said once, in one ERROR line)."""
    if hostname in _UNREADY:
        return _UNREADY[hostname]
    try:
        return pool_worker(hostname)
    except Exception as exc:
        _UNREADY[hostname] = f"worker {hostname} cannot run tasks: {exc}"
        log.error("%s. Until then every task attempt this process is sent fails with this error", _UNREADY[hostname])
        return _UNREADY[hostname]


def run_task(
    hostname: str,
    pool_name: str,
    task_id: str,
    stage: Stage,
    on_progress: Callable[[dict[str, Any]], object] | None = None,
) -> AttemptOutcome:
    """Run the delivered pool task ``task_id`` in this process, or fail its attempt when the process cannot.

    Raises:
        TaskStoreError: the task store cannot be opened (then nothing can be recorded).
    """
    settings = get_settings()
    pool = get_runtime().pool  # if this fails, nothing can be recorded: the error goes to Celery
    worker = _ready_worker(hostname)
    if isinstance(worker, PoolWorker):
        return worker.run(pool_name, task_id, stage=stage, on_progress=on_progress)
    try:
        redispatch: Callable[[TaskRecord], object] | None = _redispatcher(pool)
    except Exception:  # without a broker the retry waits for a reconciler to send its message
        redispatch = None
    return fail_unready(
        pool, pool_name, hostname, worker, task_id=task_id, stage=stage, lease_s=settings.lease_s, redispatch=redispatch
    )


def preload() -> None:
    """Import what running a task needs (MLflow's tracking store, LightGBM, the workflow, records, kernels).

    Only imports: nothing is opened, so the process can still fork safely.
    """
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    import app.evaluation.records
    import app.features.frame  # noqa: F401
    from app.models.lightgbm_lib import import_lightgbm

    import_lightgbm()


@functools.cache
def _reconciler(settings: Settings) -> PoolWorker:
    # its own tracking client, not the process's shared one: pool children forked later inherit this process's
    # memory, and one that found an open MLflow store there would use the parent's SQLite connections
    wiring = get_runtime(settings)
    return wiring.pool_worker("reconciler", manager=wiring.separate_tracking(), cache=None)


def reconcile_pools() -> int:
    """Expire dead leases and re-send lost messages in every pool of the task store; returns messages sent."""
    from app.workflow.trainer_rm import reconcile

    settings = get_settings()
    pool, broker = get_runtime(settings).pool, get_runtime(settings).broker
    end_run: Callable[[str], object] | None = None
    try:
        end_run = _reconciler(settings).end_killed_run
    except Exception as exc:  # the pool's work goes on; the next attempt of such a task ends its old run
        if not _RECONCILER_WARNED:
            _RECONCILER_WARNED.append(str(exc))
            log.warning("the reconciler cannot open the tracking store (%s): it cannot end killed runs", exc)
    sent = 0
    for name in pool.pools():
        sent += reconcile(pool, name, broker, end_run=end_run).dispatched
    return sent
