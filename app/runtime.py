"""The process's wiring: every shared object built in one place from the settings and kept for the process.

A sweep run in one process, or a warm Celery worker, opens the tracking store once and keeps one feature cache
(whose loaded frames stay in memory), one task store and one broker, instead of paying for them per task. Every
entry point (the CLI, the Hydra launchers, the Celery worker) gets them from :func:`get_runtime`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.settings import Settings, get_settings

if TYPE_CHECKING:
    from celery import Celery

    from app.dataset.cache import FeatureCache
    from app.distributed.broker import CeleryBroker
    from app.taskpool.base import TaskPool
    from app.tracking.manager import ExpManager
    from app.workflow.pool_worker import PoolWorker
    from app.workflow.spec import TaskSpec
    from app.workflow.train import Components


class Runtime:
    """The wiring objects of one :class:`Settings`, each built on first use (imports stay lazy) and kept."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tracking: ExpManager | None = None

    def tracking(self, *, background: bool = False) -> ExpManager:
        """The process's :class:`ExpManager` (tracking URI and artifact root of the settings).

        ``background=True`` lets the first caller go on while MLflow loads (see :class:`app.workflow.train.LazyRun`);
        it matters only for the call that builds the manager.
        """
        if self._tracking is None:
            self._tracking = self._new_tracking(background=background)
        return self._tracking

    def separate_tracking(self) -> ExpManager:
        """An :class:`ExpManager` of its own, not the process's shared one (see the reconciler)."""
        return self._new_tracking(background=False)

    def _new_tracking(self, *, background: bool) -> ExpManager:
        from app.tracking.manager import ExpManager

        return ExpManager(self.settings.tracking_uri, self.settings.artifact_root, background=background)

    @property
    def lease_s(self) -> float:
        """How long a claimed pool task is held without a heartbeat (``QTRAIN_LEASE_S``)."""
        return self.settings.lease_s

    @property
    def checkpoint_dir(self) -> Path:
        """Where torch models checkpoint (``QTRAIN_CHECKPOINT_DIR``)."""
        return self.settings.checkpoint_dir

    @functools.cached_property
    def feature_cache(self) -> FeatureCache:
        """The :class:`FeatureCache` under the settings' cache directory."""
        from app.dataset.cache import FeatureCache

        return FeatureCache(self.settings.cache_dir / "features")

    @functools.cached_property
    def pool(self) -> TaskPool:
        """The task store (``QTRAIN_TASK_STORE``)."""
        from app.taskpool import open_pool

        return open_pool(self.settings.task_store)

    @functools.cached_property
    def celery_app(self) -> Celery:
        """The Celery app (broker, result backend and qtrain's Celery configuration)."""
        from app.distributed.celery_config import make_app

        return make_app(self.settings)

    @functools.cached_property
    def broker(self) -> CeleryBroker:
        """The broker the pool's messages go through (:attr:`celery_app`'s)."""
        from app.distributed.broker import CeleryBroker

        return CeleryBroker(self.celery_app)

    def pool_worker(
        self,
        worker: str,
        *,
        build: Callable[[TaskSpec], Components] | None = None,
        manager: ExpManager | None = None,
        **options: Any,
    ) -> PoolWorker:
        """A :class:`PoolWorker` named ``worker`` on the task store and the feature cache, with the settings'
        checkpoint directory and lease; the shared tracking manager and ``build_components`` unless given;
        ``options`` add or override its other keyword arguments."""
        from app.config.compose import build_components
        from app.workflow.pool_worker import PoolWorker

        kwargs: dict[str, Any] = {
            "cache": self.feature_cache,
            "checkpoint_root": self.settings.checkpoint_dir,
            # hosts that share a tracking server need share no disk: a retry elsewhere resumes from the run's copy
            "checkpoint_artifacts": self.settings.tracking_server,
            "lease_s": self.settings.lease_s,
            **options,
        }
        return PoolWorker(self.pool, manager or self.tracking(), build or build_components, worker=worker, **kwargs)


def get_runtime(settings: Settings | None = None) -> Runtime:
    """The process's :class:`Runtime` for ``settings`` (default: :func:`get_settings`)."""
    return _runtime(settings if settings is not None else get_settings())


@functools.cache
def _runtime(settings: Settings) -> Runtime:
    return Runtime(settings)
