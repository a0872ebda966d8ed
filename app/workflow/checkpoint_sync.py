"""Torch training checkpoints kept as artifacts of the attempt's MLflow run, so a retry on another host resumes.

Workers on different hosts share no disk; they share the tracking server. While a pool task trains, a thread of
its attempt copies the checkpoint directory's latest consistent state (``state.json`` and the tensor files it
names, see :mod:`app.models.torch_checkpoint`) into the run's ``checkpoint/`` artifacts: the tensor files first,
``state.json`` last, so a reader that finds ``state.json`` finds what it names. A later attempt of the task, on
any host, downloads the previous attempt's checkpoint into its own checkpoint directory before training, unless
that directory already holds as many epochs (the same host's, or a shared directory).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from app.models.torch_checkpoint import STATE_FILE

log = logging.getLogger(__name__)

ARTIFACT_DIR = "checkpoint"


def _named_files(state: dict[str, Any]) -> list[str]:
    return [name for name in (state.get("resume_file"), state.get("best_file")) if isinstance(name, str) and name]


def _epochs(directory: Path) -> int:
    try:
        return int(json.loads((directory / STATE_FILE).read_text())["epochs_done"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def download_checkpoint(client: MlflowClient, run_id: str, directory: Path) -> int | None:
    """Copy run ``run_id``'s ``checkpoint/`` artifacts into ``directory`` when they hold more epochs than it does;
    returns the epochs of the checkpoint now there, or None when the run has none (or it could not be read: the
    attempt then trains from the local state, as it would without a tracking server)."""
    with tempfile.TemporaryDirectory(prefix="qtrain-ckpt-") as tmp:
        try:
            path = Path(client.download_artifacts(run_id, f"{ARTIFACT_DIR}/{STATE_FILE}", tmp))
            state = json.loads(path.read_text())
            remote = int(state["epochs_done"])
            if remote <= _epochs(directory):
                return _epochs(directory)
            files = [Path(client.download_artifacts(run_id, f"{ARTIFACT_DIR}/{n}", tmp)) for n in _named_files(state)]
        except Exception as exc:  # no checkpoint logged (a LightGBM task, or died before its first epoch)
            log.debug("run %s has no checkpoint to resume from: %s", run_id, exc)
            return None
        directory.mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copyfile(file, directory / file.name)
        tmp_state = directory / (STATE_FILE + ".tmp")
        shutil.copyfile(path, tmp_state)
        os.replace(tmp_state, directory / STATE_FILE)  # last: the tensor files it names are complete
    log.info("task checkpoint: %d epochs downloaded from run %s into %s", remote, run_id, directory)
    return remote


class CheckpointUploader:
    """While the ``with`` block runs, upload ``directory``'s checkpoint to the current run every ``period_s`` seconds
    when it has changed. ``run_id()`` names the run (None until the attempt has one). Upload trouble is logged and
    retried at the next period: the training goes on."""

    def __init__(
        self, client: MlflowClient, directory: Path, run_id: Callable[[], str | None], period_s: float
    ) -> None:
        self.client, self.directory, self.run_id, self.period_s = client, directory, run_id, period_s
        self.uploaded: dict[str, tuple[int, frozenset[str]]] = {}  # run id -> (state.json mtime_ns, files it named)
        self._repos: dict[str, Any] = {}  # run id -> its artifact repository (to delete stale files)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="checkpoint-upload", daemon=True)

    def __enter__(self) -> CheckpointUploader:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def _loop(self) -> None:
        while not self.stop.wait(self.period_s):
            try:
                self.upload_once()
            except Exception as exc:
                log.warning("checkpoint of %s not uploaded: %s", self.directory, exc)

    def upload_once(self) -> bool:
        """Upload the checkpoint if it changed since the last upload to this run; True when it did. Only the tensor
        files this run has not received yet go up (a file's name fixes its content), then ``state.json``."""
        run_id = self.run_id()
        state_path = self.directory / STATE_FILE
        if run_id is None or not state_path.exists():
            return False
        last_mtime, sent = self.uploaded.get(run_id, (None, frozenset()))
        if state_path.stat().st_mtime_ns == last_mtime:
            return False
        with tempfile.TemporaryDirectory(prefix="qtrain-ckpt-up-") as tmp:
            staged = Path(tmp)
            # hard links pin this state's files: the training thread may replace and delete them meanwhile
            os.link(state_path, staged / STATE_FILE)
            mtime = (staged / STATE_FILE).stat().st_mtime_ns
            state = json.loads((staged / STATE_FILE).read_text())
            names = frozenset(_named_files(state))
            try:
                for name in names - sent:
                    os.link(self.directory / name, staged / name)
            except FileNotFoundError:  # replaced between the two reads: the next period takes the new state
                return False
            for name in sorted(names - sent):
                self.client.log_artifact(run_id, str(staged / name), ARTIFACT_DIR)
            self.client.log_artifact(run_id, str(staged / STATE_FILE), ARTIFACT_DIR)
        self._delete(run_id, sent - names)
        self.uploaded[run_id] = (mtime, names)
        log.info("checkpoint after %s epochs uploaded to run %s", state.get("epochs_done"), run_id)
        return True

    def _delete(self, run_id: str, stale: frozenset[str]) -> None:
        """Drop the run's checkpoint files the new state no longer names, where the artifact store can delete."""
        if not stale:
            return
        if run_id not in self._repos:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            uri = self.client.get_run(run_id).info.artifact_uri
            self._repos[run_id] = get_artifact_repository(uri, tracking_uri=self.client.tracking_uri)
        for name in sorted(stale):
            with contextlib.suppress(NotImplementedError):
                self._repos[run_id].delete_artifacts(f"{ARTIFACT_DIR}/{name}")
