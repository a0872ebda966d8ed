"""Qlib's GRU baselines: the time-series GRU (``pytorch_gru_ts.GRU``, benchmark "GRU" on 20 Alpha158 columns
with ``step_len`` 20) and the tabular Alpha360 GRU (``pytorch_gru.GRU``), one class with ``time_series``.

Network (Qlib's ``GRUModel``, same state-dict keys): ``nn.GRU(d_feat, hidden_size, num_layers,
batch_first, dropout)`` → the last step's output → ``Linear(hidden_size, 1)``. The tabular variant reshapes
``[N, d_feat·T]`` features to ``[N, T, d_feat]`` exactly as Qlib does (``reshape(N, d_feat, -1)`` then
``permute(0, 2, 1)``), which matches Alpha360's field-major column order.

Training (see :mod:`app.models.torch_training`): Adam, masked MSE, gradient value clipping at 3.0, shuffled
batches without the last short one, validation without its last short batch (Qlib's ``drop_last``),
early stopping on the validation loss, best weights restored.

Defaults are Qlib's class defaults except ``batch_size`` (800, both benchmark configs; the class default
is 2000). Benchmark GRU (Alpha158, 20 columns): ``time_series=true, d_feat=20, lr=2e-4, early_stop=10``
with ``dataset.step_len=20``; benchmark Alpha360 GRU: ``time_series=false, d_feat=6`` and the defaults.

Same seed, same model as Qlib. The network is built under ``torch.manual_seed(seed)`` in Qlib's module order,
so the initial weights are Qlib's. ``batching="qlib"`` also replays Qlib's random streams: the time-series
variant numbers its windows as Qlib's ``TSDataSampler`` does (instrument, then date) and draws its shuffles as
``DataLoader(shuffle=True)`` does from torch's global RNG, including the draws of Qlib's per-epoch re-scoring
and validation passes; the tabular variant shuffles with ``np.random.seed(seed)``'s stream and drops rows with
a NaN label as Qlib's ``dropna()`` does; dropout draws from the same torch stream as Qlib's. On the CPU the
trained weights are then Qlib's bit for bit (tests/differential/test_torch_vs_qlib.py). What still differs:

* ``train.loss`` is the mean loss of the epoch's training batches; Qlib's logged train curve re-scores the
  training data in eval mode after the epoch (the time-series variant on a fresh shuffle, without its last
  short batch). Nothing is decided on it.
* ``valid.loss`` pools the squared errors of the validation batches; Qlib averages the batch means (and the
  time-series variant computes its loss in float64, through its float64 sample weights). Equal up to rounding
  (~1e-8 relative) when every label is finite; with NaN labels (a learn view without ``DropnaLabel``) the two
  weight the batches differently and early stopping may differ.
* Predictions: with ``batching="qlib"`` the time-series variant also predicts in Qlib's batches (instrument,
  then date; the result is indexed as always), because the CPU GRU kernels' last bits depend on which windows
  share a batch (~1e-8 otherwise).
* Defects not copied: with fewer samples than one batch Qlib trains on nothing (here: one short batch); with no
  validation segment tabular Qlib ends on the untrained weights; rows with inf features are dropped here
  (Qlib's ``dropna()`` keeps them). Qlib's DataLoader workers (``n_jobs``) only gather windows: no number
  depends on them.

With the default ``batching="seeded"`` each epoch's shuffle and dropout come from ``(seed, epoch)`` instead
(resumable without RNG state, independent of the network's own draws); the initialisation is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import pandas as pd
import torch
from torch import nn

from app.core.errors import ConfigError
from app.dataset.dataset import Dataset
from app.models.torch_data import BatchSource
from app.models.torch_model import (
    TorchModel,
    tabular_prediction_data,
    tabular_training_data,
    window_prediction_data,
    window_training_data,
)


class GRUNet(nn.Module):
    """GRU → last step → linear; ``tabular`` nets take flat ``[N, d_feat·T]`` rows (Alpha360 layout)."""

    def __init__(self, *, d_feat: int, hidden_size: int, num_layers: int, dropout: float, tabular: bool) -> None:
        super().__init__()
        self.d_feat, self.tabular = d_feat, tabular
        self.rnn = nn.GRU(
            input_size=d_feat, hidden_size=hidden_size, num_layers=num_layers, batch_first=True, dropout=dropout
        )
        self.fc_out = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``[N]`` (Qlib's ``squeeze()`` returned a 0-d tensor for a batch of one; this does not)."""
        if self.tabular:
            # [N, F*T] -> [N, F, T] -> [N, T, F]; contiguous: a strided input makes the CPU GRU ~50x slower
            x = x.reshape(len(x), self.d_feat, -1).permute(0, 2, 1).contiguous()
        out, _ = self.rnn(x)
        result: torch.Tensor = self.fc_out(out[:, -1, :]).squeeze(-1)
        return result


@dataclass(kw_only=True)
class GRUModel(TorchModel):
    """Qlib's GRU (time-series or tabular Alpha360); fit / predict / save / load as :class:`TorchModel`.

    Raises:
        ConfigError: from fit, for bad hyper-parameters, a device this machine lacks, or a ``d_feat`` that
            does not match the dataset.
    """

    registry_name: ClassVar[str] = "gru"
    drop_last_valid: ClassVar[bool] = True

    time_series: bool
    d_feat: int = 6
    hidden_size: int = 64
    num_layers: int = 2
    dropout: float = 0.0
    n_epochs: int = 200
    lr: float = 0.001
    batch_size: int = 800
    early_stop: int = 20
    optimizer: Literal["adam", "gd"] = "adam"
    weight_decay: float = 0.0
    clip_value: float | None = 3.0
    seed: int = 0
    batching: Literal["seeded", "qlib"] = "seeded"
    device: str = "auto"
    amp: Literal["off", "bf16", "fp16"] = "off"
    num_workers: int = 0
    checkpoint_dir: str | None = None

    def build_net(self, n_features: int) -> nn.Module:
        """A fresh :class:`GRUNet` (``n_features`` is checked against ``d_feat`` by :meth:`check_features`)."""
        return GRUNet(
            d_feat=self.d_feat,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            dropout=float(self.dropout),
            tabular=not self.time_series,
        )

    def loop_batching(self) -> tuple[str, int | None]:
        """``qlib``: Qlib's DataLoader stream (time series) or its ``np.random.shuffle`` stream (tabular)."""
        if self.batching == "qlib":
            return ("torch_loader" if self.time_series else "numpy_shuffle"), None
        return super().loop_batching()

    def check_values(self) -> list[tuple[str, object, bool, str]]:
        """Ranges of the network's fields."""
        return [
            ("d_feat", self.d_feat, self.d_feat >= 1, ">= 1"),
            ("hidden_size", self.hidden_size, self.hidden_size >= 1, ">= 1"),
            ("num_layers", self.num_layers, self.num_layers >= 1, ">= 1"),
            ("dropout", self.dropout, 0 <= self.dropout < 1, "in [0, 1)"),
        ]

    def check_features(self, n_features: int) -> None:
        """Time series: ``n_features == d_feat``; tabular: ``n_features`` is a multiple of ``d_feat``.

        Raises:
            ConfigError: naming both numbers and the fix.
        """
        if self.time_series and n_features != self.d_feat:
            raise ConfigError(
                f"GRUModel: the dataset has {n_features} features per step but model.d_feat={self.d_feat}; "
                f"set model.d_feat={n_features}"
            )
        if not self.time_series and n_features % self.d_feat:
            raise ConfigError(
                f"GRUModel (time_series=false): {n_features} feature columns do not split into d_feat={self.d_feat} "
                "series of equal length; set model.d_feat to the number of fields (model.d_feat=6 for Alpha360), "
                "or model.time_series=true with dataset.step_len for per-day features"
            )

    def training_data(self, dataset: Dataset) -> tuple[BatchSource, BatchSource | None, int]:
        """Windows (time series) or rows (tabular) of the learn view."""
        qlib = self.batching == "qlib"
        if self.time_series:
            return window_training_data(dataset, qlib_order=qlib)
        return tabular_training_data(dataset, "GRUModel", drop_nan_labels=qlib)

    def prediction_data(self, dataset: Dataset, segment: str) -> tuple[BatchSource, pd.MultiIndex, int]:
        """Windows or rows of ``segment`` in the infer view."""
        if self.time_series:
            return window_prediction_data(dataset, segment, qlib_order=self.batching == "qlib")
        return tabular_prediction_data(dataset, segment)
