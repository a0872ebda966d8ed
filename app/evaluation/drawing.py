"""Where queued record figures are drawn: on a thread of this process, or in a separate low-priority process.

Drawing a run's three figures costs ~0.35 s of pure-Python matplotlib work. On a thread it holds the GIL while
the next job of a local sweep boosts, and every LightGBM iteration then waits for the GIL: measured on 2 cores,
an 8-job sweep took ~6 s longer with the figures than without. :func:`use_drawing_process` (the local sweep
launcher calls it) moves the drawing into one spawned child at ``nice`` +10, which only takes CPU the jobs leave
idle; the figures come back as PNG bytes, identical to those drawn in this process, and are uploaded here.

Celery pool children draw on their figure thread instead: a pool child is a daemonic billiard process, which
multiprocessing lets start no child (and whose authentication key refuses to be sent to a spawned one). On a
worker the figures of a task are drawn after its result is recorded, while the next task runs.
"""

from __future__ import annotations

import functools
import io
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from app.tracking.artifacts import PNG, PNG_COMPRESS_LEVEL

log = logging.getLogger(__name__)

DRAWING_NICE = 10

_state: dict[str, ProcessPoolExecutor | None] = {"pool": None}
_enabled = {"process": False}


def use_drawing_process(enabled: bool = True) -> None:
    """Draw queued figures in a separate low-priority process from now on (``False``: back to the thread)."""
    _enabled["process"] = enabled
    if not enabled:
        close_drawing_process()


def png_bytes(figure: Any) -> bytes:
    """A matplotlib figure as the PNG bytes :func:`app.tracking.artifacts.stage_object` would write."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    return buffer.getvalue()


def _render(make: Callable[[], Any]) -> bytes:
    return png_bytes(make())


def _lower_priority() -> None:
    os.nice(DRAWING_NICE)
    import matplotlib  # loaded while the parent's first jobs run, not when their first figure is due

    matplotlib.use("Agg", force=False)
    import matplotlib.figure


def _pool() -> ProcessPoolExecutor:
    pool = _state["pool"]
    if pool is None:
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_lower_priority)
        _state["pool"] = pool
    return pool


def draw(makers: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Each maker's figure, keyed by artifact name: matplotlib figures drawn here, or PNG bytes (``<name>.png``)
    drawn in the drawing process. Makers must be picklable (module-level functions and ``functools.partial``)
    when the process is in use; one that is not is drawn here."""
    if not _enabled["process"]:
        return {name: make() for name, make in makers.items()}
    futures: dict[str, Future[bytes] | None] = {}
    for name, make in makers.items():
        futures[name] = _pool().submit(_render, make) if isinstance(make, functools.partial) else None
    out: dict[str, Any] = {}
    for name, future in futures.items():
        out[name + PNG] = future.result() if future is not None else png_bytes(makers[name]())
    return out


def close_drawing_process() -> None:
    """Stop the drawing process (after the figures already queued to it)."""
    pool, _state["pool"] = _state["pool"], None
    if pool is not None:
        pool.shutdown(wait=True)
