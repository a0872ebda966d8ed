"""Task store URLs: hide the secrets they carry before they reach a message or a log, and read their parts.

Only ``sqlite:///PATH`` and ``mongodb://`` / ``mongodb+srv://`` URLs are task stores (see
:func:`app.taskpool.open_pool`);
:func:`mask_url` works on any ``scheme://user:password@host`` URL (Redis, PostgreSQL, ...).
"""

from __future__ import annotations

import re
from pathlib import Path

from app.errors import ConfigError

MASK = "***"
MONGO_SCHEMES = ("mongodb://", "mongodb+srv://")
SQLITE_PREFIX = "sqlite:///"
DEFAULT_MONGO_DATABASE = "qtrain"
# query options whose value is a secret (tlsCertificateKeyFilePassword, AWS_SESSION_TOKEN inside
# authMechanismProperties, ...); matched on the lower-cased option name
_SECRET_OPTION = re.compile(r"password|secret|token|authmechanismproperties")


def mask_url(url: str) -> str:
    """``url`` with its password (and secret-looking query options) replaced by ``***``; safe to print.

    ``mongodb://app:s3cret@db:27017/qtrain`` becomes ``mongodb://app:***@db:27017/qtrain``. A URL without
    credentials comes back unchanged. Anything between ``://`` and the last ``@`` is treated as the user
    part, so a password holding an unescaped ``@`` or ``/`` is still hidden.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, tail = rest.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        rest = f"{user}:{MASK}@{tail}"
    base, q, query = rest.partition("?")
    if q:
        options = []
        for option in query.split("&"):
            key, eq, _value = option.partition("=")
            options.append(f"{key}={MASK}" if eq and _SECRET_OPTION.search(key.lower()) else option)
        rest = f"{base}?{'&'.join(options)}"
    return f"{scheme}://{rest}"


def url_password(url: str) -> str | None:
    """The password of ``url`` as written (None without one), so that it can be scrubbed from other texts."""
    rest = url.partition("://")[2]
    userinfo, at, _ = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return None
    return userinfo.split(":", 1)[1] or None


def has_credentials(url: str) -> bool:
    """Whether :func:`mask_url` hides anything in ``url``."""
    return mask_url(url) != url


def is_mongo_url(url: str) -> bool:
    """Whether ``url`` names a MongoDB server (``mongodb://`` or ``mongodb+srv://``)."""
    return url.startswith(MONGO_SCHEMES)


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
