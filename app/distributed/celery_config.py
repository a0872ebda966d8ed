"""qtrain's Celery configuration (:func:`make_app`): JSON only, ``acks_late`` with ``task_reject_on_worker_lost``
(the message of a killed pool child is requeued at once), prefetch 1, the ``gpu`` and ``cpu`` queues.

Recovery from a killed main worker process and exactly-once completion come from the task pool (lease + heartbeat
+ token-checked finish, see ``app.workflow.pool_worker``), not from the broker: the visibility timeout is set far
beyond any task so Redis never redelivers a task that is still running.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.app.amqp import AMQP
from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from app.core.credentials import mask_url
from app.core.settings import Settings

QUEUES = ("gpu", "cpu")
VISIBILITY_TIMEOUT_S = 7 * 24 * 3600
# Celery kills a pool child that has not reported UP this long after its fork (default 4 s). A child's start is
# now the fork and _child_init (no imports), but on a loaded machine even that can take seconds, and the 4 s
# default killed several replacements in a row there (when child start imported torch); 30 s only catches a
# child that is really stuck.
CHILD_START_TIMEOUT_S = 30.0


def make_app(settings: Settings) -> Celery:
    """A Celery app for ``settings`` (broker, result backend)."""
    celery = Celery("qtrain", include=["tasks.train"], amqp=f"{__name__}:QtrainAMQP")
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


class MaskingConnection(Connection):
    """A broker connection whose printable URL hides only a password there is, keeping the user name.

    kombu's own ``as_uri`` writes ``redis://:**@127.0.0.1:6379/0`` for a URL with no password at all (in the worker's
    banner, its "Connected to" line and Flower's broker page), as if one were hidden.
    """

    def as_uri(self, include_password: Any = False, mask: Any = "**", getfields: Any = None) -> str:
        uri = str(super().as_uri(True, mask) if getfields is None else super().as_uri(True, mask, getfields))
        return uri if include_password else mask_url(uri)


class QtrainAMQP(AMQP):  # type: ignore[misc]
    """Celery's AMQP (``Celery(amqp=...)``, how Celery takes its connection class) with :class:`MaskingConnection`,
    and task messages whose ``task-sent`` event carries the message's shadow name too.

    The worker names its ``task-received`` event after the shadow (``qtrain.train lgbm seed=1``), but the client's
    ``task-sent`` event names the task type, and a monitor that gets the two out of order (they come from two
    processes) keeps the later one's name: Flower then showed ``qtrain.train`` again.
    """

    Connection = MaskingConnection

    def as_task_v2(self, *args: Any, **kwargs: Any) -> Any:
        message = super().as_task_v2(*args, **kwargs)
        shadow = message.headers.get("shadow")
        if shadow and message.sent_event is not None:
            message.sent_event["name"] = shadow
        return message
