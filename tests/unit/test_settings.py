from __future__ import annotations

from pathlib import Path

import pytest

from app.core.errors import ConfigError
from app.core.settings import load_settings


def test_defaults_live_under_the_working_directory(tmp_path: Path) -> None:
    s = load_settings({}, cwd=tmp_path)
    assert s.home == tmp_path / ".qtrain"
    assert s.data_dir == tmp_path / ".qtrain" / "data" / "sample"
    assert s.cache_dir == tmp_path / ".qtrain" / "cache"
    assert s.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert s.broker_url == "redis://127.0.0.1:6379/0" and s.result_backend == s.broker_url
    assert s.task_store == f"sqlite:///{tmp_path / '.qtrain' / 'tasks.db'}"
    assert s.mongo_url is None and s.debug is False


def test_env_overrides(tmp_path: Path) -> None:
    env = {
        "QTRAIN_HOME": "state",
        "QTRAIN_DATA_DIR": "/data/cn",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "QTRAIN_BROKER_URL": "redis://r:6379/3",
        "QTRAIN_RESULT_BACKEND": "mongodb://m/celery",
        "QTRAIN_TASK_STORE": "mongodb://m/qtrain",
        "QTRAIN_DEBUG": "1",
    }
    s = load_settings(env, cwd=tmp_path)
    assert s.home == tmp_path / "state" and s.cache_dir == tmp_path / "state" / "cache"
    assert s.data_dir == Path("/data/cn")
    assert (s.tracking_uri, s.broker_url, s.result_backend) == (
        "http://mlflow:5000",
        "redis://r:6379/3",
        "mongodb://m/celery",
    )
    assert s.task_store == "mongodb://m/qtrain" and s.debug


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"QTRAIN_DEBUG": "maybe"}, r"QTRAIN_DEBUG='maybe' is not a switch; use QTRAIN_DEBUG=1 or QTRAIN_DEBUG=0"),
        ({"QTRAIN_DATA_DIR": " "}, r"QTRAIN_DATA_DIR is set but empty"),
    ],
)
def test_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)
