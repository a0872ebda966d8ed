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
    from app.broker import CeleryBroker
    from app.celery import app
    from app.dataset.cache import FeatureCache
    from app.tracking.manager import ExpManager
    from app.workflow.trainer_rm import send

    settings = get_settings()
    pool = _shared_pool(settings.task_store)
    broker = CeleryBroker(app)
    return PoolWorker(
        pool,
        ExpManager(settings.tracking_uri, settings.artifact_root),
        build_components,
        worker=hostname,
        cache=FeatureCache(settings.cache_dir / "features"),
        checkpoint_root=settings.checkpoint_dir,
        lease_s=settings.lease_s,
        redispatch=lambda task: send(pool, broker, task),
    )


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
