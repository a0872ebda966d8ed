"""Regression and weighted-window kernels: Slope/Rsquare/Resi (Qlib's Cython), WMA and Mad (numpy reductions).

Same conventions as :mod:`app.features.kernels`. Slope/Rsquare/Resi port Qlib 0.9.7's
``qlib/data/_libs/rolling.pyx``: running float64 sums over the whole series, updated in Qlib's order, with
the window pre-filled with NaN at the series start (so early rows keep their window positions). Those
kernels read the raw series (``series.values``), so ±inf is *not* turned into NaN there, unlike pandas.
WMA and Mad are pandas ``rolling.apply(raw=True)`` of numpy code; :func:`_np_sum` mirrors numpy's
pairwise summation so the sums round as ``np.sum`` does.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from app.features.kernels import _prep, new_out

_NAN = np.nan
SLOPE, RSQUARE, RESI = 0, 1, 2


@njit(cache=True, nogil=True, error_model="numpy")
def roll_regression(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int, kind: int) -> np.ndarray:
    """Qlib ``rolling_slope`` / ``rolling_rsquare`` / ``rolling_resi`` (``kind`` = SLOPE, RSQUARE or RESI)."""
    t, n = x.shape
    out = new_out(t, n)
    fw = float(w)
    ww = float(w * w)
    for j in range(n):
        out[:, j] = _NAN
        na = w
        i_sum = 0.0
        x_sum = 0.0
        x2_sum = 0.0
        y_sum = 0.0
        y2_sum = 0.0
        xy_sum = 0.0
        for i in range(lo[j], hi[j] + 1):
            val = np.float64(x[i, j])
            xy_sum = xy_sum - y_sum
            x2_sum = x2_sum + i_sum - 2.0 * x_sum
            x_sum = x_sum - i_sum
            front = np.float64(x[i - w, j]) if i - w >= lo[j] else _NAN
            if not np.isnan(front):
                i_sum -= 1.0
                y_sum -= front
                y2_sum -= front * front
            else:
                na -= 1
            if np.isnan(val):
                na += 1
            else:
                i_sum += 1.0
                x_sum += fw
                x2_sum += ww
                y_sum += val
                y2_sum += val * val
                xy_sum += fw * val
            m = float(w - na)
            if kind == RSQUARE:
                r = (m * xy_sum - x_sum * y_sum) / np.sqrt((m * x2_sum - x_sum * x_sum) * (m * y2_sum - y_sum * y_sum))
                out[i, j] = r * r
            else:
                slope = (m * xy_sum - x_sum * y_sum) / (m * x2_sum - x_sum * x_sum)
                if kind == SLOPE:
                    out[i, j] = slope
                else:
                    x_mean = x_sum / m
                    y_mean = y_sum / m
                    interp = y_mean - slope * x_mean
                    out[i, j] = val - (slope * fw + interp)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def _pairwise_block(a: np.ndarray, start: int, n: int) -> float:
    """numpy's ``pairwise_sum`` leaf for float64: a plain loop below 8 values, 8 accumulators up to 128."""
    if n < 8:
        res = 0.0
        for k in range(start, start + n):
            res += a[k]
        return res
    r0 = a[start]
    r1 = a[start + 1]
    r2 = a[start + 2]
    r3 = a[start + 3]
    r4 = a[start + 4]
    r5 = a[start + 5]
    r6 = a[start + 6]
    r7 = a[start + 7]
    k = 8
    while k < n - (n % 8):
        b = start + k
        r0 += a[b]
        r1 += a[b + 1]
        r2 += a[b + 2]
        r3 += a[b + 3]
        r4 += a[b + 4]
        r5 += a[b + 5]
        r6 += a[b + 6]
        r7 += a[b + 7]
        k += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while k < n:
        res += a[start + k]
        k += 1
    return float(res)


@njit(cache=True, nogil=True, error_model="numpy")
def _pairwise(a: np.ndarray, start: int, n: int) -> float:
    """numpy's ``pairwise_sum``: blocks of up to 128 values, larger ranges split in two (a multiple of 8 first).

    Written with an explicit stack: numba's on-disk cache mishandles recursive functions (numba#6061).
    """
    if n <= 128:
        return _pairwise_block(a, start, n)
    starts = np.empty(64, dtype=np.int64)
    sizes = np.empty(64, dtype=np.int64)
    phase = np.zeros(64, dtype=np.int64)
    vals = np.empty(64)
    top = 0
    nv = 0
    starts[0] = start
    sizes[0] = n
    while top >= 0:
        s = starts[top]
        m = sizes[top]
        if m <= 128:
            vals[nv] = _pairwise_block(a, s, m)
            nv += 1
            top -= 1
            continue
        half = m // 2
        half -= half % 8
        if phase[top] == 0:
            phase[top] = 1
            top += 1
            starts[top], sizes[top], phase[top] = s, half, 0
        elif phase[top] == 1:
            phase[top] = 2
            top += 1
            starts[top], sizes[top], phase[top] = s + half, m - half, 0
        else:
            nv -= 1
            vals[nv - 1] = vals[nv - 1] + vals[nv]
            top -= 1
    return float(vals[0])


@njit(cache=True, nogil=True, error_model="numpy")
def _np_sum(a: np.ndarray, n: int) -> float:
    """``np.sum(a[:n])`` for a contiguous float64 array: the identity 0.0 plus the pairwise sum."""
    total: float = 0.0 + _pairwise(a, 0, n)
    return total


@njit(cache=True, nogil=True, error_model="numpy")
def roll_wma(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int) -> np.ndarray:
    """Qlib ``WMA``: ``np.nanmean(weights * window)`` with weights ``k / sum(1..len)`` (k = 1 oldest).

    ``nanmean`` divides by the number of non-NaN values, not by the weights, so this is Qlib's number,
    not a textbook weighted mean.
    """
    t, n = x.shape
    out = new_out(t, n)
    for j in range(n):
        out[:, j] = _NAN
        buf = np.empty(w)
        for i in range(lo[j], hi[j] + 1):
            s = max(lo[j], i - w + 1)
            length = i - s + 1
            total = length * (length + 1) // 2
            cnt = 0
            for k in range(length):
                v = _prep(x[s + k, j])
                if v == v:
                    cnt += 1
                    buf[k] = ((k + 1) / total) * v
                else:
                    buf[k] = 0.0
            if cnt > 0:
                out[i, j] = _np_sum(buf, length) / cnt
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def roll_mad(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int) -> np.ndarray:
    """Qlib ``Mad``: mean absolute deviation from the mean of the window's non-NaN values (numpy ``mean``)."""
    t, n = x.shape
    out = new_out(t, n)
    for j in range(n):
        out[:, j] = _NAN
        buf = np.empty(w)
        for i in range(lo[j], hi[j] + 1):
            m = 0
            for k in range(max(lo[j], i - w + 1), i + 1):
                v = _prep(x[k, j])
                if v == v:
                    buf[m] = v
                    m += 1
            if m == 0:
                continue
            mean = _np_sum(buf, m) / m
            for k in range(m):
                buf[k] = abs(buf[k] - mean)
            out[i, j] = _np_sum(buf, m) / m
    return out
