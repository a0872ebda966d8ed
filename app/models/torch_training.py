"""The one training loop of the torch models (GRU, MLP): devices, AMP, batches, early stopping, resume.

Qlib's semantics kept (``pytorch_gru.py``, ``pytorch_gru_ts.py``, ``pytorch_nn.py``): masked MSE (NaN labels
ignored), Adam, gradient *value* clipping, shuffled training batches without the last short batch, early
stopping once ``early_stop`` epochs in a row fail to beat the best validation loss, and the best-validation
weights restored at the end. Qlib defects not copied: without a validation segment the *trained* weights
are kept (Qlib restores the untrained ones); a NaN validation loss counts as no improvement instead of
crashing at the end; checkpoints are safetensors + JSON, never pickle. One difference on purpose: the
logged ``train.loss`` is the mean loss of the epoch's training batches (Qlib re-scores the whole training
set in eval mode after each epoch, which costs another pass and changes nothing that is decided).

Determinism: the caller's global RNG is never touched (:func:`seeded` forks it). With ``batching="seeded"``
(the default) each epoch reseeds the forked RNG (dropout) and its own shuffle generator from ``(seed, epoch)``,
so a fit resumed from a checkpoint replays exactly what the uninterrupted fit would have done (on the CPU; cuDNN
kernels may not be bitwise deterministic). The other batchings replay Qlib's own random streams from the same
seed (``numpy_shuffle``: ``pytorch_gru.py``; ``torch_loader``: ``pytorch_gru_ts.py``; ``numpy_draw``:
``pytorch_nn.py``; see :mod:`app.models.torch_data`): torch's RNG then runs on from the state the network was
built in, as Qlib's does, and checkpoints store the RNG states so a resumed fit replays those streams too. On
the CPU such a fit gives Qlib's trained weights bit for bit (tests/differential/test_torch_vs_qlib.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from app.core.errors import ConfigError
from app.core.interrupt import check_stop
from app.core.progress import ProgressBar
from app.models import torch_checkpoint as ckpt
from app.models.base import CurveRecorder
from app.models.torch_data import (
    DROPOUT_STREAM,
    Batches,
    BatchPlan,
    BatchSource,
    NumpyDrawPlan,
    NumpyShufflePlan,
    Plan,
    TorchLoaderPlan,
    epoch_seed,
)

log = logging.getLogger(__name__)

AMP_DTYPES: dict[str, torch.dtype | None] = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# How training batches are drawn: qtrain's per-epoch seeded shuffle, or one of Qlib's streams (see torch_data).
BATCHINGS = ("seeded", "numpy_shuffle", "torch_loader", "numpy_draw")


def resolve_device(spec: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` (= ``cuda:0``) or ``cuda:N``.

    Raises:
        ConfigError: not a device name, or a CUDA device this machine does not have.
    """
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec == "auto":
        return torch.device("cuda", 0) if count else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    head, _, index = spec.partition(":")
    if head != "cuda" or (index and not index.isdigit()):
        raise ConfigError(f"model.device={spec!r} is not a device; use auto, cpu, cuda or cuda:N")
    number = int(index) if index else 0
    if number >= count:
        why = "this torch build is CPU-only" if torch.version.cuda is None else "torch sees none"
        have = f"CUDA devices cuda:0..cuda:{count - 1}" if count else f"no CUDA device ({why})"
        raise ConfigError(f"model.device={spec!r}: this machine has {have}; set model.device=auto or cpu")
    return torch.device("cuda", number)


def device_queue(spec: str) -> str:
    """The Celery queue a model on device ``spec`` needs: ``gpu`` for CUDA devices, else ``cpu`` (never raises)."""
    wants_cuda = spec.startswith("cuda") or (spec == "auto" and torch.cuda.is_available())
    return "gpu" if wants_cuda else "cpu"


def check_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` (``off``/``bf16``/``fp16``) on ``device``; None for ``off``.

    fp16 runs on the CPU too (torch >= 2.3 has CPU float16 autocast and a CPU GradScaler), but slowly.

    Raises:
        ConfigError: an unknown mode, or bf16 on a GPU without bfloat16.
    """
    if amp not in AMP_DTYPES:
        raise ConfigError(f"model.amp={amp!r} is not an AMP mode; use one of {', '.join(AMP_DTYPES)}")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"model.amp=bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use amp=fp16 or off")
    return AMP_DTYPES[amp]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body with torch's global RNGs seeded with ``seed``, restoring the caller's RNG state after."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def masked_sse(pred: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of squared errors over finite labels, their count)``, in float32."""
    pred, label = pred.float().reshape(-1), label.float().reshape(-1)
    mask = torch.isfinite(label)
    diff = torch.where(mask, pred - torch.where(mask, label, 0.0), 0.0)
    return (diff * diff).sum(), mask.sum()


def masked_mse(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the finite labels (Qlib's ``loss_fn``); 0 when there are none."""
    sse, n = masked_sse(pred, label)
    return sse / n.clamp(min=1)


@dataclass(frozen=True, kw_only=True)
class Plateau:
    """Halve the learning rate when the validation loss stalls (Qlib MLP's ``ReduceLROnPlateau``)."""

    patience: int
    factor: float = 0.5
    threshold: float = 1e-4
    min_lr: float = 1e-5


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """What :func:`train` needs besides the network and the data."""

    n_epochs: int
    batch_size: int
    lr: float
    early_stop: int
    weight_decay: float = 0.0
    optimizer: str = "adam"
    clip_value: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: str = "off"
    num_workers: int = 0
    checkpoint_dir: str | None = None
    drop_last_valid: bool = False
    plateau: Plateau | None = None
    batching: str = "seeded"
    steps_per_epoch: int | None = None  # numpy_draw: training batches per epoch


@dataclass(frozen=True)
class FitReport:
    """The outcome of :func:`train`; curves cover the epochs run by this call (after ``resumed_at``)."""

    epochs_done: int
    best_epoch: int | None
    best_valid_loss: float
    stopped_early: bool
    resumed_at: int | None
    train_loss: tuple[float, ...]
    valid_loss: tuple[float, ...]


def _optimizer(net: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    if s.optimizer == "gd":
        return torch.optim.SGD(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    raise ConfigError(f"model.optimizer={s.optimizer!r} is not supported; use adam or gd")


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _ratio(total: torch.Tensor, count: torch.Tensor) -> float:
    n = int(count.item())
    return float(total.item()) / n if n else math.nan


def _train_epoch(
    net: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    s: TrainSettings,
    device: torch.device,
    amp: torch.dtype | None,
) -> float:
    net.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    for x, y in batches:
        with _autocast(device, amp):
            pred = net(x)
        sse, n = masked_sse(pred, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(sse / n.clamp(min=1)).backward()  # type: ignore[no-untyped-call]
        if s.clip_value is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_value_(net.parameters(), s.clip_value)
        scaler.step(optimizer)
        scaler.update()
        total += sse.detach()
        count += n
    return _ratio(total, count)


@torch.no_grad()
def _evaluate(
    net: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], device: torch.device, amp: torch.dtype | None
) -> float:
    net.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    for x, y in batches:
        with _autocast(device, amp):
            pred = net(x)
        sse, n = masked_sse(pred, y)
        total += sse
        count += n
    return _ratio(total, count)


def _weights(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _load_weights(net: nn.Module, weights: Mapping[str, torch.Tensor], where: str) -> None:
    try:
        net.load_state_dict(dict(weights))
    except RuntimeError as exc:
        raise ConfigError(f"{where}: weights do not fit this network ({str(exc).splitlines()[0]})") from None


def _resume(
    found: tuple[ckpt.Progress, dict[str, torch.Tensor], str | None],
    fingerprint: dict[str, Any],
    directory: Path,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None,
    plan: Plan,
    device: torch.device,
) -> tuple[ckpt.Progress, dict[str, torch.Tensor] | None, str | None, dict[str, torch.Tensor]]:
    """Load a checkpoint's state into the training objects; ``(progress, best weights, best file, RNG states)``."""
    progress, tensors, best_file = found
    stored = progress.fingerprint
    if stored != fingerprint:
        changed = sorted(k for k in fingerprint.keys() | stored.keys() if fingerprint.get(k) != stored.get(k))
        diff = ", ".join(f"{k}: {stored.get(k)!r} -> {fingerprint.get(k)!r}" for k in changed)
        raise ConfigError(
            f"checkpoint_dir {directory} was written by another configuration ({diff}); "
            "point model.checkpoint_dir elsewhere or delete it to start over"
        )
    _load_weights(net, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, str(directory))
    optimizer.load_state_dict(ckpt.optimizer_join(tensors, progress.extra["optimizer"]))
    scaler.load_state_dict(progress.extra["scaler"])
    if scheduler is not None and progress.extra.get("scheduler"):
        scheduler.load_state_dict(progress.extra["scheduler"])
    try:
        plan.restore(progress.extra.get("plan"), progress.epochs_done)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"checkpoint_dir {directory}: {exc}; delete it to start over") from None
    best = load_file(str(directory / best_file), device=str(device)) if best_file else None
    rng = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    return progress, best, best_file, rng


def _train_plan(n: int, s: TrainSettings, has_valid: bool) -> Plan:
    if s.batching == "seeded":
        return BatchPlan(n, s.batch_size, shuffle=True, drop_last=True, seed=s.seed)
    if s.batching == "numpy_shuffle":
        return NumpyShufflePlan(n, s.batch_size, s.seed)
    if s.batching == "torch_loader":
        return TorchLoaderPlan(n, s.batch_size, burn=3 if has_valid else 2)
    if s.batching == "numpy_draw":
        if s.steps_per_epoch is None or s.steps_per_epoch < 1:
            raise ConfigError(f"batching numpy_draw needs steps_per_epoch >= 1, not {s.steps_per_epoch!r}")
        return NumpyDrawPlan(n, s.batch_size, s.seed, s.steps_per_epoch)
    raise ConfigError(f"batching {s.batching!r} is not one of {', '.join(BATCHINGS)}")


def _rng_tensors(device: torch.device) -> dict[str, torch.Tensor]:
    """The global RNG states a Qlib stream continues from (the CPU's, and the training GPU's)."""
    states = {"rng.cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["rng.cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng(states: Mapping[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states["rng.cpu"].cpu())
    if device.type == "cuda" and "rng.cuda" in states:
        torch.cuda.set_rng_state(states["rng.cuda"].cpu(), device)


def train(
    net: nn.Module,
    train_source: BatchSource,
    valid_source: BatchSource | None,
    settings: TrainSettings,
    *,
    recorder: CurveRecorder | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    rng_state: torch.Tensor | None = None,
) -> FitReport:
    """Train ``net`` in place; with a validation source, stop early and end on the best-validation weights.

    ``settings.batching`` other than ``seeded`` replays one of Qlib's random streams: then torch's RNG is not
    reseeded per epoch but runs on from ``rng_state`` (the CPU state after the network was built under
    ``manual_seed(seed)``, as Qlib builds it; None: ``manual_seed(seed)``), and checkpoints keep the RNG states.

    With ``settings.checkpoint_dir``, an existing checkpoint there is resumed (a finished or early-stopped one
    just restores its best weights) and every epoch is checkpointed. ``fingerprint`` (the model's
    configuration; the loop adds its own settings and the sample counts) is stored with it, and resuming a
    checkpoint whose fingerprint differs is refused. Per-epoch ``train.loss``/``valid.loss`` go to ``recorder``.

    Raises:
        ConfigError: a bad device/AMP/optimizer, no training samples, or an incompatible checkpoint.
    """
    s = settings
    device = resolve_device(s.device)
    amp = check_amp(s.amp, device)
    if len(train_source) == 0:
        raise ConfigError("segments.train has no training samples (after DropnaLabel); widen segments.train")
    net.to(device)
    optimizer = _optimizer(net, s)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    scheduler = None
    if s.plateau is not None and valid_source is not None:
        p = s.plateau
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=p.factor, patience=p.patience, threshold=p.threshold, min_lr=p.min_lr
        )
    sizes = {"train_samples": len(train_source), "valid_samples": None if valid_source is None else len(valid_source)}
    loop = {k: getattr(s, k) for k in ("batch_size", "lr", "weight_decay", "optimizer", "clip_value", "seed", "amp")}
    if s.batching != "seeded":  # absent for seeded fits, as in checkpoints written before batchings existed
        loop |= {"batching": s.batching, "steps_per_epoch": s.steps_per_epoch}
    loop["plateau"] = None if s.plateau is None else dataclasses.asdict(s.plateau)
    fp = ckpt.canonical({**(fingerprint or {}), **loop, **sizes})
    progress = ckpt.Progress(seed=s.seed, fingerprint=fp)
    best: dict[str, torch.Tensor] | None = None
    best_file: str | None = None
    directory = Path(s.checkpoint_dir) if s.checkpoint_dir else None
    resumed_at = None
    train_plan = _train_plan(len(train_source), s, valid_source is not None)
    stream = s.batching != "seeded"
    rng_states: dict[str, torch.Tensor] = {}
    if directory is not None and (found := ckpt.read_resume(directory)) is not None:
        progress, best, best_file, rng_states = _resume(
            found, fp, directory, net, optimizer, scaler, scheduler, train_plan, device
        )
        if stream and "rng.cpu" not in rng_states and not progress.stopped and progress.epochs_done < s.n_epochs:
            raise ConfigError(f"checkpoint_dir {directory} holds no RNG state to continue {s.batching} batching")
        resumed_at = progress.epochs_done
        log.info("resuming from checkpoint %s at epoch %d", directory, progress.epochs_done)
    train_batches = Batches(train_source, train_plan, device, s.num_workers, s.seed)
    valid_batches = None
    if valid_source is not None:
        plan = BatchPlan(len(valid_source), s.batch_size, shuffle=False, drop_last=s.drop_last_valid, seed=s.seed)
        valid_batches = Batches(valid_source, plan, device, s.num_workers, s.seed)
    train_curve: list[float] = []
    valid_curve: list[float] = []
    bar = ProgressBar(s.n_epochs, type(net).__name__, unit="epochs", completed=progress.epochs_done)
    with seeded(s.seed), bar:
        if stream and rng_states:
            _set_rng(rng_states, device)
        elif stream and rng_state is not None:
            torch.set_rng_state(rng_state)
        while progress.epochs_done < s.n_epochs and not progress.stopped:
            check_stop()  # a cancelled task stops before its next epoch (the checkpoints stay)
            epoch = progress.epochs_done
            if not stream:
                torch.manual_seed(epoch_seed(s.seed, epoch, DROPOUT_STREAM))
            train_loss = _train_epoch(net, train_batches.epoch(epoch), optimizer, scaler, s, device, amp)
            train_curve.append(train_loss)
            metrics = {"train.loss": train_loss}
            if valid_batches is not None:
                valid_loss = _evaluate(net, valid_batches.epoch(epoch), device, amp)
                valid_curve.append(valid_loss)
                metrics["valid.loss"] = valid_loss
                if math.isnan(valid_loss):
                    log.warning("epoch %d: the validation loss is NaN; counted as no improvement", epoch)
                if valid_loss < progress.best_loss:
                    progress.best_loss, progress.best_epoch, progress.bad_epochs = valid_loss, epoch, 0
                    best = _weights(net)
                    if directory is not None:
                        best_file = ckpt.write_best(directory, best, epoch)
                else:
                    progress.bad_epochs += 1
                    progress.stopped = progress.bad_epochs >= s.early_stop
                if scheduler is not None:
                    scheduler.step(valid_loss)
            if math.isnan(train_loss):
                log.warning("epoch %d: the training loss is NaN (NaN features? add a Fillna processor)", epoch)
            log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.6f}" for k, v in metrics.items()))
            if recorder is not None:
                recorder.log_metrics(metrics, step=epoch)
            progress.epochs_done = epoch + 1
            note = " ".join(f"{k.removesuffix('.loss')} {v:.4g}" for k, v in metrics.items())
            bar.update(completed=progress.epochs_done, note=note + (" (stopped early)" if progress.stopped else ""))
            if directory is not None:
                opt_tensors, opt_json = ckpt.optimizer_split(optimizer)
                progress.extra = {
                    "optimizer": opt_json,
                    "scaler": scaler.state_dict(),
                    "scheduler": None if scheduler is None else scheduler.state_dict(),
                    "plan": train_plan.state(),
                }
                if stream:
                    opt_tensors |= _rng_tensors(device)
                ckpt.write_resume(directory, progress, net.state_dict(), opt_tensors, best_file)
    if progress.stopped:
        log.info("early stop after epoch %d: no improvement for %d epochs", progress.epochs_done - 1, s.early_stop)
    if valid_source is None:
        log.info("no valid segment: keeping the weights of the last epoch (%d)", progress.epochs_done - 1)
    elif best is None:
        log.warning("no epoch improved the validation loss (NaN?): keeping the weights of the last epoch")
    else:
        _load_weights(net, best, "best epoch")
        log.info("restored the best weights: epoch %s, valid loss %.6f", progress.best_epoch, progress.best_loss)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return FitReport(
        epochs_done=progress.epochs_done,
        best_epoch=progress.best_epoch,
        best_valid_loss=progress.best_loss,
        stopped_early=progress.stopped,
        resumed_at=resumed_at,
        train_loss=tuple(train_curve),
        valid_loss=tuple(valid_curve),
    )


@torch.no_grad()
def predict_scores(
    net: nn.Module, source: BatchSource, *, batch_size: int, amp: str = "off", num_workers: int = 0
) -> np.ndarray:
    """``net``'s outputs for every sample of ``source`` in order, in eval mode on ``net``'s device; float32."""
    device = next(net.parameters()).device
    dtype = check_amp(amp, device)
    batches = Batches(source, BatchPlan(len(source), batch_size, shuffle=False, drop_last=False, seed=0), device,
                       num_workers, 0)  # fmt: skip
    net.eval()
    out: list[np.ndarray] = []
    for x, _ in batches.epoch(0):
        with _autocast(device, dtype):
            pred = net(x)
        out.append(pred.float().reshape(-1).cpu().numpy())
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.empty(0, dtype=np.float32)
