"""Tracking fixtures: a fresh SQLite tracking store per test, copied from one initialised once per session.

Creating an MLflow SQLite DB runs every schema migration (~3 s); copying an initialised file is instant.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.tracking import ExpManager, Recorder, prepare_tracking_store


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mlflow-template")
    db = root / "mlflow.db"
    prepare_tracking_store(f"sqlite:///{db}", root / "artifacts")
    return db


@pytest.fixture
def tracking_uri(tmp_path: Path, template_db: Path) -> str:
    db = tmp_path / "mlflow.db"
    shutil.copy(template_db, db)
    return f"sqlite:///{db}"


@pytest.fixture
def artifact_root(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def manager(tracking_uri: str, artifact_root: Path, tmp_path: Path) -> ExpManager:
    return ExpManager(tracking_uri, artifact_root, source_dir=tmp_path)


@pytest.fixture
def recorder(manager: ExpManager) -> Iterator[Recorder]:
    rec = manager.start_exp(experiment_name="unit", recorder_name="r1")
    yield rec
    manager.end_exp()
