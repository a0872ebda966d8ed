"""Every error qtrain raises on purpose.

QtrainError
├── ConfigError                 a setting, config key or CLI argument is wrong
└── DataError                   market data cannot be used as asked
    ├── StoreFormatError        a file of the store is missing, corrupt or truncated
    ├── UnknownMarketError      no instruments/<market>.txt
    ├── UnknownInstrumentError  a symbol not in the store / market
    ├── DateRangeError          dates outside the store's calendar
    └── ImportValidationError   a source file cannot be imported (one or more problems)

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
