"""Prediction files made anywhere (columns datetime, instrument, score) and the label they are judged by."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from app.core.errors import ConfigError, DataError
from app.data.store import QlibStore
from app.features.frame import build_feature_frame
from app.features.handlers import DEFAULT_LABEL, FeatureSet

REQUIRED = ("datetime", "instrument", "score")


def read_predictions(path: Path) -> pd.Series:
    """A ``score`` Series indexed ``(datetime, instrument)`` from a parquet file.

    The file may hold the three columns, or ``score`` with a ``(datetime, instrument)`` index.

    Raises:
        ConfigError: missing file, missing columns, non-numeric scores, duplicate rows.
    """
    if not path.is_file():
        raise ConfigError(f"--pred {path}: no such file")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--pred {path}: not a readable parquet file ({exc})") from None
    frame = frame.reset_index() if set(frame.index.names) >= {"datetime", "instrument"} else frame
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"--pred {path}: missing column(s) {', '.join(missing)} (found: {', '.join(map(str, frame.columns))}); "
            "a prediction file has columns datetime, instrument, score"
        )
    if not pd.api.types.is_numeric_dtype(frame["score"]):
        raise ConfigError(f"--pred {path}: column score is {frame['score'].dtype}, not numeric")
    frame["datetime"] = pd.to_datetime(frame["datetime"])
    frame["instrument"] = frame["instrument"].astype(str).str.upper()
    pred = frame.set_index(["datetime", "instrument"])["score"].astype("float64").sort_index()
    if pred.index.has_duplicates:
        dup = pred.index[pred.index.duplicated()][0]
        raise ConfigError(f"--pred {path}: duplicate row for {dup[1]} on {dup[0].date()}; keep one score per day")
    if pred.empty:
        raise ConfigError(f"--pred {path}: no rows")
    return pred


def label_for(pred: pd.Series, store: QlibStore, market: str) -> pd.Series:
    """Qlib's default label (``Ref($close, -2)/Ref($close, -1) - 1``) on the prediction's rows.

    Raises:
        DataError: the predictions lie outside the store's calendar or market.
    """
    dates = pred.index.get_level_values("datetime")
    cal = store.calendar()
    start, end = max(dates.min(), cal[0]), min(dates.max(), cal[-1])
    if start > end:
        raise DataError(
            f"the predictions ({dates.min().date()}..{dates.max().date()}) do not overlap the store's calendar "
            f"({cal[0].date()}..{cal[-1].date()}); evaluate against the store they were made for"
        )
    label_set = FeatureSet(features=DEFAULT_LABEL, labels=())
    frame = build_feature_frame(store, label_set, market, start, end)
    label = frame[("feature", DEFAULT_LABEL[0][0])].rename("label")
    return label.reindex(pred.index)
