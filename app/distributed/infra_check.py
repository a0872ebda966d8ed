"""The pre-check of a command that sends work to Celery workers: broker, result backend and task store, within 5 s.

It runs before the first task is stored, so a broken setting leaves the store untouched and comes out as one
line naming the variable to fix. Each service gets a short timeout of its own and all of them one deadline:
left to themselves the clients wait much longer (Celery's Redis result backend retries 20 times a second apart,
pymongo looks for a server for 30 s) and then fail with a traceback.

Supported: a Redis broker (see :mod:`app.distributed.broker`), a Redis or MongoDB result backend (what ``app.celery``
configures), and a SQLite or MongoDB task store (see :func:`app.taskpool.open_pool`).
"""

from __future__ import annotations

import time
from typing import Any

from app.core.credentials import mask_url, url_password
from app.core.errors import (
    BrokerError,
    BrokerUnreachableError,
    InfrastructureError,
    ResultBackendError,
    ResultBackendUnreachableError,
)
from app.core.settings import Settings
from app.taskpool import check_store
from app.taskpool.urls import MONGO_SCHEMES

DEADLINE_S = 5.0  # the whole pre-check
SERVER_TIMEOUT_S = 2.0  # the broker, the result backend: to connect, and to answer
STORE_TIMEOUT_S = 3.0  # the task store: to find a MongoDB server, or to get SQLite's write lock
BROKER_VARIABLE, BACKEND_VARIABLE, STORE_VARIABLE = "QTRAIN_BROKER_URL", "QTRAIN_RESULT_BACKEND", "QTRAIN_TASK_STORE"
REDIS_SCHEMES = ("redis://", "rediss://")
BACKEND_SCHEMES = (*REDIS_SCHEMES, *MONGO_SCHEMES)
E_NOT_REDIS = (
    "broker {url} is not supported: the task pool needs a Redis broker (it reads the queues to re-send lost "
    "messages, which no other transport allows); set QTRAIN_BROKER_URL=redis://HOST:6379/0"
)


def check_broker_url(url: str) -> None:
    """Refuse a broker URL that is not Redis (``redis://`` or ``rediss://``).

    Raises:
        BrokerError: another scheme (``amqp://`` ...); the message names QTRAIN_BROKER_URL.
    """
    if not url.startswith(REDIS_SCHEMES):
        masked = mask_url(url)
        raise BrokerError(E_NOT_REDIS.format(url=masked), service="broker", url=masked, variable=BROKER_VARIABLE)


def check_services(settings: Settings, *, deadline_s: float = DEADLINE_S) -> None:
    """Check that work can be sent: the broker and result backend URLs are supported and answer, and the task
    store opens (a SQLite file and its directory are created). Returns within about ``deadline_s``.

    Raises:
        BrokerError: QTRAIN_BROKER_URL is not Redis, or refused the connection (BrokerUnreachableError: no answer).
        ResultBackendError: QTRAIN_RESULT_BACKEND is neither Redis nor MongoDB, or does not answer.
        TaskStoreError: QTRAIN_TASK_STORE cannot be created, opened or reached.
        ConfigError: QTRAIN_TASK_STORE is not a task store URL.
    """
    end = time.monotonic() + deadline_s
    broker, backend = settings.broker_url, settings.result_backend
    check_broker_url(broker)
    if not backend.startswith(BACKEND_SCHEMES):
        masked = mask_url(backend)
        raise ResultBackendError(
            f"result backend {masked} is not supported: qtrain configures Celery's Redis and MongoDB result "
            f"backends only; set {BACKEND_VARIABLE}=redis://HOST:6379/1 or mongodb://HOST:27017/celery (or unset "
            "it to use the broker)",
            service="result backend", url=masked, variable=BACKEND_VARIABLE,
        )  # fmt: skip
    ping_redis(broker, _budget(end, deadline_s, "broker", broker, BROKER_VARIABLE), backend=False)
    if backend.startswith(MONGO_SCHEMES):
        ping_mongo(backend, _budget(end, deadline_s, "result backend", backend, BACKEND_VARIABLE))
    elif backend != broker:
        ping_redis(backend, _budget(end, deadline_s, "result backend", backend, BACKEND_VARIABLE), backend=True)
    store = settings.task_store
    check_store(store, timeout_s=_budget(end, deadline_s, "task store", store, STORE_VARIABLE, STORE_TIMEOUT_S))


def ping_redis(url: str, timeout_s: float, *, backend: bool) -> None:
    """PING the Redis server of ``url`` once, waiting at most ``timeout_s`` to connect and for the answer.

    Raises:
        BrokerUnreachableError, ResultBackendUnreachableError: no connection or no answer (by ``backend``).
        BrokerError, ResultBackendError: the URL cannot be used, or the server refused the request.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    service, variable = ("result backend", BACKEND_VARIABLE) if backend else ("broker", BROKER_VARIABLE)
    masked = mask_url(url)
    fields: dict[str, Any] = {"service": service, "url": masked, "variable": variable}
    what = f"{service} {masked}"
    client = None
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )
        client.ping()
    except redis.exceptions.AuthenticationError as exc:
        raise _refused(backend)(
            f"{what} refused the credentials ({_reason(exc)}); fix the user and password in {variable}", **fields
        ) from exc
    except redis.exceptions.TimeoutError as exc:
        raise _unreachable(backend)(
            f"{what} is not reachable (no answer within {timeout_s:.2g} s); start Redis or set {variable}", **fields
        ) from exc
    except redis.exceptions.ConnectionError as exc:
        raise _unreachable(backend)(
            f"{what} is not reachable ({_reason(exc)}); start Redis or set {variable}", **fields
        ) from exc
    except redis.exceptions.RedisError as exc:  # e.g. "DB index is out of range", or not a Redis server at all
        raise _refused(backend)(
            f"{what} answered with an error ({_reason(exc)}); check the server and database in {variable}", **fields
        ) from exc
    except (TypeError, ValueError) as exc:  # redis-py refuses an option of the URL's query
        raise _refused(backend)(
            f"{what} is not a usable Redis URL ({_reason(exc)}); write {variable}=redis://[:PASSWORD@]HOST:PORT/DB",
            **fields,
        ) from exc
    finally:
        if client is not None:
            client.close()


def ping_mongo(url: str, timeout_s: float) -> None:
    """Ask the MongoDB server of a result backend URL for a ``ping``, waiting at most about ``timeout_s``.

    Raises:
        ResultBackendUnreachableError: no server answered in time.
        ResultBackendError: the URL cannot be used, or the server refused the credentials.
    """
    import pymongo
    from pymongo.errors import ConfigurationError, ConnectionFailure, InvalidURI, OperationFailure, PyMongoError

    masked = mask_url(url)
    fields: dict[str, Any] = {"service": "result backend", "url": masked, "variable": BACKEND_VARIABLE}
    what = f"result backend {masked}"
    ms = max(1, int(timeout_s * 1000))
    client: Any = None
    try:
        client = pymongo.MongoClient(url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms)
        client.admin.command("ping")
    except (InvalidURI, ConfigurationError, ValueError) as exc:
        raise ResultBackendError(
            f"{what} is not a usable MongoDB URL ({_scrub(exc, url)}); write "
            f"{BACKEND_VARIABLE}=mongodb://[user:password@]HOST:27017/DATABASE",
            **fields,
        ) from exc
    except ConnectionFailure as exc:
        raise ResultBackendUnreachableError(
            f"{what} is not reachable ({_scrub(exc, url)}); start MongoDB or set {BACKEND_VARIABLE}", **fields
        ) from exc
    except (OperationFailure, PyMongoError) as exc:
        raise ResultBackendError(
            f"{what} refused the request ({_scrub(exc, url)}); check the user and password in {BACKEND_VARIABLE}",
            **fields,
        ) from exc
    finally:
        if client is not None:
            client.close()


def _budget(
    end: float, deadline_s: float, service: str, url: str, variable: str, timeout_s: float = SERVER_TIMEOUT_S
) -> float:
    """The time the next check may take: its own timeout, cut to what is left of the deadline."""
    left = end - time.monotonic()
    if left < 0.1:
        masked = mask_url(url)
        raise InfrastructureError(
            f"{service} {masked} was not checked: the services before it took the {deadline_s:g} s the pre-check "
            f"allows; check the network, or set {variable}",
            service=service, url=masked, variable=variable,
        )  # fmt: skip
    return min(timeout_s, left)


def _unreachable(backend: bool) -> type[InfrastructureError]:
    return ResultBackendUnreachableError if backend else BrokerUnreachableError


def _refused(backend: bool) -> type[InfrastructureError]:
    return ResultBackendError if backend else BrokerError


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()).rstrip(".") or type(exc).__name__


def _scrub(exc: BaseException, url: str) -> str:
    # pymongo appends a long topology dump to server-selection errors; the first part says what went wrong
    text = _reason(exc).split(", Topology Description:")[0]
    password = url_password(url)
    return text.replace(password, "***") if password else text
