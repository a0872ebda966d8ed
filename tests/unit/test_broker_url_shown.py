"""The broker URL a worker's banner (and its "Connected to" line, and Flower) shows: a password is masked only when
there is one, and the user name stays."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from celery.apps.worker import Worker

from app.core.settings import load_settings
from app.distributed.celery_config import make_app


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6399/1", "redis://127.0.0.1:6399/1"),  # kombu alone: redis://:**@127.0.0.1:6399/1
        ("redis://qtrain@127.0.0.1:6399/1", "redis://qtrain@127.0.0.1:6399/1"),
        ("redis://qtrain:s3cret@127.0.0.1:6399/1", "redis://qtrain:***@127.0.0.1:6399/1"),
        ("redis://:s3cret@127.0.0.1:6399/1", "redis://:***@127.0.0.1:6399/1"),
    ],
)
def test_the_worker_banner_shows_the_broker_url_masked_only_where_a_password_is(
    url: str, shown: str, tmp_path: Path
) -> None:
    app = make_app(load_settings({"QTRAIN_BROKER_URL": url}, tmp_path))
    assert app.connection().as_uri() == shown
    assert app.connection().as_uri(include_password=True) == url  # what Flower connects with
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Celery's warning about running as root
        banner = Worker(app=app, hostname="w@h", quiet=True).startup_info()
    assert f".> transport:   {shown}\n" in banner
    assert "s3cret" not in banner
