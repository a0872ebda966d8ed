"""The process's shared wiring objects, each built in one place from the settings and kept for the process.

A sweep run in one process, or a warm Celery worker, opens the tracking store once and keeps one feature cache
(whose loaded frames stay in memory), instead of paying for them per task.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from app.settings import Settings

if TYPE_CHECKING:
    from app.dataset.cache import FeatureCache
    from app.tracking.manager import ExpManager

_MANAGERS: dict[tuple[str, str], ExpManager] = {}


def tracking(settings: Settings, *, background: bool = False) -> ExpManager:
    """The process's :class:`ExpManager` for ``settings``' tracking URI and artifact root.

    ``background=True`` lets the first caller go on while MLflow loads (see :class:`app.workflow.train.LazyRun`);
    it matters only for the call that builds the manager.
    """
    from app.tracking.manager import ExpManager

    key = (settings.tracking_uri, str(settings.artifact_root))
    if key not in _MANAGERS:
        _MANAGERS[key] = ExpManager(settings.tracking_uri, settings.artifact_root, background=background)
    return _MANAGERS[key]


def feature_cache(settings: Settings) -> FeatureCache:
    """The process's :class:`FeatureCache` under ``settings.cache_dir``."""
    return _feature_cache(str(settings.cache_dir / "features"))


@functools.cache
def _feature_cache(root: str) -> FeatureCache:
    from app.dataset.cache import FeatureCache

    return FeatureCache(root)
