"""Stopping a running task from outside its training loop: the caller runs the task inside :func:`stop_when`
with an event, and the loops call :func:`check_stop` between boosting rounds and epochs.

A pool worker sets the event when its heartbeat is refused (the task was cancelled, or its lease expired and
another attempt owns it): the attempt then ends at its next round or epoch instead of training to the end for a
result nobody may record. The event lives in a context variable, so tasks in other threads are not affected.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from app.core.errors import QtrainError

_STOP: ContextVar[threading.Event | None] = ContextVar("qtrain_stop", default=None)


class TaskStopped(QtrainError):
    """The running task was told to stop (cancelled, or its attempt no longer owns the task)."""


@contextmanager
def stop_when(event: threading.Event) -> Iterator[None]:
    """Training loops run inside this block stop at their next :func:`check_stop` once ``event`` is set."""
    token = _STOP.set(event)
    try:
        yield
    finally:
        _STOP.reset(token)


def check_stop() -> None:
    """Raise :class:`TaskStopped` when the task running in this context was told to stop.

    Raises:
        TaskStopped: the event of the enclosing :func:`stop_when` is set.
    """
    event = _STOP.get()
    if event is not None and event.is_set():
        raise TaskStopped("the task was told to stop (cancelled, or its attempt lost the task)")
