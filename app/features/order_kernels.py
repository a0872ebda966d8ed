"""Order-statistic rolling kernels: Max/Min, Quantile/Median, Rank, IdxMax/IdxMin.

Same conventions as :mod:`app.features.kernels` (float64 ``[T, N]`` in, rows ``lo..hi`` per column, NaN
outside, windows of pandas' ``rolling(w, min_periods=1)`` never reaching before ``lo``; ±inf read as NaN).
Quantile and median keep a sorted buffer that inserts after equal values and removes the first equal one,
as pandas' skiplist does, so even the sign of a zero result matches.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from app.features.kernels import _prep, new_out

_NAN = np.nan


@njit(cache=True, nogil=True, error_model="numpy")
def roll_max_min(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int, is_max: bool) -> np.ndarray:
    """Rolling max (``is_max``) or min of the window's non-NaN values (pandas ``roll_max``/``roll_min``).

    A monotonic deque as in pandas; a new value evicts equal ones, so among equal values the latest is
    returned (this only shows in the sign of a zero).
    """
    t, n = x.shape
    out = new_out(t, n)
    qi = np.empty(t, dtype=np.int64)  # deque of row indices, stored without wrap-around
    qv = np.empty(t)
    for j in range(n):
        out[:, j] = _NAN
        head = 0
        tail = 0
        for i in range(lo[j], hi[j] + 1):
            v = _prep(x[i, j])
            if v == v:
                while tail > head and (v >= qv[tail - 1] if is_max else v <= qv[tail - 1]):
                    tail -= 1
                qi[tail] = i
                qv[tail] = v
                tail += 1
            while tail > head and qi[head] <= i - w:
                head += 1
            if tail > head:
                out[i, j] = qv[head]
    return out


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _insert(buf: np.ndarray, size: int, val: float) -> int:
    """Insert ``val`` after any equal values (skiplist order); return the new size."""
    pos = size
    while pos > 0 and buf[pos - 1] > val:
        buf[pos] = buf[pos - 1]
        pos -= 1
    buf[pos] = val
    return size + 1


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _remove(buf: np.ndarray, size: int, val: float) -> int:
    """Remove the first value equal to ``val``; return the new size."""
    pos = 0
    while pos < size and buf[pos] < val:
        pos += 1
    for k in range(pos, size - 1):
        buf[k] = buf[k + 1]
    return size - 1


@njit(cache=True, nogil=True, error_model="numpy")
def roll_quantile(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int, q: float, median: bool) -> np.ndarray:
    """``rolling(w, min_periods=1).quantile(q)`` (linear interpolation) or ``.median()``.

    Ports of pandas' ``roll_quantile`` and ``roll_median_c``.
    """
    t, n = x.shape
    out = new_out(t, n)
    for j in range(n):
        out[:, j] = _NAN
        buf = np.empty(w + 1)
        size = 0
        for i in range(lo[j], hi[j] + 1):
            r = i - lo[j]
            if w == 1:
                size = 0
            v = _prep(x[i, j])
            if v == v:
                size = _insert(buf, size, v)
            if r >= w and w > 1:
                old = _prep(x[i - w, j])
                if old == old:
                    size = _remove(buf, size, old)
            if size == 0:
                continue
            if median:
                mid = size // 2
                if size % 2:
                    out[i, j] = buf[mid]
                else:
                    out[i, j] = (buf[mid] + buf[mid - 1]) / 2
            elif size == 1:
                out[i, j] = buf[0]
            else:
                idx_f = q * (size - 1)
                idx = int(idx_f)
                if idx_f == idx:
                    out[i, j] = buf[idx]
                else:
                    vlow = buf[idx]
                    vhigh = buf[idx + 1]
                    out[i, j] = vlow + (vhigh - vlow) * (idx_f - idx)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def roll_rank(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int) -> np.ndarray:
    """``rolling(w, min_periods=1).rank(pct=True)``: average rank of today's value among the window's values / count.

    pandas computes the average rank from its skiplist's min and max rank; the result equals
    ``(rank_min + rank_max) / 2`` exactly, then divides by the number of non-NaN values.
    """
    t, n = x.shape
    out = new_out(t, n)
    for j in range(n):
        out[:, j] = _NAN
        for i in range(lo[j], hi[j] + 1):
            v = _prep(x[i, j])
            if v != v:
                continue
            less = 0
            leq = 0
            nobs = 0
            for k in range(max(lo[j], i - w + 1), i + 1):
                u = _prep(x[k, j])
                if u == u:
                    nobs += 1
                    if u < v:
                        less += 1
                    if u <= v:
                        leq += 1
            out[i, j] = ((less + 1.0) + leq) * 0.5 / nobs
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def roll_argext(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int, is_max: bool) -> np.ndarray:
    """Qlib ``IdxMax``/``IdxMin``: ``rolling(w, min_periods=1).apply(lambda a: a.argmax() + 1, raw=True)``.

    1-based position from the window's oldest row; the first of equal values wins; numpy's argmax/argmin
    return the first NaN when the window holds one. pandas only calls the function when the window has a
    finite value (NaN otherwise), and it sees ±inf as NaN. A monotonic deque keeps the earliest extreme,
    a second queue the window's NaN rows.
    """
    t, n = x.shape
    out = new_out(t, n)
    qi = np.empty(t, dtype=np.int64)
    qv = np.empty(t)
    nan_rows = np.empty(t, dtype=np.int64)
    for j in range(n):
        out[:, j] = _NAN
        head = 0
        tail = 0
        nan_head = 0
        nan_tail = 0
        for i in range(lo[j], hi[j] + 1):
            v = _prep(x[i, j])
            if v == v:
                while tail > head and (qv[tail - 1] < v if is_max else qv[tail - 1] > v):
                    tail -= 1
                qi[tail] = i
                qv[tail] = v
                tail += 1
            else:
                nan_rows[nan_tail] = i
                nan_tail += 1
            s = max(lo[j], i - w + 1)
            while tail > head and qi[head] < s:
                head += 1
            while nan_tail > nan_head and nan_rows[nan_head] < s:
                nan_head += 1
            if tail == head:
                continue
            first = nan_rows[nan_head] if nan_tail > nan_head else qi[head]
            out[i, j] = float(first - s + 1)
    return out
