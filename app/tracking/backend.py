"""The MLflow tracking store: URI handling, one-time SQLite initialisation, the client, error translation.

A brand-new SQLite tracking DB initialised by several processes at once breaks MLflow's schema migration
(each process runs the migrations on its own). :func:`prepare_tracking_store` therefore creates (and, when
asked, upgrades) the DB once, under an inter-process ``fcntl.flock`` on ``<db path>.lock``; afterwards any
number of processes can log to it. MLflow is imported inside the functions: importing it costs ~2 s.
"""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from app.core.credentials import mask_url
from app.core.errors import ConfigError, TrackingError
from app.core.settings import SERVER_SCHEMES

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

SQLITE_PREFIX = "sqlite:///"
SERVER_TIMEOUT_S = 5.0  # a tracking server's answer to /health
URI_HINT = "use sqlite:///<path>/mlflow.db (embedded) or http://<host>:5000 (an MLflow server) in MLFLOW_TRACKING_URI"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative paths against the working directory), else None.

    In-memory databases (``sqlite://``, ``sqlite:///:memory:``) have no file and give None too.
    """
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    raw = unquote(tracking_uri[len(SQLITE_PREFIX) :].split("?", 1)[0])
    if raw in ("", ":memory:"):
        return None
    return Path(raw).absolute()


def is_uri(location: str) -> bool:
    """True for ``scheme:...`` strings (``s3://``, ``file:///``, ``mlflow-artifacts:/``), False for plain paths."""
    return bool(_URI.match(location)) and not re.match(r"^[A-Za-z]:[\\/]", location)


def default_artifact_root(tracking_uri: str, artifact_root: Path | str | None) -> str | None:
    """Where new experiments keep their artifacts: ``artifact_root`` (absolute), or next to a SQLite DB.

    None lets a tracking server (or MLflow's file store) choose, which never depends on the working
    directory; for SQLite MLflow's own default would be ``./mlruns`` of whichever process created the
    experiment, so ``<db dir>/mlartifacts`` is used instead.
    """
    if artifact_root is not None:
        text = str(artifact_root)
        if isinstance(artifact_root, str) and is_uri(text):
            return text.rstrip("/")
        return Path(text).expanduser().absolute().as_posix()
    db = sqlite_path(tracking_uri)
    return (db.parent / "mlartifacts").as_posix() if db is not None else None


def experiment_artifact_location(root: str | None, experiment_name: str) -> str | None:
    """``<root>/<experiment name>`` with the name reduced to ``[A-Za-z0-9._-]`` (None when root is None).

    Two names that reduce to the same folder share it safely: every run writes below its own run id.
    """
    if root is None:
        return None
    folder = _SAFE_NAME.sub("_", experiment_name).strip("._") or "experiment"
    return f"{root}/{folder}"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if missing) for the duration of the block."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def check_tracking_location(tracking_uri: str) -> None:
    """Cheap checks that need no MLflow: a ``sqlite:///`` DB's folder exists or can be created; a tracking server
    (``http(s)://``) answers ``/health`` within :data:`SERVER_TIMEOUT_S` (MLflow's own client would retry a dead
    server for minutes, with the run's work already done).

    Raises:
        TrackingError: the folder cannot be created, or the server does not answer.
    """
    if tracking_uri.startswith(SERVER_SCHEMES):
        ping_tracking_server(tracking_uri)
        return
    db = sqlite_path(tracking_uri)
    if db is None:
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(f"cannot create the folder of tracking DB {db}: {exc}; {URI_HINT}") from exc


def ping_tracking_server(tracking_uri: str, timeout_s: float = SERVER_TIMEOUT_S) -> None:
    """Ask the MLflow server at ``tracking_uri`` for ``/health``.

    Raises:
        TrackingError: no answer within ``timeout_s``, or an answer that is not a healthy MLflow server.
    """
    import urllib.error
    import urllib.request

    parts = urlparse(tracking_uri)
    port = f":{parts.port}" if parts.port else ""
    health = f"{parts.scheme}://{parts.hostname}{port}{parts.path.rstrip('/')}/health"  # no credentials in it
    where = f"tracking server {mask_url(tracking_uri)} (MLFLOW_TRACKING_URI)"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as answer:
            if answer.status == 200:
                return
            reason = f"HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code} from {health}"
    except TimeoutError:
        reason = f"no answer within {timeout_s:g}s"
    except (OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise TrackingError(
        f"{where} did not answer /health ({reason}); start it "
        "(mlflow server --host HOST --port 5000 --serve-artifacts) or point MLFLOW_TRACKING_URI at a running one"
    )


def prepare_tracking_store(
    tracking_uri: str, artifact_root: Path | str | None = None, *, upgrade: bool = False
) -> None:
    """Create (or check) the tracking DB of a ``sqlite:///`` URI once, under ``<db path>.lock``.

    Idempotent and cheap (~50 ms) on an initialised DB; a no-op for other URIs (servers, PostgreSQL, the
    file store), which need no lock. The Default experiment MLflow creates with a new DB gets its
    artifacts under ``artifact_root`` instead of the creating process's ``./mlruns``.

    Args:
        tracking_uri: the MLflow tracking URI.
        artifact_root: artifact root for new experiments (see :func:`default_artifact_root`).
        upgrade: run ``mlflow db upgrade`` first, for a DB made by an older MLflow (back it up before).

    Raises:
        TrackingError: the DB cannot be created or opened, or its schema is older than this MLflow's.
    """
    db = sqlite_path(tracking_uri)
    if db is None:
        return
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from sqlalchemy.exc import SQLAlchemyError

    root = default_artifact_root(tracking_uri, artifact_root)
    check_tracking_location(tracking_uri)
    with file_lock(db.with_name(db.name + ".lock")):
        if upgrade and db.exists() and db.stat().st_size > 0:
            _upgrade(tracking_uri, db)
        try:
            SqlAlchemyStore(tracking_uri, root)  # type: ignore[no-untyped-call]
        except MlflowException as exc:
            if "out-of-date database schema" in exc.message:
                raise TrackingError(
                    f"tracking DB {db} was made by an older MLflow: {exc.message.split('.')[0]}. Back up {db}, "
                    f"then run `mlflow db upgrade {mask_url(tracking_uri)}` "
                    "or prepare_tracking_store(..., upgrade=True)"
                ) from exc
            raise TrackingError(
                f"cannot open tracking DB {db} ({mask_url(tracking_uri)}): {exc.message}; {URI_HINT}"
            ) from exc
        except SQLAlchemyError as exc:  # e.g. the file is not an SQLite database
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise TrackingError(
                f"cannot open tracking DB {db} ({mask_url(tracking_uri)}): {reason}; move the file away or {URI_HINT}"
            ) from exc


def _upgrade(tracking_uri: str, db: Path) -> None:
    log.info("upgrading the schema of tracking DB <%s>", db)
    out = subprocess.run(
        [sys.executable, "-m", "mlflow", "db", "upgrade", tracking_uri],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise TrackingError(f"`mlflow db upgrade {mask_url(tracking_uri)}` failed for {db}:\n{out.stderr[-2000:]}")


def make_client(tracking_uri: str) -> MlflowClient:
    """An ``MlflowClient`` whose tracking and model registry are both ``tracking_uri``.

    Raises:
        ConfigError: MLflow refuses the URI (unknown scheme, file store without ``MLFLOW_ALLOW_FILE_STORE``).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    except MlflowException as exc:
        reason = exc.message.strip().rstrip(".")
        raise ConfigError(f"MLFLOW_TRACKING_URI={tracking_uri!r} is not usable: {reason}; {URI_HINT}") from exc


def error_code(exc: BaseException) -> str:
    """MLflow's error code (``RESOURCE_DOES_NOT_EXIST``, ...) of an ``MlflowException``, else ``""``."""
    return str(getattr(exc, "error_code", ""))


@contextlib.contextmanager
def mlflow_errors(action: str, hint: str = "") -> Iterator[None]:
    """Re-raise an ``MlflowException`` inside the block as :class:`TrackingError` naming ``action``.

    ``action`` says what was attempted and where (``"log_batch to run 1f3c…"``); ``hint`` how to fix it.
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        message = f"{action} failed: {exc.message.strip().rstrip('.')}"
        raise TrackingError(f"{message}; {hint}" if hint else message) from exc


def local_artifact_dir(artifact_uri: str) -> Path | None:
    """The local folder behind a ``file://`` or plain-path artifact URI, else None (remote store)."""
    if not is_uri(artifact_uri):
        return Path(artifact_uri)
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(unquote(parsed.path))
    return None


# MLflow 3.17's UI shows an experiment as GenAI (overview, traces, "Evaluations") or as model training (the runs
# table) by its GenAI / Model training switch, which it takes from this URL parameter (the experiment-kind tag alone
# does not change it); links qtrain prints open in model-training mode
UI_MODEL_TRAINING = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def run_page_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The page of run ``run_id`` in the MLflow UI at ``ui_url`` (credentials masked), in model-training mode."""
    return f"{mask_url(ui_url).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{UI_MODEL_TRAINING}"
