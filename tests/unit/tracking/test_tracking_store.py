"""Tracking-store plumbing: URIs, artifact roots, one-time SQLite preparation, client errors, provenance."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.core.errors import ConfigError, TrackingError
from app.tracking import ExpManager, prepare_tracking_store
from app.tracking.backend import (
    default_artifact_root,
    experiment_artifact_location,
    local_artifact_dir,
    make_client,
    sqlite_path,
)
from app.tracking.provenance import git_commit


def test_sqlite_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_path("sqlite:////data/mlflow.db") == Path("/data/mlflow.db")
    assert sqlite_path("sqlite:///rel/mlflow.db") == tmp_path / "rel" / "mlflow.db"
    assert sqlite_path("sqlite:////data/my%20db.db?timeout=30") == Path("/data/my db.db")
    assert sqlite_path("sqlite://") is None
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("http://mlflow:5000") is None
    assert sqlite_path("postgresql://u@db/mlflow") is None


def test_artifact_roots_and_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_artifact_root("sqlite:////x/m.db", Path("arts")) == f"{tmp_path}/arts"
    assert default_artifact_root("http://h:5000", "s3://bucket/prefix/") == "s3://bucket/prefix"
    assert default_artifact_root("sqlite:////x/m.db", None) == "/x/mlartifacts"
    assert default_artifact_root("http://h:5000", None) is None
    assert experiment_artifact_location("s3://b", "csi300 / lgbm") == "s3://b/csi300_lgbm"
    assert experiment_artifact_location("/a", "..") == "/a/experiment"
    assert experiment_artifact_location(None, "x") is None
    assert local_artifact_dir("file:///a/b%20c") == Path("/a/b c")
    assert local_artifact_dir("/a/b") == Path("/a/b")
    assert local_artifact_dir("s3://b/k") is None


def test_prepare_creates_once_and_is_cheap_afterwards(tmp_path: Path, template_db: Path) -> None:
    db = tmp_path / "deep" / "folder" / "mlflow.db"
    db.parent.mkdir(parents=True)
    shutil.copy(template_db, db)  # an initialised DB (creating one runs every migration, ~3 s)
    uri = f"sqlite:///{db}"
    began = time.perf_counter()
    for _ in range(3):
        prepare_tracking_store(uri, tmp_path / "arts")
    assert time.perf_counter() - began < 1.0
    assert (db.parent / "mlflow.db.lock").exists()
    prepare_tracking_store("http://127.0.0.1:1")  # servers need no preparation (and are not contacted)


def test_new_db_default_experiment_is_not_under_the_working_directory(template_db: Path) -> None:
    # template_db was created by prepare_tracking_store with artifact root <template dir>/artifacts
    client = make_client(f"sqlite:///{template_db}")
    assert client.get_experiment("0").artifact_location == f"{template_db.parent}/artifacts/0"


def test_unusable_uris_are_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError, match=r"MLFLOW_TRACKING_URI='file:.*MLFLOW_ALLOW_FILE_STORE"):
        ExpManager(f"file://{tmp_path}/mlruns")
    with pytest.raises(ConfigError, match=r"MLFLOW_TRACKING_URI='bogus://x'.*sqlite:///"):
        ExpManager("bogus://x")
    with pytest.raises(ConfigError, match="tracking URI is empty"):
        ExpManager(" ")


def test_file_store_works_when_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    manager = ExpManager(f"file://{tmp_path}/mlruns", tmp_path / "arts")
    with manager.start(experiment_name="fs") as rec:
        rec.log_metrics(ic=0.1)
        rec.save_objects(report={"ic": 0.1})
    assert rec.status == "FINISHED"
    assert rec.load_object("report") == {"ic": 0.1}
    assert rec.artifact_uri.startswith(f"{tmp_path}/arts/fs/")


def test_importing_tracking_does_not_import_mlflow_or_pandas() -> None:
    code = (
        "import sys, app.tracking; from app.tracking.facade import R; "
        "bad = [m for m in ('mlflow', 'pandas', 'matplotlib') if m in sys.modules]; assert not bad, bad; "
        "assert 'manager=None' in repr(R), repr(R)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_commit_of_a_checkout_and_elsewhere(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "f").write_text("x")
    subprocess.run([*git, "add", "f"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "m"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert git_commit(repo) == head and len(head) == 40
    (tmp_path / "plain").mkdir()
    assert git_commit(tmp_path / "plain") == "unknown"


def test_an_outdated_schema_says_how_to_upgrade(tmp_path: Path, template_db: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    shutil.copy(template_db, db)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE alembic_version SET version_num = 'a0a0a0a0a0a0'")
    with pytest.raises(TrackingError, match=r"older MLflow.*Back up .*old\.db.*mlflow db upgrade sqlite:///"):
        prepare_tracking_store(f"sqlite:///{db}")
