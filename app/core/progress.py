"""Progress bars on stderr for long work: feature builds, training epochs, boosting rounds, sub-models.

A bar draws only when stderr is an interactive terminal; anywhere else (tests, CI logs, Celery workers,
pipes, Jupyter, ``TERM=dumb``) it writes nothing at all. Drawing is best effort: if the terminal fails, the bar
logs one warning, turns itself off, and the work goes on.

While a bar is drawn, the root logger's handlers that write to the same stream are routed through the bar's
console, so log lines appear above the bar instead of tearing it. Bars opened inside another bar draw below it
and stay on screen as a line when they finish (a rich too old for nested live displays draws only the outer one).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import IO, Any

from rich.console import Console
from rich.errors import LiveError
from rich.file_proxy import FileProxy
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

log = logging.getLogger(__name__)

_REPORT: ContextVar[Callable[[Mapping[str, Any]], None] | None] = ContextVar("qtrain_report", default=None)


@contextmanager
def report_to(callback: Callable[[Mapping[str, Any]], None]) -> Iterator[None]:
    """Work run inside this block tells ``callback`` how far it is (:func:`report`): a pool worker passes it on
    with its heartbeat, so ``qtrain pool list`` and Flower show a running task's stage, round or epoch and loss."""
    token = _REPORT.set(callback)
    try:
        yield
    finally:
        _REPORT.reset(token)


def report(**fields: Any) -> None:
    """Tell the enclosing :func:`report_to` (if any) the latest progress fields; never raises."""
    callback = _REPORT.get()
    if callback is not None:
        try:
            callback(fields)
        except Exception as exc:  # following a task must never stop it
            log.warning("progress report failed: %s", exc)


@functools.cache
def _stderr_console() -> Console:
    # One console for every default bar, so nested bars share a live display instead of fighting over the
    # terminal. It follows sys.stderr as it is at each write, so a redirected or captured stderr is honoured.
    return Console(stderr=True)


class ProgressBar:
    """A context manager drawing one bar: description, bar, ``M/N unit``, elapsed, remaining, and a note.

    ``with ProgressBar(40, "features", unit="blocks") as bar: ... bar.advance()``. ``note`` is free text after
    the bar (e.g. ``train 0.98 valid 1.01``). Pass ``console`` to draw elsewhere (tests); the default is stderr.
    Update it from the thread that opened it.
    """

    def __init__(
        self, total: int, description: str, *, unit: str = "", completed: int = 0, console: Console | None = None
    ) -> None:
        self.total, self.description, self.unit, self.completed = total, description, unit, completed
        self._console = console
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._rerouted: list[tuple[logging.StreamHandler[IO[str]], IO[str]]] = []

    @property
    def active(self) -> bool:
        """Whether the bar is being drawn (False off a terminal, before ``with``, after it, or after a failure)."""
        return self._progress is not None

    def __enter__(self) -> ProgressBar:
        console = self._console if self._console is not None else _stderr_console()
        if not console.is_terminal or console.is_dumb_terminal:
            return self
        progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}", markup=False),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}", markup=False),
            console=console,
            refresh_per_second=4,
        )
        try:
            self._task = progress.add_task(
                self.description, total=self.total, completed=self.completed, unit=self.unit, note=""
            )
            progress.start()
        except LiveError:  # a rich without nested live displays, inside another bar: stay silent
            return self
        except Exception as exc:  # a display must never stop the work, whatever the terminal does
            self._fail(exc)
            return self
        self._progress = progress
        self._reroute_logging(console)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()

    def advance(self, steps: int = 1, *, note: str | None = None) -> None:
        """Move ``steps`` forward; ``note`` (when given) replaces the text after the bar."""
        self.update(completed=self.completed + steps, note=note)

    def update(self, *, completed: int | None = None, note: str | None = None) -> None:
        """Set the steps done and/or the note; a no-op when the bar is not drawn."""
        if completed is not None:
            self.completed = completed
        report(step=self.description, done=self.completed, total=self.total, unit=self.unit, note=note or "")
        if self._progress is None or self._task is None:
            return
        try:
            if note is None:
                self._progress.update(self._task, completed=self.completed)
            else:
                self._progress.update(self._task, completed=self.completed, note=note)
        except Exception as exc:  # see __enter__
            self._fail(exc)

    def _reroute_logging(self, console: Console) -> None:
        # A StreamHandler keeps the stream it was built with (logging.basicConfig: the real stderr), which
        # bypasses rich's own stderr redirection; send those handlers through the console while the bar is up.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is console.file:
                old = handler.setStream(FileProxy(console, handler.stream))
                if old is not None:
                    self._rerouted.append((handler, old))

    def _stop(self) -> None:
        progress, self._progress = self._progress, None
        try:
            if progress is not None:
                progress.stop()
        except Exception as exc:  # see __enter__; also never mask the work's own outcome
            self._warn(exc)
        finally:
            for handler, stream in self._rerouted:
                handler.setStream(stream)
            self._rerouted.clear()

    def _fail(self, exc: Exception) -> None:
        self._warn(exc)
        self._stop()

    def _warn(self, exc: Exception) -> None:
        log.warning("progress bar %r turned off: %s: %s", self.description, type(exc).__name__, exc)
