"""Task store URLs: read their parts. Only ``sqlite:///PATH`` and ``mongodb://`` / ``mongodb+srv://`` URLs are
task stores (see :func:`app.taskpool.open_pool`); messages mask them with :func:`app.core.credentials.mask_url`."""

from __future__ import annotations

import re
from pathlib import Path

from app.core.credentials import mask_url
from app.core.errors import ConfigError

MONGO_SCHEMES = ("mongodb://", "mongodb+srv://")
SQLITE_PREFIX = "sqlite:///"
DEFAULT_MONGO_DATABASE = "qtrain"


def is_mongo_url(url: str) -> bool:
    """Whether ``url`` names a MongoDB server (``mongodb://`` or ``mongodb+srv://``)."""
    return url.startswith(MONGO_SCHEMES)


def is_postgres_url(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL server (``postgresql://`` or ``postgres://``)."""
    return url.startswith(("postgresql://", "postgres://"))


def mongo_database(url: str, default: str = DEFAULT_MONGO_DATABASE) -> str:
    """The database named by the path of a MongoDB URL (``mongodb://host/NAME?...``), else ``default``.

    Raises:
        ConfigError: the path names more than one segment or holds characters MongoDB forbids in a name.
    """
    rest = url.partition("://")[2]
    rest = rest.rpartition("@")[2]  # a password may hold "/"
    path = rest.partition("?")[0].partition("/")[2]
    if not path:
        return default
    if re.search(r'[/\\. "$*<>:|?]', path) or len(path) > 63:
        raise ConfigError(
            f"{mask_url(url)}: {path!r} is not a MongoDB database name (at most 63 characters, none of "
            '/\\. "$*<>:|?); write the URL as mongodb://host:port/DATABASE, e.g. mongodb://127.0.0.1:27017/qtrain'
        )
    return path


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///PATH`` URL: ``sqlite:///rel/tasks.db`` is relative to the working directory,
    ``sqlite:////abs/tasks.db`` absolute, and ``~`` is expanded.

    Raises:
        ConfigError: ``url`` is not ``sqlite:///`` followed by a file path (in-memory databases are refused:
            the workers and the client of a pool must all open the same file).
    """
    if not url.startswith(SQLITE_PREFIX):
        raise ConfigError(
            f"{mask_url(url)!r} is not a SQLite URL; write sqlite:///PATH, e.g. sqlite:///.qtrain/tasks.db"
        )
    raw = url[len(SQLITE_PREFIX) :].partition("?")[0]
    if not raw or raw == ":memory:" or raw.endswith("/"):
        raise ConfigError(
            f"{url!r} names no database file; the task pool is shared by several processes, so it needs one: "
            "sqlite:///.qtrain/tasks.db (relative to the working directory) or sqlite:////abs/path/tasks.db"
        )
    return Path(raw).expanduser()
