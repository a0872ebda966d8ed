"""A Celery worker's start-up, connected to Celery's signals when :mod:`app.celery` is imported: the heavy
libraries loaded before the pool children are forked, each child's drawing process and torch threads, its last
figures kept at exit, and the reconciler thread every worker runs."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import signals

from app.core.settings import get_settings

log = logging.getLogger(__name__)


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _preload(**_: Any) -> None:
    """Load the heavy libraries once in the worker's main process, before its pool children are forked: they
    inherit them, so no task pays for importing MLflow (~3 s) or LightGBM."""
    from app.distributed.worker import preload

    preload()


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]
def _child_init(**_: Any) -> None:
    """Each pool child uses ``QTRAIN_WORKER_THREADS`` torch threads (torch otherwise takes every core per process).
    Cheap on purpose: Celery waits for it before the child counts as started, so torch (~2 s to import) is not
    imported here; its threads are set where a torch model is built (``app.distributed.worker``), or here if it is
    already loaded. (Its figures are drawn on a thread: a daemonic pool child cannot start a drawing process.)"""
    from app.distributed.worker import limit_torch_threads

    limit_torch_threads(get_settings().worker_threads)


@signals.worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _finish_plots(**_: Any) -> None:
    """A pool child's last runs keep their figures: wait for the drawing thread before the child exits."""
    from app.evaluation.records import wait_for_plots

    wait_for_plots()


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _start_reconciler(**_: Any) -> None:
    """Every worker also reconciles the pools, so a detached sweep recovers from dead workers and lost messages
    without a client waiting on it."""
    threading.Thread(target=_reconcile_forever, name="qtrain-reconciler", daemon=True).start()


def _reconcile_forever() -> None:
    from app.distributed.worker import reconcile_pools

    while True:
        time.sleep(get_settings().lease_s)
        try:
            reconcile_pools()
        except Exception:  # the store or broker is down for a moment: try again next round
            log.exception("reconciling the task pools failed")
