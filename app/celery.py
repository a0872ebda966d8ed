"""The Celery application (``celery -A app worker -Q gpu``): the app object only; the tasks live in ``tasks/``, the
configuration in :mod:`app.distributed.celery_config`, the worker's start-up in :mod:`app.distributed.startup`."""

from __future__ import annotations

from app.core.settings import get_settings
from app.distributed import startup  # noqa: F401  (connects the worker's signal handlers)
from app.runtime import get_runtime

app = get_runtime(get_settings()).celery_app
