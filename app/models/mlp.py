"""Qlib's MLP baseline (``pytorch_nn.DNNModelPytorch`` with its ``Net``), trained in epochs.

Network (Qlib's ``Net``, same state-dict keys ``dnn_layers.*``): ``Dropout(dropout)`` → for each hidden size
``Linear → BatchNorm1d → LeakyReLU(0.1)`` (or SiLU) → ``Dropout(dropout)`` → ``Linear(·, 1)``; Linear weights
initialised Kaiming-normal (``a=0.1``, fan-in, leaky_relu). Defaults are the Alpha158 benchmark's: one hidden
layer of 256, dropout 0.05, Adam with lr 0.002 and weight decay 2e-4, batches of 8192, and Qlib's default
``ReduceLROnPlateau`` on the validation loss (halve, threshold 1e-4 relative, min lr 1e-5).

Epochs instead of Qlib's steps: Qlib draws ``max_steps=8000`` random batches (with replacement) and validates
every 20 steps, stopping after 50 validations without improvement and halving the lr after 10. On CSI300
2008-2014 (about 500k rows) one epoch is about 61 such steps, so the defaults here are ``n_epochs=130``
(≈ 8000 steps), ``early_stop=16`` (≈ 1000 steps) and ``lr_patience=3`` (≈ 200 steps). An epoch is one
shuffled pass without replacement, validated once at its end.

``batching="qlib"`` trains as Qlib does instead: an epoch is ``eval_steps`` (Qlib's default 20) batches drawn
with replacement from ``np.random.seed(seed)``'s stream (``np.random.choice(n, batch_size)``), then one
validation, so Qlib's ``max_steps / eval_steps``, ``early_stop_rounds`` and scheduler patience (10 in its
default) are ``n_epochs``, ``early_stop`` and ``lr_patience``; the benchmark is ``n_epochs=400, early_stop=50,
lr_patience=10``. The network is built under ``torch.manual_seed(seed)`` in Qlib's order and dropout draws
from the same torch stream, so on the CPU the trained weights are Qlib's bit for bit
(tests/differential/test_torch_vs_qlib.py). What still differs:

* the losses are pooled over the batches (Qlib: mean of the step losses, and the validation loss over the
  whole set in one float32 mean; equal up to rounding);
* validation and test rows are scored in batches of ``batch_size`` (Qlib: 8096), which could move an output's
  last bit (not seen in the test);
* Qlib's extra evaluation at ``max_steps`` when it is not a multiple of ``eval_steps`` is not made;
* NaN labels are left out of the loss (Qlib's loss becomes NaN);
* Qlib's ``Net`` ignores any dropout setting and always uses 0.05 (the default here);
* Qlib 0.9.7's default scheduler cannot be built on torch >= 2.10 (it compares version strings, so
  ``"2.13.0" <= "2.6.0"`` and it passes the removed ``verbose`` argument); the one here is that scheduler.
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
from app.models.torch_model import TorchModel, tabular_prediction_data, tabular_training_data
from app.models.torch_training import Plateau


class MLPNet(nn.Module):
    """Qlib's ``Net``: input dropout, ``[Linear, BatchNorm1d, activation]`` per hidden layer, dropout, linear."""

    def __init__(
        self, *, n_features: int, hidden_sizes: tuple[int, ...], dropout: float, activation: str = "leaky_relu"
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        width = n_features
        for size in hidden_sizes:
            act: nn.Module = nn.LeakyReLU(negative_slope=0.1) if activation == "leaky_relu" else nn.SiLU()
            layers.append(nn.Sequential(nn.Linear(width, size), nn.BatchNorm1d(size), act))
            width = size
        layers += [nn.Dropout(dropout), nn.Linear(width, 1)]
        self.dnn_layers = nn.ModuleList(layers)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, a=0.1, mode="fan_in", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``[N]``."""
        for layer in self.dnn_layers:
            x = layer(x)
        return x.squeeze(-1)


@dataclass(kw_only=True)
class MLPModel(TorchModel):
    """Qlib's DNNModelPytorch on tabular features; fit / predict / save / load as :class:`TorchModel`.

    ``d_feat`` (optional) is the expected number of feature columns, checked before training.

    Raises:
        ConfigError: from fit, for bad hyper-parameters, a device this machine lacks, or a ``d_feat`` mismatch.
    """

    registry_name: ClassVar[str] = "mlp"

    d_feat: int | None = None
    hidden_sizes: tuple[int, ...] = (256,)
    dropout: float = 0.05
    activation: Literal["leaky_relu", "silu"] = "leaky_relu"
    n_epochs: int = 130
    lr: float = 0.002
    weight_decay: float = 0.0002
    batch_size: int = 8192
    early_stop: int = 16
    lr_patience: int | None = 3
    optimizer: Literal["adam", "gd"] = "adam"
    clip_value: float | None = None
    seed: int = 0
    batching: Literal["seeded", "qlib"] = "seeded"
    eval_steps: int = 20
    device: str = "auto"
    amp: Literal["off", "bf16", "fp16"] = "off"
    num_workers: int = 0
    checkpoint_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.hidden_sizes, list):  # from JSON / YAML
            self.hidden_sizes = tuple(self.hidden_sizes)
        super().__post_init__()

    def build_net(self, n_features: int) -> nn.Module:
        """A fresh :class:`MLPNet` for ``n_features`` inputs."""
        return MLPNet(
            n_features=n_features,
            hidden_sizes=tuple(self.hidden_sizes),
            dropout=float(self.dropout),
            activation=self.activation,
        )

    def plateau(self) -> Plateau | None:
        """Qlib's default ReduceLROnPlateau, with ``lr_patience`` in epochs (None: constant lr)."""
        return None if self.lr_patience is None else Plateau(patience=self.lr_patience)

    def loop_batching(self) -> tuple[str, int | None]:
        """``qlib``: Qlib's ``np.random.choice`` steps, ``eval_steps`` of them per epoch."""
        if self.batching == "qlib":
            return "numpy_draw", self.eval_steps
        return super().loop_batching()

    def check_values(self) -> list[tuple[str, object, bool, str]]:
        """Ranges of the network's fields."""
        return [
            ("d_feat", self.d_feat, self.d_feat is None or self.d_feat >= 1, ">= 1 or null"),
            ("hidden_sizes", self.hidden_sizes, all(h >= 1 for h in self.hidden_sizes), "sizes >= 1"),
            ("dropout", self.dropout, 0 <= self.dropout < 1, "in [0, 1)"),
            ("lr_patience", self.lr_patience, self.lr_patience is None or self.lr_patience >= 1, ">= 1 or null"),
            ("eval_steps", self.eval_steps, self.eval_steps >= 1, ">= 1"),
        ]

    def check_features(self, n_features: int) -> None:
        """``d_feat``, when given, must equal the number of feature columns.

        Raises:
            ConfigError: naming both numbers and the fix.
        """
        if self.d_feat is not None and n_features != self.d_feat:
            raise ConfigError(
                f"MLPModel: the dataset has {n_features} feature columns but model.d_feat={self.d_feat}; "
                f"set model.d_feat={n_features} (or null to take it from the data)"
            )

    def training_data(self, dataset: Dataset) -> tuple[BatchSource, BatchSource | None, int]:
        """Rows of the learn view."""
        return tabular_training_data(dataset, "MLPModel")

    def prediction_data(self, dataset: Dataset, segment: str) -> tuple[BatchSource, pd.MultiIndex, int]:
        """Rows of ``segment`` in the infer view."""
        return tabular_prediction_data(dataset, segment)
