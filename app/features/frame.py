"""Evaluate a :class:`FeatureSet` on a store into Qlib's frame shape."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from app.data.store import DateLike, QlibStore
from app.features.engine import evaluate, required_fields
from app.features.handlers import FeatureSet

log = logging.getLogger(__name__)


def build_feature_frame(
    store: QlibStore, features: FeatureSet, market: str, start: DateLike = None, end: DateLike = None
) -> pd.DataFrame:
    """Features and labels of ``market`` over ``[start, end]``, computed on each instrument's whole stored history.

    Rows are the days an instrument is stored and a member of the market (suspended days included, as NaN
    where the expression needs today's values); index ``(datetime, instrument)`` sorted; columns
    ``("feature", name)`` then ``("label", name)``; float32.

    Raises:
        UnknownMarketError, DateRangeError, StoreFormatError, ExpressionError.
    """
    started = time.perf_counter()
    lo, hi = store.date_slice(start, end)
    exprs = dict(features.features) | dict(features.labels)
    panel = store.load(sorted(required_fields(exprs)), market=market)
    values = evaluate(panel, exprs)
    keep = panel.stored() & panel.member
    keep[:lo] = False
    keep[hi:] = False
    t_idx, i_idx = np.nonzero(keep)
    index = pd.MultiIndex.from_arrays(
        [panel.dates[t_idx], np.asarray(panel.instruments, dtype=object)[i_idx]], names=["datetime", "instrument"]
    )
    columns = pd.MultiIndex.from_tuples(
        [("feature", n) for n in features.feature_names] + [("label", n) for n in features.label_names]
    )
    data = np.empty((len(t_idx), len(columns)), dtype=np.float32)
    for j, (_, name) in enumerate(columns):
        data[:, j] = values[name][t_idx, i_idx]
    frame = pd.DataFrame(data, index=index, columns=columns)
    log.info(
        "computed %d feature columns for %s rows of market %s in %.2fs",
        len(columns),
        len(frame),
        market,
        time.perf_counter() - started,
    )
    return frame
