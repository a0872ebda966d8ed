"""What the torch models share: fit / predict / save / load / queue around :func:`torch_training.train`.

A model is a keyword-only dataclass deriving from :class:`TorchModel`; it declares the training fields
listed on the class and provides the network (:meth:`TorchModel.build_net`), the data
(:meth:`TorchModel.training_data`, :meth:`TorchModel.prediction_data`) and the feature-count check.
Saved as ``model.json`` (constructor params) + ``weights.safetensors`` (state dict; metadata
``n_features``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from app.core.errors import ConfigError, NotFittedError
from app.dataset.dataset import Dataset, TSDataset
from app.dataset.timeseries import TSSampler
from app.dataset.views import ViewName
from app.models.base import MODEL_FILE, CurveRecorder, check_hyperparameters, read_model_json, write_model_json
from app.models.torch_data import ArraySource, BatchSource, WindowSource
from app.models.torch_training import (
    FitReport,
    Plateau,
    TrainSettings,
    check_amp,
    device_queue,
    predict_scores,
    resolve_device,
    seeded,
    train,
)

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.safetensors"
# Fields that may change between a checkpointed fit and its resumption.
RUNTIME_FIELDS = frozenset({"n_epochs", "early_stop", "device", "num_workers", "checkpoint_dir"})
# Fields that only matter with batching: qlib; left out of a seeded fit's fingerprint, which keeps checkpoints
# written before they existed resumable.
QLIB_BATCHING_FIELDS = frozenset({"batching", "eval_steps"})


class TorchModel:
    """Base of the torch models (see the module docstring)."""

    registry_name: ClassVar[str]
    drop_last_valid: ClassVar[bool] = False  # Qlib's GRU validates without the last short batch

    n_epochs: int
    batch_size: int
    lr: float
    early_stop: int
    optimizer: str
    weight_decay: float
    clip_value: float | None
    seed: int
    batching: str
    device: str
    amp: str
    num_workers: int
    checkpoint_dir: str | None

    _net: nn.Module | None = None
    _n_features: int | None = None
    fit_report: FitReport | None = None

    # -- what a model provides ------------------------------------------------------------------------------
    def build_net(self, n_features: int) -> nn.Module:
        """A freshly initialised network for ``n_features`` input features."""
        raise NotImplementedError

    def check_features(self, n_features: int) -> None:
        """Raise ConfigError when the data's feature count does not fit the configuration."""

    def training_data(self, dataset: Dataset) -> tuple[BatchSource, BatchSource | None, int]:
        """``(train source, valid source or None, feature count)`` from the learn view."""
        raise NotImplementedError

    def prediction_data(self, dataset: Dataset, segment: str) -> tuple[BatchSource, pd.MultiIndex, int]:
        """``(source, its (datetime, instrument) index, feature count)`` from the infer view."""
        raise NotImplementedError

    def plateau(self) -> Plateau | None:
        """The learning-rate schedule on the validation loss, if any."""
        return None

    def loop_batching(self) -> tuple[str, int | None]:
        """``(TrainSettings.batching, steps_per_epoch)`` for this model's ``batching``: ``seeded`` is qtrain's
        own; a model that replays Qlib's stream for ``batching: qlib`` overrides this."""
        if self.batching != "seeded":
            raise ConfigError(f"{type(self).__name__}: batching={self.batching!r} is not supported; use seeded")
        return "seeded", None

    def check_values(self) -> list[tuple[str, object, bool, str]]:
        """Model-specific ``(field, value, ok, rule)`` range checks."""
        return []

    # -- shared behaviour -----------------------------------------------------------------------------------
    @property
    def queue(self) -> str:
        """``gpu`` when the configured device is (or, for ``auto``, resolves to) CUDA, else ``cpu``."""
        return device_queue(self.device)

    def params(self) -> dict[str, Any]:
        """The constructor's keyword arguments (what ``model.json`` stores)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        # Called by the subclasses' dataclass __init__: a bad hyper-parameter fails when the model is built
        # (before any work is queued), not when a worker starts training.
        self.validate()

    def validate(self) -> None:
        """Check types (annotations) and ranges of the hyper-parameters.

        Raises:
            ConfigError: naming the field, the value and the rule.
        """
        check_hyperparameters(self)
        checks = [
            ("n_epochs", self.n_epochs, self.n_epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size, self.batch_size >= 1, ">= 1"),
            ("early_stop", self.early_stop, self.early_stop >= 1, ">= 1"),
            ("lr", self.lr, self.lr > 0, "> 0"),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0"),
            ("clip_value", self.clip_value, self.clip_value is None or self.clip_value > 0, "> 0 or null"),
            ("seed", self.seed, self.seed >= 0, ">= 0"),
            ("num_workers", self.num_workers, self.num_workers >= 0, ">= 0"),
            *self.check_values(),
        ]
        for name, value, ok, rule in checks:
            if not ok:
                raise ConfigError(f"{type(self).__name__}: {name}={value!r} must be {rule}; fix model.{name}")

    def settings(self) -> TrainSettings:
        """The loop settings of this model."""
        batching, steps_per_epoch = self.loop_batching()
        return TrainSettings(
            n_epochs=self.n_epochs,
            batch_size=self.batch_size,
            lr=float(self.lr),
            early_stop=self.early_stop,
            weight_decay=float(self.weight_decay),
            optimizer=self.optimizer,
            clip_value=None if self.clip_value is None else float(self.clip_value),
            seed=self.seed,
            device=self.device,
            amp=self.amp,
            num_workers=self.num_workers,
            checkpoint_dir=self.checkpoint_dir,
            drop_last_valid=self.drop_last_valid,
            plateau=self.plateau(),
            batching=batching,
            steps_per_epoch=steps_per_epoch,
        )

    def fit(self, dataset: Dataset, recorder: CurveRecorder | None = None) -> None:
        """Train on ``segments.train`` (learn view), early-stopping on ``segments.valid`` when it exists.

        Details in :func:`app.models.torch_training.train`; the outcome is kept in ``fit_report``.

        Raises:
            ConfigError: bad hyper-parameters, an unavailable device, a feature-count mismatch, a bad checkpoint.
        """
        self.validate()
        check_amp(self.amp, resolve_device(self.device))
        train_source, valid_source, n_features = self.training_data(dataset)
        self.check_features(n_features)
        with seeded(self.seed):
            net = self.build_net(n_features)
            after_init = torch.get_rng_state()  # where Qlib's training continues its stream (batching: qlib)
        skip = RUNTIME_FIELDS | (QLIB_BATCHING_FIELDS if self.batching == "seeded" else frozenset())
        fingerprint = {k: v for k, v in self.params().items() if k not in skip}
        fingerprint |= {"model": self.registry_name, "n_features": n_features}
        log.info(
            "%s: %d training / %s validation samples, %d features, device %s, amp %s",
            type(self).__name__, len(train_source), "no" if valid_source is None else len(valid_source),
            n_features, self.device, self.amp,
        )  # fmt: skip
        self.fit_report = train(net, train_source, valid_source, self.settings(), recorder=recorder,
                                fingerprint=fingerprint, rng_state=after_init)  # fmt: skip
        self._net, self._n_features = net, n_features

    def predict(self, dataset: Dataset, segment: str = "test") -> pd.Series:
        """Scores (float32, named ``score``) for the rows of ``segment`` of the infer view.

        Raises:
            NotFittedError: neither fitted nor loaded.
            ConfigError: the dataset's feature count differs from the one trained on.
        """
        net = self._fitted()
        source, index, n_features = self.prediction_data(dataset, segment)
        if n_features != self._n_features:
            raise ConfigError(
                f"{type(self).__name__} was trained on {self._n_features} features but segments.{segment} has "
                f"{n_features}; predict with the dataset configuration the model was trained with"
            )
        scores = predict_scores(net, source, batch_size=self.batch_size, amp=self.amp, num_workers=self.num_workers)
        if isinstance(source, WindowSource) and source.order is not None:
            served, scores = scores, np.empty_like(scores)
            scores[source.order] = served  # the k-th score is the window of sample order[k]
        return pd.Series(scores, index=index, name="score")

    def save(self, directory: Path) -> None:
        """Write ``model.json`` and ``weights.safetensors`` into ``directory``.

        Raises:
            NotFittedError: neither fitted nor loaded.
        """
        net = self._fitted()
        directory = Path(directory)
        write_model_json(directory, self.registry_name, self.params())
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"n_features": str(self._n_features)})

    @classmethod
    def load(cls, directory: Path) -> Self:
        """A model saved by :meth:`save`, on its configured device when this machine has it, else the CPU.

        Raises:
            ConfigError: not a saved model of this type, or weights that do not fit its configuration.
        """
        directory = Path(directory)
        kind, params = read_model_json(directory)
        if kind != cls.registry_name:
            raise ConfigError(f"{directory} holds a {kind!r} model, not {cls.registry_name!r}; use load_model()")
        try:
            model = cls(**params)
        except TypeError as exc:
            raise ConfigError(f"{directory / MODEL_FILE}: {exc}") from None
        model.validate()
        try:
            device = resolve_device(model.device)
        except ConfigError:
            log.info("%s: device %s is not available here; loading on the cpu", directory, model.device)
            device = resolve_device("cpu")
        path = directory / WEIGHTS_FILE
        if not path.is_file():
            raise ConfigError(f"{directory} has {MODEL_FILE} but no {WEIGHTS_FILE}; save the model again")
        with safe_open(str(path), "pt") as f:
            n_features = int((f.metadata() or {}).get("n_features", "0"))
        with seeded(model.seed):
            net = model.build_net(n_features)
        try:
            net.load_state_dict(load_file(str(path)))
        except RuntimeError as exc:
            raise ConfigError(f"{path}: weights do not fit {cls.__name__}({params}): {exc}") from None
        model._net, model._n_features = net.to(device), n_features
        return model

    def _fitted(self) -> nn.Module:
        if self._net is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(dataset) or load() a saved model")
        return self._net


def one_label(names: tuple[str, ...] | list[str], segment: str) -> None:
    """Training needs exactly one label column.

    Raises:
        ConfigError: none or several.
    """
    if len(names) != 1:
        raise ConfigError(
            f"segments.{segment} has label columns {list(names)}; the torch models train on exactly one label "
            "(set the handler's label to a single expression)"
        )


def window_data(dataset: Dataset, segment: str, view: ViewName) -> TSSampler:
    """Windows of ``segment`` with the dataset's ``step_len`` (a :class:`TSDataset` is required).

    Raises:
        ConfigError: the dataset has no ``step_len``.
    """
    if not isinstance(dataset, TSDataset):
        raise ConfigError(
            "a time-series model needs windows: set dataset.step_len (e.g. dataset.step_len=20, Qlib's GRU "
            "benchmark) or use the tabular variant (model.time_series=false)"
        )
    return dataset.prepare_ts(segment, view=view)


def window_training_data(dataset: Dataset, *, qlib_order: bool = False) -> tuple[BatchSource, BatchSource | None, int]:
    """Time-series train/valid sources from the learn view (samples numbered as Qlib's with ``qlib_order``)."""
    train_windows = window_data(dataset, "train", "learn")
    one_label(train_windows.label_names, "train")
    valid = None
    if "valid" in dataset.segments:
        valid = WindowSource(window_data(dataset, "valid", "learn"), qlib_order=qlib_order)
    return WindowSource(train_windows, qlib_order=qlib_order), valid, len(train_windows.feature_names)


def tabular_training_data(
    dataset: Dataset, model: str, *, drop_nan_labels: bool = False
) -> tuple[BatchSource, BatchSource | None, int]:
    """Tabular train/valid sources from the learn view; rows with NaN/inf features are dropped (as Qlib's
    ``dropna()`` in the tabular GRU and the ``DropnaProcessor`` of its MLP benchmark do), and with
    ``drop_nan_labels`` rows with a NaN label too (the rest of that ``dropna()``; otherwise they are kept and
    left out of the loss).

    Raises:
        UnknownSegmentError: the dataset has no ``train`` segment.
    """
    train_source, n_features = _tabular_segment(dataset, "train", model, drop_nan_labels)
    valid = None
    if "valid" in dataset.segments:
        valid = _tabular_segment(dataset, "valid", model, drop_nan_labels)[0]
    return train_source, valid, n_features


def _tabular_segment(dataset: Dataset, segment: str, model: str, drop_nan_labels: bool) -> tuple[ArraySource, int]:
    frame = dataset.prepare(segment, ["feature", "label"], view="learn")
    labels, features = cast(pd.DataFrame, frame["label"]), cast(pd.DataFrame, frame["feature"])
    one_label(list(labels.columns), segment)
    x = features.to_numpy(dtype=np.float32)
    y = labels.to_numpy(dtype=np.float32)[:, 0]
    keep = np.isfinite(x).all(axis=1)
    if not keep.all():
        log.warning(
            "%s: dropping %d of %d segments.%s rows with NaN/inf features (a Fillna processor keeps them)",
            model, int((~keep).sum()), len(keep), segment,
        )  # fmt: skip
    if drop_nan_labels:
        keep &= ~np.isnan(y)
    return ArraySource(x[keep], y[keep]), features.shape[1]


def tabular_prediction_data(dataset: Dataset, segment: str) -> tuple[BatchSource, pd.MultiIndex, int]:
    """Features of ``segment`` from the infer view."""
    frame = dataset.prepare(segment, "feature", view="infer")
    index = frame.index
    assert isinstance(index, pd.MultiIndex)
    return ArraySource(frame.to_numpy(dtype=np.float32)), index, frame.shape[1]


def window_prediction_data(
    dataset: Dataset, segment: str, *, qlib_order: bool = False
) -> tuple[BatchSource, pd.MultiIndex, int]:
    """Windows of ``segment`` from the infer view; with ``qlib_order`` served in Qlib's sample order (so that
    the batches hold the windows Qlib's do), the index staying in the sampler's order."""
    windows = window_data(dataset, segment, "infer")
    return WindowSource(windows, qlib_order=qlib_order), windows.index, len(windows.feature_names)
