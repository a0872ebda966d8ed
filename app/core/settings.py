"""Every setting qtrain reads from the environment, with embedded defaults.

This module is the only reader of ``os.environ``. Relative paths are resolved against the working
directory when :func:`load_settings` runs, never at import time.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import ConfigError

SAMPLE_INSTRUMENTS = 100  # the embedded sample market: 100 instruments x 1500 trading days
SAMPLE_DAYS = 1500

ENV_VARS = {
    "QTRAIN_HOME": "root of qtrain's local state (default ./.qtrain)",
    "QTRAIN_DATA_DIR": "market data store in Qlib's binary layout (default $QTRAIN_HOME/data/sample)",
    "QTRAIN_CACHE_DIR": "feature cache (default $QTRAIN_HOME/cache)",
    "MLFLOW_TRACKING_URI": "MLflow tracking URI (default sqlite:///mlflow.db in the working directory)",
    "QTRAIN_ARTIFACT_ROOT": "MLflow artifact location for new experiments: a directory or a URI (s3://...); "
    "default $QTRAIN_HOME/mlartifacts for a SQLite tracking store, the tracking server's choice for http(s)://",
    "QTRAIN_BROKER_URL": "Celery broker (default redis://127.0.0.1:6379/0)",
    "QTRAIN_RESULT_BACKEND": "Celery result backend (default: the broker URL)",
    "QTRAIN_TASK_STORE": "task pool store, sqlite:///PATH or mongodb://... (default sqlite under $QTRAIN_HOME)",
    "QTRAIN_MONGO_URL": "MongoDB URL used by the Mongo task store and its tests (default unset)",
    "QTRAIN_CHECKPOINT_DIR": "torch checkpoints of pool tasks, so a retry resumes (default $QTRAIN_HOME/checkpoints)",
    "QTRAIN_LEASE_S": "seconds a worker's claim on a task lasts without a heartbeat (default 30)",
    "QTRAIN_WORKER_THREADS": "torch/LightGBM threads per Celery worker process (default: the libraries' own)",
    "QTRAIN_DEBUG": "1 to show tracebacks on CLI errors",
}

SERVER_SCHEMES = ("http://", "https://")


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one qtrain process."""

    home: Path
    data_dir: Path
    cache_dir: Path
    tracking_uri: str
    artifact_root: Path | str | None  # a URI stays a string; None: the tracking server decides (proxied artifacts)
    broker_url: str
    result_backend: str
    task_store: str
    mongo_url: str | None
    debug: bool
    checkpoint_dir: Path
    lease_s: float
    worker_threads: int | None

    @property
    def tracking_server(self) -> bool:
        """Whether MLflow is a tracking server (``http(s)://``) rather than a store on this host's disk."""
        return self.tracking_uri.startswith(SERVER_SCHEMES)


def load_settings(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    """Build :class:`Settings` from ``env`` (default: the process environment).

    Raises:
        ConfigError: a variable holds a value that cannot be used.
    """
    env = os.environ if env is None else env
    base = Path.cwd() if cwd is None else cwd
    home = _path(env, "QTRAIN_HOME", base / ".qtrain", base)
    broker = env.get("QTRAIN_BROKER_URL", "redis://127.0.0.1:6379/0")
    return Settings(
        home=home,
        data_dir=_path(env, "QTRAIN_DATA_DIR", home / "data" / "sample", base),
        cache_dir=_path(env, "QTRAIN_CACHE_DIR", home / "cache", base),
        tracking_uri=env.get("MLFLOW_TRACKING_URI", f"sqlite:///{base / 'mlflow.db'}"),
        artifact_root=_artifact_root(env, env.get("MLFLOW_TRACKING_URI", ""), home / "mlartifacts", base),
        broker_url=broker,
        result_backend=env.get("QTRAIN_RESULT_BACKEND", broker),
        task_store=env.get("QTRAIN_TASK_STORE", f"sqlite:///{home / 'tasks.db'}"),
        mongo_url=env.get("QTRAIN_MONGO_URL") or None,
        debug=_flag(env, "QTRAIN_DEBUG"),
        checkpoint_dir=_path(env, "QTRAIN_CHECKPOINT_DIR", home / "checkpoints", base),
        lease_s=_number(env, "QTRAIN_LEASE_S", 30.0, minimum=1.0),
        worker_threads=int(_number(env, "QTRAIN_WORKER_THREADS", 0, minimum=0)) or None,
    )


@functools.cache
def get_settings() -> Settings:
    """Process-wide settings, for the edges (CLI, Celery app, tasks) only."""
    return load_settings()


def _path(env: Mapping[str, str], key: str, default: Path, base: Path) -> Path:
    raw = env.get(key)
    if raw is None:
        return default
    if not raw.strip():
        raise ConfigError(f"{key} is set but empty; unset it or give a directory, e.g. {key}={default}")
    path = Path(raw).expanduser()
    return path if path.is_absolute() else base / path


def _artifact_root(env: Mapping[str, str], tracking_uri: str, default: Path, base: Path) -> Path | str | None:
    """``QTRAIN_ARTIFACT_ROOT`` as a URI (``s3://...``, ``mlflow-artifacts:/...``) or a directory; unset: the
    default directory, except with a tracking server (``http(s)://``), which then keeps the artifacts itself
    (``mlflow server --serve-artifacts``), so workers on other hosts need no shared filesystem."""
    raw = env.get("QTRAIN_ARTIFACT_ROOT")
    if raw is not None and re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://|^mlflow-artifacts:", raw.strip()):
        return raw.strip()
    if raw is None and tracking_uri.startswith(SERVER_SCHEMES):
        return None
    return _path(env, "QTRAIN_ARTIFACT_ROOT", default, base)


def _number(env: Mapping[str, str], key: str, default: float, *, minimum: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= minimum:
        raise ConfigError(f"{key}={raw!r} is not a number >= {minimum:g}; e.g. {key}={default:g}")
    return value


def _flag(env: Mapping[str, str], key: str) -> bool:
    raw = env.get(key, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{key}={env[key]!r} is not a switch; use {key}=1 or {key}=0")
