"""A saved qtrain model as an MLflow ``pyfunc``: ``mlflow.pyfunc.load_model(uri).predict(feature_frame)``.

The logged MLflow model names this module as its ``loader_module`` and carries the model's own saved folder
(``model.json`` plus the native LightGBM text or safetensors files) as its data; MLflow calls
:func:`_load_pyfunc` with that folder, so nothing is pickled and qtrain's own ``predict`` does the work.

The input is the feature frame a run predicts from (the infer view): one row per ``(datetime, instrument)``,
either as columns or as the index, and one float column per feature. The output is a frame with one ``score``
column, row for row with the input. A recurrent model's windows reach back ``step_len`` dates within the
frame, so give it the history before the first date you want scores for.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from app.core.errors import ConfigError
from app.dataset.dataset import Dataset, TSDataset
from app.dataset.views import ProcessedViews
from app.models.base import Model, load_model

KEYS = ("datetime", "instrument")
SEGMENT = "predict"


class FramePredictor:
    """A loaded model that scores a feature frame (what MLflow's pyfunc calls ``predict`` on)."""

    def __init__(self, model: Model, step_len: int | None = None) -> None:
        self.model = model
        self.step_len = step_len

    def predict(self, model_input: pd.DataFrame, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Scores for every row of ``model_input`` (column ``score``, same row order and index).

        Raises:
            ConfigError: the frame has no ``datetime``/``instrument`` keys or lacks a trained feature.
        """
        features = _keyed(model_input)
        order = np.lexsort([features.index.get_level_values(k).to_numpy() for k in reversed(KEYS)])
        ordered = features.iloc[order]
        frame = ordered.set_axis(pd.MultiIndex.from_product([["feature"], ordered.columns]), axis=1)
        dates = frame.index.get_level_values("datetime")
        views = ProcessedViews(raw=frame, infer=frame, learn=frame, fit_start=dates.min(), fit_end=dates.max())
        span = {SEGMENT: [dates.min(), dates.max()]}
        dataset = Dataset(views, span) if self.step_len is None else TSDataset(views, span, step_len=self.step_len)
        values = self.model.predict(dataset, SEGMENT).reindex(ordered.index).to_numpy()
        out = np.empty_like(values)
        out[order] = values
        return pd.DataFrame({"score": out}, index=model_input.index)


def _keyed(model_input: pd.DataFrame) -> pd.DataFrame:
    """The input's feature columns (float32, as the views hold them) indexed ``(datetime, instrument)``."""
    if not isinstance(model_input, pd.DataFrame):
        raise ConfigError(f"a qtrain model predicts from a pandas DataFrame, got {type(model_input).__name__}")
    if all(k in model_input.columns for k in KEYS):
        frame = model_input.set_index(list(KEYS))
    elif list(model_input.index.names) == list(KEYS):
        frame = model_input
    else:
        raise ConfigError(
            "the feature frame needs datetime and instrument, as columns or as its (datetime, instrument) index; "
            f"got columns {list(model_input.columns)[:5]}... and index {list(model_input.index.names)}"
        )
    dates = pd.DatetimeIndex(frame.index.get_level_values("datetime"))
    index = pd.MultiIndex.from_arrays(
        [dates, frame.index.get_level_values("instrument").astype(object)], names=list(KEYS)
    )
    return pd.DataFrame(frame.to_numpy(dtype=np.float32), index=index, columns=[str(c) for c in frame.columns])


def _load_pyfunc(data_path: str, model_config: Mapping[str, Any] | None = None) -> FramePredictor:
    """MLflow's entry point: the model saved in ``data_path`` (``model_config``: ``{"step_len": N}`` for
    recurrent models)."""
    step_len = (model_config or {}).get("step_len")
    return FramePredictor(load_model(Path(data_path)), None if step_len is None else int(step_len))
