"""Per-date (cross-sectional) kernels on ``[rows, columns]`` arrays, one date's rows at a time.

They reproduce the pandas reductions Qlib's processors use (``groupby("datetime")`` + ``mean`` / ``std`` /
``median`` / ``rank(pct=True)``), NaN-skipping, without pandas' per-column overhead: 1,500 dates × 300
instruments × 158 columns rank in about a second instead of twenty. ``zscore``, ``nanmedian``,
``robust_zscore`` and ``fill_inf_with_finite_mean`` compute in the array's dtype as pandas does (float32 for a
handler's columns), so their results are Qlib's bit for bit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

Kernel = Callable[[np.ndarray], np.ndarray]


def per_date(dates: pd.Index, x: np.ndarray, kernel: Kernel) -> np.ndarray:
    """Apply ``kernel`` to the rows of each date of ``x`` (rows aligned with ``dates``); same shape out."""
    order: np.ndarray | None = None
    keys = np.asarray(dates)
    if not dates.is_monotonic_increasing:
        order = np.argsort(keys, kind="stable")
        x, keys = x[order], keys[order]
    out = np.empty_like(x)
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # empty or all-NaN columns give NaN, as pandas does
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(keys)], strict=True):
            out[a:b] = kernel(x[a:b])
    if order is None:
        return out
    unsorted = np.empty_like(out)
    unsorted[order] = out
    return unsorted


def zscore(x: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` per column, sample std (ddof=1); a single value gives NaN.

    The arithmetic is pandas' ``(x - x.mean()).div(x.std())`` (Qlib's ``zscore``) step by step, in ``x``'s dtype:
    for float32 the mean is a float32 sum over a float32 count, the variance is accumulated in float64 and rounded
    to float32 before the square root, and the subtraction and division are float32. Computing all of it in
    float64 and rounding once differs from Qlib by up to thousands of float32 ulps where ``x`` is near its mean.
    NaN counts as 0 in the sums (pandas fills them), and each column is summed as one contiguous run (numpy's
    pairwise summation, as on pandas' blocks).
    """
    dtype = x.dtype
    one = dtype.type(1)
    missing = np.isnan(x)
    filled = np.asfortranarray(np.where(missing, dtype.type(0), x))
    count = np.count_nonzero(~missing, axis=0).astype(dtype)
    mean = filled.sum(axis=0, dtype=dtype) / count
    squares = np.asfortranarray((filled.sum(axis=0, dtype=np.float64) / count - filled) ** 2)
    squares[missing] = 0.0
    var = np.where(count > one, squares.sum(axis=0, dtype=np.float64) / (count - one), np.nan)
    result: np.ndarray = (x - mean) / np.sqrt(var.astype(dtype))
    return result


def nanmedian(x: np.ndarray) -> np.ndarray:
    """Median of each column, NaN skipped (mean of the two middle values for an even count)."""
    s = np.sort(x, axis=0)  # NaN sort last
    k = np.count_nonzero(~np.isnan(x), axis=0)
    cols = np.arange(x.shape[1])
    lo, hi = np.maximum(k - 1, 0) // 2, np.minimum(k // 2, len(s) - 1)
    return np.where(k > 0, (s[lo, cols] + s[hi, cols]) / 2, np.nan)


def robust_zscore(x: np.ndarray, scale: float, clip: float) -> np.ndarray:
    """``(x - median) / MAD / scale`` per column, clipped to ``[-clip, clip]`` (Qlib's ``robust_zscore``)."""
    dev = x - nanmedian(x)
    mad = nanmedian(np.abs(dev))
    result: np.ndarray = np.clip(dev / mad / scale, -clip, clip)
    return result


def rank_pct(x: np.ndarray) -> np.ndarray:
    """``rank(pct=True)`` per column: average rank of ties over the count of non-NaN values; NaN stays NaN."""
    n = len(x)
    order = np.argsort(x, axis=0, kind="stable")  # NaN last
    s = np.take_along_axis(x, order, axis=0)
    starts = np.ones(s.shape, dtype=bool)
    starts[1:] = s[1:] != s[:-1]
    ends = np.ones(s.shape, dtype=bool)
    ends[:-1] = starts[1:]
    pos = np.broadcast_to(np.arange(1, n + 1, dtype=np.float64)[:, None], s.shape)
    first = np.maximum.accumulate(np.where(starts, pos, 0.0), axis=0)
    last = np.minimum.accumulate(np.where(ends, pos, np.inf)[::-1], axis=0)[::-1]
    count = np.count_nonzero(~np.isnan(x), axis=0)
    pct = np.where(np.isnan(s), np.nan, (first + last) / 2 / count)
    out = np.empty_like(x)
    np.put_along_axis(out, order, pct, axis=0)
    return out


def fill_inf_with_finite_mean(x: np.ndarray) -> np.ndarray:
    """Replace ±inf in each column with the mean of the column's finite values (NaN if there are none).

    As pandas' ``Series.mean`` of the column without its infinities (Qlib's ``ProcessInf``), in ``x``'s dtype:
    the remaining values in row order, NaN counted as 0, summed in one run and divided by the non-NaN count.
    """
    inf = np.isinf(x)
    if not inf.any():
        return x
    out = x.copy()
    zero = x.dtype.type(0)
    for col in np.flatnonzero(inf.any(axis=0)):
        kept = np.ascontiguousarray(x[~inf[:, col], col])
        missing = np.isnan(kept)
        count = np.count_nonzero(~missing)
        total = np.where(missing, zero, kept).sum(dtype=x.dtype)
        out[inf[:, col], col] = total / x.dtype.type(count) if count else np.nan
    return out
