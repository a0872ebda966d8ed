"""Every error qtrain raises on purpose.

QtrainError
├── ConfigError                 a setting, config key or CLI argument is wrong
│   ├── UnknownSegmentError     a dataset segment name that is not configured
│   ├── NotFittedError          a learnable processor used before fit()
│   ├── ExpressionError         a feature expression that cannot be parsed or evaluated
│   └── UnsupportedObjectError  an object save_objects cannot store in an open format (also a TypeError)
├── DataError                   market data cannot be used as asked
│   ├── StoreFormatError        a file of the store is missing, corrupt or truncated
│   ├── UnknownMarketError      no instruments/<market>.txt
│   ├── UnknownInstrumentError  a symbol not in the store / market
│   ├── DateRangeError          dates outside the store's calendar
│   │   └── EmptySegmentError   a dataset segment with no rows in the data
│   └── ImportValidationError   a source file cannot be imported (one or more problems)
├── TrackingError               the experiment tracker (MLflow) cannot do what was asked
│   ├── ExperimentNotFoundError an experiment name/id the tracking store does not hold (also a KeyError)
│   ├── RecorderNotFoundError   a run id/name the experiment does not hold (also a KeyError)
│   ├── ArtifactNotFoundError   an artifact name the run does not hold (also a KeyError)
│   ├── NoActiveRunError        a recorder call made outside a started run
│   └── RunStatusError          a run in a state that forbids the call (e.g. finishing a FINISHED task again)
├── TaskPoolError               the task pool cannot do what was asked
│   ├── TaskNotFoundError       a task id the task store does not hold (also a KeyError)
│   └── TaskStoreError          the task store (SQLite file, MongoDB server) cannot be opened, reached or written
├── ObjectiveError              a sweep job has no value of its objective to return (it failed, or the metric is NaN)
└── InfrastructureError         a service qtrain sends work through cannot be used as configured (names the variable)
    ├── BrokerError             QTRAIN_BROKER_URL is not a supported broker, or the broker refused a request
    │   └── BrokerUnreachableError  the broker does not answer (also a ConnectionError)
    └── ResultBackendError      QTRAIN_RESULT_BACKEND is not a supported result backend, or refused a request
        └── ResultBackendUnreachableError  the result backend does not answer (also a ConnectionError)

Messages say what is wrong, where (file, row, key) and how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence


class QtrainError(Exception):
    """Base of every error qtrain raises deliberately."""


class ConfigError(QtrainError):
    """A setting, config key or command-line argument is invalid."""


class DataError(QtrainError):
    """Market data cannot be read or written as asked."""


class StoreFormatError(DataError):
    """A file of a Qlib-layout store is missing, corrupt or truncated."""


class UnknownMarketError(DataError, KeyError):
    """The requested market has no instruments file."""

    __str__ = Exception.__str__


class UnknownInstrumentError(DataError, KeyError):
    """The requested instrument is not in the store or market."""

    __str__ = Exception.__str__


class DateRangeError(DataError):
    """A requested date range does not overlap the calendar as required."""


class ImportValidationError(DataError):
    """Source data failed validation; ``problems`` holds one line per problem."""

    def __init__(self, summary: str, problems: Sequence[str], hint: str) -> None:
        self.problems = list(problems)
        self.hint = hint
        shown = self.problems[:20]
        more = len(self.problems) - len(shown)
        lines = [summary, *(f"  - {p}" for p in shown)]
        if more > 0:
            lines.append(f"  ... and {more} more")
        lines.append(hint)
        super().__init__("\n".join(lines))


class UnknownSegmentError(ConfigError, KeyError):
    """A dataset segment name that the dataset's ``segments`` do not define."""

    __str__ = Exception.__str__

    def __init__(self, segment: str, known: Sequence[str]) -> None:
        self.segment = segment
        self.known = list(known)
        super().__init__(
            f"unknown segment {segment!r}: the dataset defines {', '.join(self.known) or 'no segments'}. "
            "Use one of those names, or add it under dataset.segments."
        )


class NotFittedError(ConfigError):
    """A learnable processor was applied before ``fit(df)`` was called on it."""


class ExpressionError(ConfigError):
    """A Qlib-style feature expression is malformed or refers to an unknown operator or field.

    ``expression`` is the text as given and ``position`` the 0-based offset of the problem in it (None when
    the problem has no single place); the message ends with the expression and a caret under that offset.
    """

    def __init__(self, expression: str, message: str, position: int | None = None) -> None:
        self.expression = expression
        self.position = position
        one_line = "\n" not in expression
        text = f'"{expression}": {message}' if one_line else f"{expression!r}: {message}"
        if position is not None and one_line:
            text += f"\n    {expression}\n    {' ' * position}^"
        super().__init__(text)


class EmptySegmentError(DateRangeError):
    """A dataset segment selects no rows of the data."""

    def __init__(self, segment: str, start: str, end: str, data_start: str, data_end: str) -> None:
        self.segment, self.start, self.end = segment, start, end
        self.data_start, self.data_end = data_start, data_end
        super().__init__(
            f"segments.{segment} {start}..{end} has no rows: the data runs {data_start}..{data_end}. "
            f"Move segments.{segment} inside that range, or load data that covers it."
        )


class EmptyUniverseError(DataError):
    """A market lists no instrument during a segment or the handler's window."""


class UnsupportedObjectError(ConfigError, TypeError):
    """``save_objects`` was given an object it cannot store in an open format (it never pickles)."""


class TrackingError(QtrainError):
    """The experiment tracker (MLflow) refused or failed a request; the message names the run and the fix."""


class ExperimentNotFoundError(TrackingError, KeyError):
    """No experiment with the requested name or id exists in the tracking store."""

    __str__ = Exception.__str__


class RecorderNotFoundError(TrackingError, KeyError):
    """No run (recorder) with the requested id or name exists in the experiment."""

    __str__ = Exception.__str__


class ArtifactNotFoundError(TrackingError, KeyError):
    """The run holds no artifact under the requested name."""

    __str__ = Exception.__str__


class NoActiveRunError(TrackingError):
    """A call that needs a running recorder was made outside ``start``/``end``."""


class RunStatusError(TrackingError):
    """A run's status (or its stored task) forbids the call, e.g. ``end_task_train`` on a FINISHED run.

    ``run_id`` and ``status`` name the run and the status MLflow holds for it.
    """

    def __init__(self, run_id: str, status: str, message: str) -> None:
        self.run_id, self.status = run_id, status
        super().__init__(message)


class TaskPoolError(QtrainError):
    """The task pool (:mod:`app.taskpool`) cannot do what was asked; the message names the task or pool."""


class TaskNotFoundError(TaskPoolError, KeyError):
    """No task with the requested id exists in the task store."""

    __str__ = Exception.__str__


class TaskStoreError(TaskPoolError):
    """The task store (SQLite file or MongoDB server) cannot be opened, reached or written."""


class ObjectiveError(QtrainError):
    """A job of an optimising sweep has no value of ``objective`` to return: the sweeper records a failed trial."""


class InfrastructureError(QtrainError):
    """A service that qtrain sends work through (the broker, the result backend) cannot be used as configured.

    ``service`` names it ("broker"), ``url`` is its URL with any password masked, ``variable`` the setting to fix
    (e.g. QTRAIN_BROKER_URL); the message says what failed and how to fix it.
    """

    def __init__(self, message: str, *, service: str = "", url: str = "", variable: str = "") -> None:
        # the defaults let pickle rebuild it from its message (then it restores the fields), as a process pool does
        self.service, self.url, self.variable = service, url, variable
        super().__init__(message)


class BrokerError(InfrastructureError):
    """The broker URL names a transport qtrain cannot use, or the broker refused a request."""


class BrokerUnreachableError(BrokerError, ConnectionError):
    """The broker does not answer; also a :class:`ConnectionError`, so code that rides out outages catches it."""


class ResultBackendError(InfrastructureError):
    """The Celery result backend URL names a backend qtrain does not support, or the backend refused a request."""


class ResultBackendUnreachableError(ResultBackendError, ConnectionError):
    """The result backend does not answer; also a :class:`ConnectionError`, as :class:`BrokerUnreachableError`."""
