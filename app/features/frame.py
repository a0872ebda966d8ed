"""Evaluate a :class:`FeatureSet` on a store into Qlib's frame shape."""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import pandas as pd

from app.core.progress import ProgressBar
from app.data.panel import Panel
from app.data.store import DateLike, QlibStore
from app.features.engine import evaluate, required_fields
from app.features.handlers import FeatureSet
from app.features.warmup import precompile

log = logging.getLogger(__name__)

BLOCKS_PER_WORKER = 4  # up to this many blocks per thread, so the progress bar moves more often
MIN_BLOCK = 32  # instruments; blocks of ~20 measured ~8 % slower on Alpha158 (300 instruments, 2 threads)


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
    precompile(exprs.values())  # first run only: numba's compile spread over the CPUs
    panel = store.load(sorted(required_fields(exprs)), market=market)
    values = _evaluate_in_parallel(panel, exprs, features.pandas_rules)
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
    # Rows come out date-major, so read each [dates x instruments] array in C order (a cheap transpose copy)
    # and compress it sequentially; the column-major output lets pandas adopt the block without a copy.
    keep_flat = keep.ravel(order="C")
    data = np.empty((len(t_idx), len(columns)), dtype=np.float32, order="F")
    for j, (_, name) in enumerate(columns):
        np.compress(keep_flat, np.ascontiguousarray(values[name]).ravel(), out=data[:, j])
    frame = pd.DataFrame(data, index=index, columns=columns, copy=False)
    log.info(
        "computed %d feature columns for %s rows of market %s in %.2fs",
        len(columns),
        len(frame),
        market,
        time.perf_counter() - started,
    )
    return frame


def _evaluate_in_parallel(panel: Panel, exprs: Mapping[str, str], pandas_rules: str = "3.1.1") -> dict[str, np.ndarray]:
    """Evaluate on column blocks of instruments in threads (the numba kernels release the GIL).

    Up to ``BLOCKS_PER_WORKER`` blocks per thread (a multiple of the threads, each of ``MIN_BLOCK`` instruments
    or more) let the progress bar move; an instrument's values never depend on another's, so neither the
    blocking nor the order blocks finish in changes a number.
    """
    n = len(panel.instruments)
    workers = min(os.cpu_count() or 1, 4, max(1, n // 16))
    if workers == 1:
        with ProgressBar(1, "features", unit="blocks") as bar:
            values = evaluate(panel, exprs, pandas_rules=pandas_rules)
            bar.advance()
        return values
    per_worker = max(1, min(BLOCKS_PER_WORKER, n // (MIN_BLOCK * workers)))
    bounds = np.linspace(0, n, workers * per_worker + 1).astype(int)
    blocks = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    parts: list[dict[str, np.ndarray]] = [{} for _ in blocks]
    with (
        ProgressBar(len(blocks), "features", unit="blocks") as bar,
        ThreadPoolExecutor(workers, thread_name_prefix="features") as pool,
    ):
        futures = {
            pool.submit(evaluate, panel.columns(cols), exprs, pandas_rules=pandas_rules): i
            for i, cols in enumerate(blocks)
        }
        try:
            for future in as_completed(futures):
                parts[futures[future]] = future.result()
                bar.advance()
        except BaseException:
            pool.shutdown(cancel_futures=True)  # an error or Ctrl-C: skip the blocks not started yet
            raise
    return {name: np.concatenate([part[name] for part in parts], axis=1) for name in exprs}
