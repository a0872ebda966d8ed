"""Training checkpoints of the torch models: tensors in safetensors, everything else in JSON (no pickle).

A checkpoint directory holds

* ``state.json``: the resumable scalars (epochs done, best validation loss and epoch, patience counter,
  whether early stopping fired, the seed, the configuration fingerprint, optimizer hyper-parameters,
  GradScaler and LR-scheduler state) and the names of the two tensor files below;
* ``resume-<epoch>.safetensors``: the current weights (``model.<name>``) and the optimizer's tensors
  (``optim.<param>.<name>``) after ``<epoch>`` epochs;
* ``best-<epoch>.safetensors``: the weights of the best validation epoch so far.

``state.json`` is replaced atomically after the tensor files it names are complete, so a run killed at
any point leaves a consistent checkpoint; files it no longer names are then deleted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from app.core.errors import ConfigError

STATE_FILE = "state.json"
FORMAT = 1


@dataclass
class Progress:
    """Where training stands; everything in it is JSON."""

    seed: int
    fingerprint: dict[str, Any]
    epochs_done: int = 0
    best_loss: float = float("inf")
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # optimizer groups, scaler, scheduler


def canonical(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """``fingerprint`` as it reads back from JSON (tuples become lists), for comparisons."""
    out: dict[str, Any] = json.loads(json.dumps(dict(fingerprint), sort_keys=True, default=str))
    return out


def optimizer_split(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizer's state as ``(tensors, JSON part)``."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "state": scalars}


def optimizer_join(tensors: Mapping[str, torch.Tensor], json_part: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_split`: a state dict ``Optimizer.load_state_dict`` accepts."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, entry in json_part["state"].items():
        state.setdefault(int(idx), {}).update(entry)
    return {"state": state, "param_groups": json_part["param_groups"]}


def _cpu(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in weights.items()}


def _atomic_save(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file(_cpu(tensors), str(tmp), metadata={"format": str(FORMAT)})
    os.replace(tmp, path)


def write_best(directory: Path, weights: Mapping[str, torch.Tensor], epoch: int) -> str:
    """Write the best weights of ``epoch``; returns the file name to record in ``state.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"best-{epoch:06d}.safetensors"
    _atomic_save(weights, directory / name)
    return name


def write_resume(
    directory: Path,
    progress: Progress,
    weights: Mapping[str, torch.Tensor],
    optimizer_tensors: Mapping[str, torch.Tensor],
    best_file: str | None,
) -> None:
    """Write the resumable state after ``progress.epochs_done`` epochs, then drop files no longer named."""
    directory.mkdir(parents=True, exist_ok=True)
    resume_file = f"resume-{progress.epochs_done:06d}.safetensors"
    tensors = {f"model.{k}": v for k, v in weights.items()} | dict(optimizer_tensors)
    _atomic_save(tensors, directory / resume_file)
    doc = {
        "format": FORMAT,
        "resume_file": resume_file,
        "best_file": best_file,
        "seed": progress.seed,
        "fingerprint": progress.fingerprint,
        "epochs_done": progress.epochs_done,
        "best_loss": progress.best_loss,
        "best_epoch": progress.best_epoch,
        "bad_epochs": progress.bad_epochs,
        "stopped": progress.stopped,
        "extra": progress.extra,
    }
    tmp = directory / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, directory / STATE_FILE)
    keep = {resume_file, best_file}
    for path in directory.glob("*.safetensors"):
        if path.name not in keep and path.name.startswith(("resume-", "best-")):
            path.unlink(missing_ok=True)


def read_state(directory: Path) -> dict[str, Any] | None:
    """The parsed ``state.json`` of ``directory``, or None when there is no checkpoint.

    Raises:
        ConfigError: the file exists but is not a qtrain checkpoint of a supported format.
    """
    path = directory / STATE_FILE
    if not path.is_file():
        return None
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
        fmt = doc["format"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not a qtrain training checkpoint ({exc}); delete {directory} to start over"
        ) from None
    if fmt != FORMAT:
        raise ConfigError(f"{path}: checkpoint format {fmt} is not supported (this qtrain writes {FORMAT})")
    return doc


def read_resume(directory: Path) -> tuple[Progress, dict[str, torch.Tensor], str | None] | None:
    """``(progress, tensors of the resume file on the CPU, best file name)``, or None without a checkpoint.

    Raises:
        ConfigError: a malformed checkpoint or a missing tensor file.
    """
    doc = read_state(directory)
    if doc is None:
        return None
    try:
        progress = Progress(
            seed=int(doc["seed"]),
            fingerprint=doc["fingerprint"],
            epochs_done=int(doc["epochs_done"]),
            best_loss=float(doc["best_loss"]),
            best_epoch=None if doc["best_epoch"] is None else int(doc["best_epoch"]),
            bad_epochs=int(doc["bad_epochs"]),
            stopped=bool(doc["stopped"]),
            extra=dict(doc["extra"]),
        )
        resume_file = str(doc["resume_file"])
        best_file = doc["best_file"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{directory / STATE_FILE} is incomplete ({exc}); delete {directory} to start over") from None
    path = directory / resume_file
    if not path.is_file():
        raise ConfigError(f"{directory / STATE_FILE} names {resume_file}, which is missing; delete {directory}")
    return progress, load_file(str(path), device="cpu"), best_file


def load_best_weights(directory: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The best-validation weights recorded in the checkpoint ``directory`` (a state dict).

    Raises:
        ConfigError: no checkpoint there, or it has no best weights (no validation segment, or no improvement).
    """
    doc = read_state(Path(directory))
    if doc is None or not doc.get("best_file"):
        raise ConfigError(f"{directory} holds no best-validation weights (was a valid segment configured?)")
    return load_file(str(Path(directory) / doc["best_file"]), device=str(device))


def load_last_weights(directory: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The weights after the last completed epoch recorded in the checkpoint ``directory``.

    Raises:
        ConfigError: no checkpoint there.
    """
    found = read_resume(Path(directory))
    if found is None:
        raise ConfigError(f"{directory} holds no training checkpoint ({STATE_FILE} missing)")
    return {k.removeprefix("model."): v.to(device) for k, v in found[1].items() if k.startswith("model.")}
