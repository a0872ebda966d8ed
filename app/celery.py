"""The Celery application (``celery -A app worker -Q gpu``): configuration only, the tasks live in ``tasks/``.

JSON is the only serializer; ``acks_late`` with ``task_reject_on_worker_lost`` requeues the message of a killed
pool child at once. Recovery from a killed main worker process and exactly-once completion come from the task
pool (lease + heartbeat + token-checked finish, see ``app.workflow.pool_worker``), not from the broker: the
visibility timeout is set far beyond any task so Redis never redelivers a task that is still running.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Celery, signals
from kombu.entity import Exchange, Queue

from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

QUEUES = ("gpu", "cpu")
VISIBILITY_TIMEOUT_S = 7 * 24 * 3600
# Celery kills a pool child that has not reported UP this long after its fork (default 4 s). A child's start is
# now the fork and _child_init (no imports), but on a loaded machine even that can take seconds, and the 4 s
# default killed several replacements in a row there (when child start imported torch); 30 s only catches a
# child that is really stuck.
CHILD_START_TIMEOUT_S = 30.0


def make_app(settings: Settings) -> Celery:
    """A Celery app for ``settings`` (broker, result backend)."""
    celery = Celery("qtrain", include=["tasks.train"])
    celery.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.result_backend,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in QUEUES],  # type: ignore[no-untyped-call]
        task_default_queue="cpu",
        task_default_exchange="cpu",
        task_default_routing_key="cpu",
        task_track_started=True,
        task_send_sent_event=True,
        worker_send_task_events=True,
        result_expires=7 * 24 * 3600,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        result_backend_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        mongodb_backend_settings={"options": {"serverSelectionTimeoutMS": 5000}},  # URI timeouts are mis-scaled
        worker_hijack_root_logger=False,
        worker_proc_alive_timeout=CHILD_START_TIMEOUT_S,
    )
    return celery


app = make_app(get_settings())


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _preload(**_: Any) -> None:
    """Load the heavy libraries once in the worker's main process, before its pool children are forked: they
    inherit them, so no task pays for importing MLflow (~3 s) or LightGBM."""
    from app.pool_runtime import preload

    preload()


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]
def _child_init(**_: Any) -> None:
    """Each pool child draws its tasks' figures in a low-priority process of its own (not on a thread holding the
    next task's GIL) and uses ``QTRAIN_WORKER_THREADS`` torch threads (torch otherwise takes every core per
    process). Cheap on purpose: Celery waits for it before the child counts as started, so torch (~2 s to import)
    is not imported here; its threads are set where a torch model is built (``app.pool_runtime``), or here if
    it is already loaded."""
    from app.evaluation.drawing import use_drawing_process
    from app.pool_runtime import limit_torch_threads

    use_drawing_process()
    limit_torch_threads(get_settings().worker_threads)


@signals.worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _finish_plots(**_: Any) -> None:
    """A pool child's last runs keep their figures: wait for the drawing thread before the child exits."""
    from app.evaluation.drawing import use_drawing_process
    from app.evaluation.records import wait_for_plots

    wait_for_plots()
    use_drawing_process(False)  # and its drawing process stops


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _start_reconciler(**_: Any) -> None:
    """Every worker also reconciles the pools, so a detached sweep recovers from dead workers and lost messages
    without a client waiting on it."""
    threading.Thread(target=_reconcile_forever, name="qtrain-reconciler", daemon=True).start()


def _reconcile_forever() -> None:
    from app.pool_runtime import reconcile_pools

    while True:
        time.sleep(get_settings().lease_s)
        try:
            reconcile_pools()
        except Exception:  # the store or broker is down for a moment: try again next round
            log.exception("reconciling the task pools failed")
