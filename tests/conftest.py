"""Shared fixtures: a clean environment for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Drop qtrain/MLflow variables so a developer's shell never leaks into a test."""
    for key in list(os.environ):
        if (key.startswith("QTRAIN_") and key != "QTRAIN_MONGO_URL") or key == "MLFLOW_TRACKING_URI":
            monkeypatch.delenv(key, raising=False)
    yield
