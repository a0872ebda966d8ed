"""Everything a worker process needs to run pool tasks, built once per process from the settings."""

from __future__ import annotations

import functools

from app.config import build_components
from app.settings import get_settings
from app.taskpool.base import TaskPool
from app.workflow.pool_worker import PoolWorker


@functools.cache
def _shared_pool(url: str) -> TaskPool:
    from app.taskpool import open_pool

    return open_pool(url)


@functools.cache
def pool_worker(hostname: str) -> PoolWorker:
    """The process's :class:`PoolWorker` (task store, MLflow, feature cache, checkpoints, Celery dispatcher)."""
    from app import wiring
    from app.broker import CeleryBroker
    from app.celery import app
    from app.workflow.trainer_rm import send

    settings = get_settings()
    pool = _shared_pool(settings.task_store)
    broker = CeleryBroker(app)
    return PoolWorker(
        pool,
        wiring.tracking(settings),
        build_components,
        worker=hostname,
        cache=wiring.feature_cache(settings),
        checkpoint_root=settings.checkpoint_dir,
        lease_s=settings.lease_s,
        redispatch=lambda task: send(pool, broker, task),
        draw_plots_later=True,  # the next task trains while they are drawn; waited for when the child exits
    )


def preload() -> None:
    """Import what running a task needs (MLflow's tracking store, LightGBM, the workflow, records, kernels).

    Only imports: nothing is opened, so the process can still fork safely.
    """
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    import app.evaluation.records
    import app.features.frame  # noqa: F401
    from app.models.lgbm import import_lightgbm

    import_lightgbm()


def reconcile_pools() -> int:
    """Expire dead leases and re-send lost messages in every pool of the task store; returns messages sent."""
    from app.broker import CeleryBroker
    from app.celery import app
    from app.workflow.trainer_rm import reconcile

    settings = get_settings()
    pool, broker = _shared_pool(settings.task_store), CeleryBroker(app)
    worker = pool_worker("reconciler")
    sent = 0
    for name in pool.pools():
        sent += reconcile(pool, name, broker, end_run=worker.end_killed_run).dispatched
    return sent
