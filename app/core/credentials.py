"""Hide the secrets URLs carry (``scheme://user:password@host``: Redis, MongoDB, PostgreSQL, ...) before they
reach a message, a log line or a run parameter."""

from __future__ import annotations

import re

MASK = "***"
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
