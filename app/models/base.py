"""The one contract every model follows, the curve hook, and the on-disk model layout.

A saved model is a directory: ``model.json`` (``{"format": 1, "type": <registry name>, "params": {...}}``,
the constructor's keyword arguments) plus the model's native files (LightGBM text models, torch weights
as safetensors). Nothing is pickled; :func:`load_model` only builds types listed in :data:`REGISTRY`.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from app.core.errors import ConfigError
from app.dataset.dataset import Dataset

MODEL_FILE = "model.json"
FORMAT = 1

# registry name -> "module:Class"; load_model builds only these.
REGISTRY: dict[str, str] = {
    "lgbm": "app.models.lgbm:LightGBMModel",
    "double_ensemble": "app.models.double_ensemble:DoubleEnsembleModel",
    "gru": "app.models.gru:GRUModel",
    "mlp": "app.models.mlp:MLPModel",
}


class CurveRecorder(Protocol):
    """Where per-iteration/epoch curves go (the MLflow recorder implements it; so can a test fake)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_series(self, series: Mapping[str, Sequence[float]]) -> None:
        """Whole curves at once, value i at step i (a fitted booster's record)."""
        ...


@runtime_checkable
class Model(Protocol):
    """fit / predict / save / load; ``queue`` says which Celery queue the model needs (``gpu`` or ``cpu``)."""

    registry_name: str

    @property
    def queue(self) -> str: ...

    def fit(self, dataset: Dataset, recorder: CurveRecorder | None = None) -> None: ...

    def predict(self, dataset: Dataset, segment: str = "test") -> pd.Series: ...

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: Path) -> Model: ...


def write_model_json(directory: Path, registry_name: str, params: Mapping[str, Any]) -> None:
    """Write ``model.json`` for a model whose constructor takes ``params``."""
    directory.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "type": registry_name, "params": dict(params)}
    (directory / MODEL_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")


def read_model_json(directory: Path) -> tuple[str, dict[str, Any]]:
    """``(registry name, constructor params)`` from ``directory/model.json``.

    Raises:
        ConfigError: missing or malformed file, unknown format or type.
    """
    path = directory / MODEL_FILE
    if not path.is_file():
        raise ConfigError(f"{directory} holds no saved model ({MODEL_FILE} missing)")
    try:
        doc = json.loads(path.read_text())
        kind, params, fmt = doc["type"], doc["params"], doc["format"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a qtrain model file ({exc})") from None
    if fmt != FORMAT:
        raise ConfigError(f"{path}: model format {fmt} is not supported (this qtrain reads format {FORMAT})")
    if kind not in REGISTRY:
        raise ConfigError(f"{path}: unknown model type {kind!r}; known: {', '.join(sorted(REGISTRY))}")
    return kind, params


def load_model(directory: Path) -> Model:
    """Load whatever model was saved in ``directory``.

    Raises:
        ConfigError: not a saved model, or an unknown type.
    """
    kind, _ = read_model_json(directory)
    module, _, name = REGISTRY[kind].partition(":")
    cls = getattr(importlib.import_module(module), name)
    model: Model = cls.load(directory)
    return model


def check_hyperparameters(model: object) -> None:
    """Check a dataclass model's field values against their annotations (int, float, bool, str, Literal,
    ``X | None``, ``tuple[...]``/``list[...]``, ``Mapping``), so a wrong type fails before training.

    An int is accepted for a float field; a bool is never accepted as a number.

    Raises:
        ConfigError: naming the model, the field, the value and the expected type.
    """
    import dataclasses

    from app.core.typecheck import describe, matches, type_hints

    hints = type_hints(type(model))
    for f in dataclasses.fields(model):  # type: ignore[arg-type]
        if not f.init or f.name.startswith("_") or f.name not in hints:
            continue
        value = getattr(model, f.name)
        expected = hints[f.name]
        if not matches(value, expected):
            raise ConfigError(
                f"{type(model).__name__}: {f.name}={value!r} ({type(value).__name__}) is not "
                f"{describe(expected)}; fix model.{f.name} in the config"
            )
