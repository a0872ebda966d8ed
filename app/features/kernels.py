"""Running-sum rolling kernels, bit-for-bit ports of pandas 2.2.3's ``window/aggregations.pyx``.

Every kernel takes ``x[T, N]`` (float32 or float64, read as float64) plus per-column row bounds
``lo``/``hi`` (the instrument's stored series is rows ``lo..hi``; ``lo > hi`` means none) and returns a new
float64 ``[T, N]`` array in column-major order, NaN outside ``lo..hi``. Windows never reach before ``lo``:
row ``lo`` is the first row of the series, exactly as pandas sees a per-instrument Series. Windows are
pandas' ``rolling(w, min_periods=1)``.

Why ports and not formulas: Qlib calls pandas' *online* algorithms (Kahan sums, Welford variance, the
GH#42064 "last ``nobs`` values identical" rule) over the whole series, so results depend on the history and
on operation order. Each function below mirrors one pandas routine statement by statement; keep it so.
pandas replaces ±inf by NaN before every rolling routine (``_prep_values``); :func:`_prep` does the same.
Compiled with ``error_model="numpy"`` so that x/0 gives inf/NaN as in C instead of raising.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_NAN = np.nan


@njit(cache=True, nogil=True, error_model="numpy")
def _prep(v: float) -> float:
    """pandas ``_prep_values``: the value as float64, ±inf turned into NaN as pandas does before rolling."""
    f = np.float64(v)
    if np.isinf(f):
        return _NAN
    return f


@njit(cache=True, nogil=True, error_model="numpy")
def new_out(t: int, n: int) -> np.ndarray:
    """A ``[t, n]`` float64 array in column-major order (uninitialised)."""
    return np.empty((n, t)).T


# --- Kahan sum / mean state: (nobs, sum_x, neg_ct, compensation, num_consecutive_same_value, prev_value) ---


@njit(cache=True, nogil=True, error_model="numpy")
def _add_mean(
    val: float, nobs: int, sx: float, neg: int, comp: float, ncs: int, prev: float
) -> tuple[int, float, int, float, int, float]:
    if val == val:
        nobs += 1
        y = val - comp
        t = sx + y
        comp = t - sx - y
        sx = t
        if math.copysign(1.0, val) < 0.0:
            neg += 1
        if val == prev:
            ncs += 1
        else:
            ncs = 1
        prev = val
    return nobs, sx, neg, comp, ncs, prev


@njit(cache=True, nogil=True, error_model="numpy")
def _remove_mean(val: float, nobs: int, sx: float, neg: int, comp: float) -> tuple[int, float, int, float]:
    if val == val:
        nobs -= 1
        y = -val - comp
        t = sx + y
        comp = t - sx - y
        sx = t
        if math.copysign(1.0, val) < 0.0:
            neg -= 1
    return nobs, sx, neg, comp


@njit(cache=True, nogil=True, error_model="numpy")
def _calc_mean(nobs: int, neg: int, sx: float, ncs: int, prev: float) -> float:
    if nobs > 0:
        result = sx / float(nobs)
        if ncs >= nobs:
            result = prev
        elif (neg == 0 and result < 0.0) or (neg == nobs and result > 0.0):
            result = 0.0  # all values of one sign: clip rounding noise of the other sign
        return result
    return _NAN


@njit(cache=True, nogil=True, error_model="numpy")
def _calc_sum(nobs: int, sx: float, ncs: int, prev: float) -> float:
    if nobs >= 1:
        if ncs >= nobs:
            return prev * nobs
        return sx
    return _NAN


# --- Welford variance state: (nobs: float, mean_x, ssqdm_x, compensation, num_consecutive_same_value, prev) ---


@njit(cache=True, nogil=True, error_model="numpy")
def _add_var(
    val: float, nobs: float, mean_x: float, ssqdm: float, comp: float, ncs: int, prev: float
) -> tuple[float, float, float, float, int, float]:
    if val != val:
        return nobs, mean_x, ssqdm, comp, ncs, prev
    nobs = nobs + 1.0
    if val == prev:
        ncs += 1
    else:
        ncs = 1
    prev = val
    prev_mean = mean_x - comp
    y = val - comp
    t = y - mean_x
    comp = t + mean_x - y
    delta = t
    mean_x = mean_x + delta / nobs if nobs != 0.0 else 0.0
    ssqdm = ssqdm + (val - prev_mean) * (val - mean_x)
    return nobs, mean_x, ssqdm, comp, ncs, prev


@njit(cache=True, nogil=True, error_model="numpy")
def _remove_var(val: float, nobs: float, mean_x: float, ssqdm: float, comp: float) -> tuple[float, float, float, float]:
    if val == val:
        nobs = nobs - 1.0
        if nobs != 0.0:
            prev_mean = mean_x - comp
            y = val - comp
            t = y - mean_x
            comp = t + mean_x - y
            delta = t
            mean_x = mean_x - delta / nobs
            ssqdm = ssqdm - (val - prev_mean) * (val - mean_x)
        else:
            mean_x = 0.0
            ssqdm = 0.0
    return nobs, mean_x, ssqdm, comp


@njit(cache=True, nogil=True, error_model="numpy")
def _calc_var(nobs: float, ssqdm: float, ncs: int, ddof: int) -> float:
    if nobs >= 1.0 and nobs > ddof:
        if nobs == 1.0 or ncs >= nobs:
            return 0.0
        return ssqdm / (nobs - float(ddof))
    return _NAN


# --- kernels -------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, error_model="numpy")
def roll_mean_sum(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int, want_sum: bool) -> np.ndarray:
    """``Series.rolling(w, min_periods=1).mean()`` (or ``.sum()``) per column (pandas ``roll_mean``/``roll_sum``)."""
    t, n = x.shape
    out = new_out(t, n)
    for j in range(n):
        out[:, j] = _NAN
        nobs = 0
        neg = 0
        ncs = 0
        sx = 0.0
        ca = 0.0
        cr = 0.0
        prev = _NAN
        for i in range(lo[j], hi[j] + 1):
            r = i - lo[j]
            val = _prep(x[i, j])
            if r == 0 or w == 1:
                sx = 0.0
                ca = 0.0
                cr = 0.0
                nobs = 0
                neg = 0
                ncs = 0
                prev = val
            elif r >= w:
                nobs, sx, neg, cr = _remove_mean(_prep(x[i - w, j]), nobs, sx, neg, cr)
            nobs, sx, neg, ca, ncs, prev = _add_mean(val, nobs, sx, neg, ca, ncs, prev)
            if want_sum:
                out[i, j] = _calc_sum(nobs, sx, ncs, prev)
            else:
                out[i, j] = _calc_mean(nobs, neg, sx, ncs, prev)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def roll_var(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int, ddof: int, want_std: bool) -> np.ndarray:
    """``rolling(w, min_periods=1).var(ddof)`` (pandas ``roll_var``); ``want_std`` applies pandas' ``zsqrt``."""
    t, n = x.shape
    out = new_out(t, n)
    for j in range(n):
        out[:, j] = _NAN
        nobs = 0.0
        mean_x = 0.0
        ssqdm = 0.0
        ca = 0.0
        cr = 0.0
        ncs = 0
        prev = _NAN
        for i in range(lo[j], hi[j] + 1):
            r = i - lo[j]
            val = _prep(x[i, j])
            if r == 0 or w == 1:
                prev = val
                ncs = 0
                mean_x = 0.0
                ssqdm = 0.0
                nobs = 0.0
                ca = 0.0
                cr = 0.0
            elif r >= w:
                nobs, mean_x, ssqdm, cr = _remove_var(_prep(x[i - w, j]), nobs, mean_x, ssqdm, cr)
            nobs, mean_x, ssqdm, ca, ncs, prev = _add_var(val, nobs, mean_x, ssqdm, ca, ncs, prev)
            v = _calc_var(nobs, ssqdm, ncs, ddof)
            if want_std:
                v = 0.0 if v < 0.0 else np.sqrt(v)
            out[i, j] = v
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def roll_count(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int) -> np.ndarray:
    """``rolling(w, min_periods=1).count()``: non-NaN values in the window (pandas counts ±inf too)."""
    t, n = x.shape
    out = new_out(t, n)
    for j in range(n):
        out[:, j] = _NAN
        c = 0
        for i in range(lo[j], hi[j] + 1):
            if x[i, j] == x[i, j]:
                c += 1
            if i - lo[j] >= w and x[i - w, j] == x[i - w, j]:
                c -= 1
            out[i, j] = float(c)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def roll_corr_cov(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int, want_corr: bool) -> np.ndarray:
    """``a.rolling(w, min_periods=1).corr(b)`` / ``.cov(b)`` as pandas 2.2.3 computes them.

    pandas masks each side with the other's NaNs (``X = a + 0*b``, ``Y = b + 0*a``), then
    ``cov = (mean(XY) - mean(X)·mean(Y)) · count/(count-1)`` with ``count`` = pairs in the window, and
    ``corr = cov / sqrt(var(X)·var(Y))``, each statistic from its own online routine.
    """
    t, n = a.shape
    out = new_out(t, n)
    for j in range(n):
        out[:, j] = _NAN
        # three Kahan means (xy, x, y) and two Welford variances (x, y), each with pandas' own state
        n1 = 0
        s1 = 0.0
        g1 = 0
        a1 = 0.0
        r1 = 0.0
        c1 = 0
        p1 = _NAN
        n2 = 0
        s2 = 0.0
        g2 = 0
        a2 = 0.0
        r2 = 0.0
        c2 = 0
        p2 = _NAN
        n3 = 0
        s3 = 0.0
        g3 = 0
        a3 = 0.0
        r3 = 0.0
        c3 = 0
        p3 = _NAN
        vn4 = 0.0
        m4 = 0.0
        q4 = 0.0
        a4 = 0.0
        r4 = 0.0
        c4 = 0
        p4 = _NAN
        vn5 = 0.0
        m5 = 0.0
        q5 = 0.0
        a5 = 0.0
        r5 = 0.0
        c5 = 0
        p5 = _NAN
        pairs = 0
        for i in range(lo[j], hi[j] + 1):
            r = i - lo[j]
            xv = _prep(np.float64(a[i, j]) + 0.0 * np.float64(b[i, j]))
            yv = _prep(np.float64(b[i, j]) + 0.0 * np.float64(a[i, j]))
            xy = xv * yv
            if r == 0 or w == 1:
                n1 = n2 = n3 = 0
                g1 = g2 = g3 = 0
                c1 = c2 = c3 = c4 = c5 = 0
                s1 = s2 = s3 = a1 = a2 = a3 = r1 = r2 = r3 = 0.0
                vn4 = m4 = q4 = a4 = r4 = 0.0
                vn5 = m5 = q5 = a5 = r5 = 0.0
                p1 = xy
                p2 = p4 = xv
                p3 = p5 = yv
                pairs = 0
            elif r >= w:
                ox = _prep(np.float64(a[i - w, j]) + 0.0 * np.float64(b[i - w, j]))
                oy = _prep(np.float64(b[i - w, j]) + 0.0 * np.float64(a[i - w, j]))
                n1, s1, g1, r1 = _remove_mean(ox * oy, n1, s1, g1, r1)
                n2, s2, g2, r2 = _remove_mean(ox, n2, s2, g2, r2)
                n3, s3, g3, r3 = _remove_mean(oy, n3, s3, g3, r3)
                vn4, m4, q4, r4 = _remove_var(ox, vn4, m4, q4, r4)
                vn5, m5, q5, r5 = _remove_var(oy, vn5, m5, q5, r5)
                if ox + oy == ox + oy:
                    pairs -= 1
            n1, s1, g1, a1, c1, p1 = _add_mean(xy, n1, s1, g1, a1, c1, p1)
            n2, s2, g2, a2, c2, p2 = _add_mean(xv, n2, s2, g2, a2, c2, p2)
            n3, s3, g3, a3, c3, p3 = _add_mean(yv, n3, s3, g3, a3, c3, p3)
            vn4, m4, q4, a4, c4, p4 = _add_var(xv, vn4, m4, q4, a4, c4, p4)
            vn5, m5, q5, a5, c5, p5 = _add_var(yv, vn5, m5, q5, a5, c5, p5)
            if xv + yv == xv + yv:
                pairs += 1
            mxy = _calc_mean(n1, g1, s1, c1, p1)
            mx = _calc_mean(n2, g2, s2, c2, p2)
            my = _calc_mean(n3, g3, s3, c3, p3)
            cnt = float(pairs)
            num = (mxy - mx * my) * (cnt / (cnt - 1.0))
            if want_corr:
                vx = _calc_var(vn4, q4, c4, 1)
                vy = _calc_var(vn5, q5, c5, 1)
                out[i, j] = num / np.sqrt(vx * vy)
            else:
                out[i, j] = num
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def ewm_mean(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, com: float) -> np.ndarray:
    """``Series.ewm(com=com, min_periods=1).mean()`` (adjust=True, ignore_na=False; pandas ``ewm``)."""
    t, n = x.shape
    out = new_out(t, n)
    alpha = 1.0 / (1.0 + com)
    old_wt_factor = 1.0 - alpha
    new_wt = 1.0
    for j in range(n):
        out[:, j] = _NAN
        if lo[j] > hi[j]:
            continue
        weighted = _prep(x[lo[j], j])
        nobs = 1 if weighted == weighted else 0
        out[lo[j], j] = weighted if nobs >= 1 else _NAN
        old_wt = 1.0
        for i in range(lo[j] + 1, hi[j] + 1):
            cur = _prep(x[i, j])
            is_obs = cur == cur
            if is_obs:
                nobs += 1
            if weighted == weighted:
                old_wt *= old_wt_factor
                if is_obs:
                    if weighted != cur:
                        weighted = old_wt * weighted + new_wt * cur
                        weighted /= old_wt + new_wt
                    old_wt += new_wt
            elif is_obs:
                weighted = cur
            out[i, j] = weighted if nobs >= 1 else _NAN
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def shift(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, k: int) -> np.ndarray:
    """Qlib ``Ref(x, k)``: the value ``k`` rows earlier in the series (``k < 0``: later); ``k == 0``: its first row."""
    t, n = x.shape
    out = np.empty((n, t), dtype=x.dtype).T
    for j in range(n):
        out[:, j] = np.nan
        for i in range(lo[j], hi[j] + 1):
            src = lo[j] if k == 0 else i - k
            if lo[j] <= src <= hi[j]:
                out[i, j] = x[src, j]
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def mask_outside(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """Set rows outside each column's ``lo..hi`` to NaN, in place."""
    t, n = x.shape
    for j in range(n):
        for i in range(0, min(lo[j], t)):
            x[i, j] = np.nan
        for i in range(max(hi[j] + 1, 0), t):
            x[i, j] = np.nan
