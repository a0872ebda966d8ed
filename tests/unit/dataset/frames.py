"""Small hand-written frames in the handler's contract: index (datetime, instrument), columns (group, name)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

NAN = float("nan")
INF = float("inf")


def grid(
    dates: Sequence[str], instruments: Sequence[str], columns: dict[tuple[str, str], Sequence[float]]
) -> pd.DataFrame:
    """Every (date, instrument) pair; each column lists its values date-major (all instruments of a date)."""
    index = pd.MultiIndex.from_product(
        [pd.to_datetime(list(dates)), list(instruments)], names=["datetime", "instrument"]
    )
    return pd.DataFrame(
        {col: np.asarray(vals, dtype=np.float32) for col, vals in columns.items()},
        index=index,
    ).set_axis(pd.MultiIndex.from_tuples(list(columns)), axis=1)


def rows(records: Sequence[tuple[str, str, Sequence[float]]], columns: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """One row per record ``(date, instrument, values)``; rows may be missing; sorted."""
    index = pd.MultiIndex.from_arrays(
        [pd.to_datetime([r[0] for r in records]), [r[1] for r in records]], names=["datetime", "instrument"]
    )
    values = np.asarray([list(r[2]) for r in records], dtype=np.float32).reshape(len(records), len(columns))
    return pd.DataFrame(values, index=index, columns=pd.MultiIndex.from_tuples(list(columns))).sort_index()
