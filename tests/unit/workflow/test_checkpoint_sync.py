"""Torch checkpoints as run artifacts: uploaded while training (tensor files first, ``state.json`` last, files the new
state no longer names dropped) and brought into another host's checkpoint directory by the next attempt."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from app.models import torch_checkpoint as ckpt
from app.tracking.manager import ExpManager
from app.workflow.checkpoint_sync import ARTIFACT_DIR, CheckpointUploader, download_checkpoint


def _write(directory: Path, epochs: int) -> None:
    weights = {"w": torch.full((3,), float(epochs))}
    best = ckpt.write_best(directory, weights, epochs - 1)
    progress = ckpt.Progress(seed=0, fingerprint={"model": "x"}, epochs_done=epochs)
    ckpt.write_resume(directory, progress, weights, {}, best)


def test_a_checkpoint_goes_to_the_run_and_comes_back_on_another_host(tmp_path: Path) -> None:
    manager = ExpManager(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    client = manager.client
    experiment = client.create_experiment("ckpt", artifact_location=str(tmp_path / "artifacts" / "ckpt"))
    run_id = client.create_run(experiment).info.run_id
    host_a, host_b = tmp_path / "a" / "hash", tmp_path / "b" / "hash"
    uploader = CheckpointUploader(client, host_a, lambda: run_id, period_s=60)

    assert not uploader.upload_once()  # nothing checkpointed yet
    _write(host_a, 1)
    assert uploader.upload_once() and not uploader.upload_once()  # unchanged: not uploaded twice
    _write(host_a, 2)
    assert uploader.upload_once()
    names = sorted(Path(a.path).name for a in client.list_artifacts(run_id, ARTIFACT_DIR))
    assert names == ["best-000001.safetensors", "resume-000002.safetensors", "state.json"]  # epoch 1's dropped

    assert download_checkpoint(client, run_id, host_b) == 2
    assert json.loads((host_b / ckpt.STATE_FILE).read_text())["epochs_done"] == 2
    progress, tensors, best = ckpt.read_resume(host_b) or (None, {}, None)
    assert progress is not None and progress.epochs_done == 2 and best == "best-000001.safetensors"
    assert torch.equal(tensors["model.w"], torch.full((3,), 2.0))
    assert torch.equal(ckpt.load_best_weights(host_b)["w"], torch.full((3,), 2.0))

    _write(host_b, 3)  # this host is ahead of the run's copy: kept as it is
    assert download_checkpoint(client, run_id, host_b) == 3
    assert json.loads((host_b / ckpt.STATE_FILE).read_text())["epochs_done"] == 3


def test_a_run_without_a_checkpoint_leaves_the_directory_alone(tmp_path: Path) -> None:
    manager = ExpManager(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    experiment = manager.client.create_experiment("none", artifact_location=str(tmp_path / "artifacts" / "none"))
    run_id = manager.client.create_run(experiment).info.run_id
    assert download_checkpoint(manager.client, run_id, tmp_path / "dir") is None
    assert not (tmp_path / "dir").exists()
