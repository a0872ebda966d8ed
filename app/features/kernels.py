"""Running-sum rolling kernels, bit-for-bit ports of pandas' ``window/aggregations.pyx`` (3.1.1, and 2.2.3).

Every kernel takes ``x[T, N]`` (float32 or float64, read as float64) plus per-column row bounds
``lo``/``hi`` (the instrument's stored series is rows ``lo..hi``; ``lo > hi`` means none) and returns a new
float64 ``[T, N]`` array in column-major order, NaN outside ``lo..hi``. Windows never reach before ``lo``:
row ``lo`` is the first row of the series, exactly as pandas sees a per-instrument Series. Windows are
pandas' ``rolling(w, min_periods=1)``.

Why ports and not formulas: Qlib calls pandas' *online* algorithms (Kahan sums, Welford variance and
co-moments, restarts when a sum looks cancelled, the "last ``nobs`` values identical" rules) over the whole
series, so results depend on the history and on operation order. Each function below does the arithmetic of
one pandas routine in the same order; keep it so. pandas replaces ±inf by NaN before every rolling routine
(``_prep_values``); :func:`_prep` does the same. Compiled with ``error_model="numpy"`` so that x/0 gives
inf/NaN as in C instead of raising.

Mean and sum are the same in pandas 2.2.3 and 3.1.1; variance and corr/cov changed in pandas 3.
:func:`roll_var` takes ``rules`` (:data:`PANDAS_3_1`, the default everywhere, or :data:`PANDAS_2_2`);
pandas 2.2's corr/cov is a kernel of its own, :func:`roll_corr_cov_2_2`.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

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


# --- which pandas' rules ------------------------------------------------------------------------------------

PANDAS_3_1 = 31
"""Rolling var/std/corr/cov as pandas 3.1 computes them (the default: what ``pip install pyqlib`` gives today)."""
PANDAS_2_2 = 22
"""pandas 2.2's rules: the equal-values rule for var/std, corr/cov from rolling means (Qlib on a pandas 2.2 install)."""
RULES = {"3.1.1": PANDAS_3_1, "2.2.3": PANDAS_2_2}
"""The ``pandas_rules`` names (pandas versions) and their ``rules`` codes."""

_EPS = sys.float_info.epsilon  # 2**-52
_INV_COND_TOL = _EPS * 1e3  # pandas 3: an update that leaves this fraction of a sum of squares or less is suspect
_MAX_ORIGIN = math.sqrt(sys.float_info.max)  # pandas 3 never anchors cov/corr sums on a value this large


@intrinsic
def _libm_pow(typingctx: Any, base: Any, exponent: Any) -> Any:
    """The C library's ``pow``, called as such.

    pandas 3's ``calc_corr`` takes ``(ssqdm_x * ssqdm_y) ** 0.5``, which the C compiler leaves as a call to
    libm's ``pow``; glibc's ``pow(x, 0.5)`` differs from the correctly rounded ``sqrt(x)`` by an ulp for about
    one input in a thousand. LLVM rewrites ``x ** 0.5`` into ``sqrt`` whenever the exponent is a constant, so
    the call is declared ``nobuiltin`` to keep it a plain library call.
    """
    sig = types.float64(types.float64, types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        fnty = ir.FunctionType(ir.DoubleType(), [ir.DoubleType(), ir.DoubleType()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "pow")  # type: ignore[no-untyped-call]
        fn.attributes.add("nobuiltin")
        return builder.call(fn, args)

    return sig, codegen


# --- Welford variance state: (nobs: float, mean_x, ssqdm_x, compensation, num_consecutive_same_value, prev,
#     numerically_unstable). pandas 2.2 reads the consecutive-equal count, pandas 3 the instability flag.


@njit(cache=True, nogil=True, error_model="numpy")
def _add_var(
    val: float, nobs: float, mean_x: float, ssqdm: float, comp: float, ncs: int, prev: float, unstable: bool
) -> tuple[float, float, float, float, int, float, bool]:
    if val != val:
        return nobs, mean_x, ssqdm, comp, ncs, prev, unstable
    before = ssqdm
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
    if before * _INV_COND_TOL > ssqdm:
        unstable = True
    return nobs, mean_x, ssqdm, comp, ncs, prev, unstable


@njit(cache=True, nogil=True, error_model="numpy")
def _remove_var(
    val: float, nobs: float, mean_x: float, ssqdm: float, comp: float, unstable: bool
) -> tuple[float, float, float, float, bool]:
    if val == val:
        before = ssqdm
        nobs = nobs - 1.0
        if nobs != 0.0:
            prev_mean = mean_x - comp
            y = val - comp
            t = y - mean_x
            comp = t + mean_x - y
            delta = t
            mean_x = mean_x - delta / nobs
            ssqdm = ssqdm - (val - prev_mean) * (val - mean_x)
            if before * _INV_COND_TOL > ssqdm:
                unstable = True
        else:
            mean_x = 0.0
            ssqdm = 0.0
            unstable = False
    return nobs, mean_x, ssqdm, comp, unstable


@njit(cache=True, nogil=True, error_model="numpy")
def _calc_var(nobs: float, ssqdm: float, ncs: int, ddof: int, rules: int) -> float:
    if nobs >= 1.0 and nobs > ddof:
        if rules == PANDAS_2_2 and (nobs == 1.0 or ncs >= nobs):
            return 0.0  # pandas 2.2 (GH#42064): a window of one repeated value has variance exactly 0
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
def roll_var(
    x: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int, ddof: int, want_std: bool, rules: int
) -> np.ndarray:
    """``rolling(w, min_periods=1).var(ddof)`` (pandas ``roll_var``); ``want_std`` applies pandas' ``zsqrt``.

    pandas 3 (``rules`` = PANDAS_3_1) drops 2.2's equal-values rule (a flat window keeps its rounding
    residue) and instead sums the window afresh whenever an update cancels the sum of squared deviations
    to below ``1000·eps`` of its previous value.
    """
    t, n = x.shape
    out = new_out(t, n)
    recompute_unstable = rules != PANDAS_2_2
    for j in range(n):
        out[:, j] = _NAN
        nobs = 0.0
        mean_x = 0.0
        ssqdm = 0.0
        ca = 0.0
        cr = 0.0
        ncs = 0
        prev = _NAN
        unstable = False
        for i in range(lo[j], hi[j] + 1):
            r = i - lo[j]
            fresh = r == 0 or w == 1
            if not fresh:
                if r >= w:
                    nobs, mean_x, ssqdm, cr, unstable = _remove_var(
                        _prep(x[i - w, j]), nobs, mean_x, ssqdm, cr, unstable
                    )
                nobs, mean_x, ssqdm, ca, ncs, prev, unstable = _add_var(
                    _prep(x[i, j]), nobs, mean_x, ssqdm, ca, ncs, prev, unstable
                )
            if fresh or (unstable and recompute_unstable):
                s = max(lo[j], i - w + 1)
                nobs = mean_x = ssqdm = ca = cr = 0.0
                ncs = 0
                prev = _prep(x[s, j])
                for m in range(s, i + 1):
                    nobs, mean_x, ssqdm, ca, ncs, prev, unstable = _add_var(
                        _prep(x[m, j]), nobs, mean_x, ssqdm, ca, ncs, prev, unstable
                    )
                unstable = False
            v = _calc_var(nobs, ssqdm, ncs, ddof, rules)
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


# --- pandas 3 co-moment state: (nobs: float, mean_x, mean_y, origin_x, origin_y, ssqdm_xy, ssqdm_x, ssqdm_y,
#     peak_dev_x, peak_dev_y, numerically_unstable); the same for cov and corr.

CoMoments = tuple[float, float, float, float, float, float, float, float, float, float, bool]


@njit(cache=True, nogil=True, error_model="numpy")
def _pair(a: float, b: float) -> float:
    """pandas' ``prep_binary`` (``a + 0*b``: NaN where the other side is NaN or ±inf), then ``_prep``."""
    return _prep(np.float64(a) + 0.0 * np.float64(b))


@njit(cache=True, nogil=True, error_model="numpy")
def _suspect(sxy: float, sxx: float, syy: float, pdx: float, pdy: float) -> bool:
    """pandas 3: a co-moment sum has shrunk to round-off of the largest deviation it absorbed (or is NaN)."""
    if sxy != sxy or sxx != sxx or syy != syy:
        return True
    return pdx * pdy * _INV_COND_TOL > abs(sxy) or pdx * pdx * _INV_COND_TOL > sxx or pdy * pdy * _INV_COND_TOL > syy


@njit(cache=True, nogil=True, error_model="numpy")
def _peak(pdx: float, pdy: float, dev_x: float, dev_y: float) -> tuple[float, float]:
    """The largest deviation from the running mean each side has absorbed (pandas 3 ``track_peak_dev``)."""
    if dev_x > pdx:
        pdx = dev_x
    if dev_y > pdy:
        pdy = dev_y
    return pdx, pdy


@njit(cache=True, nogil=True, error_model="numpy")
def _add_cov(
    vx: float, vy: float, nobs: float, mx: float, my: float, ox: float, oy: float,
    sxy: float, sxx: float, syy: float, pdx: float, pdy: float, unstable: bool,
) -> CoMoments:  # fmt: skip
    if vx != vx or vy != vy:
        return nobs, mx, my, ox, oy, sxy, sxx, syy, pdx, pdy, unstable
    nobs += 1.0
    if nobs == 1.0:  # deviations are taken from the window's first pair, so a common offset cancels exactly
        ox = vx if abs(vx) < _MAX_ORIGIN else 0.0
        oy = vy if abs(vy) < _MAX_ORIGIN else 0.0
    hx = vx - ox
    hy = vy - oy
    dx = hx - mx
    dy = hy - my
    mx = mx + dx / nobs
    my = my + dy / nobs
    sxy = sxy + (hx - mx) * dy
    sxx = sxx + (hx - mx) * dx
    syy = syy + (hy - my) * dy
    pdx, pdy = _peak(pdx, pdy, abs(hx - mx), abs(hy - my))
    if _suspect(sxy, sxx, syy, pdx, pdy):
        unstable = True
    return nobs, mx, my, ox, oy, sxy, sxx, syy, pdx, pdy, unstable


@njit(cache=True, nogil=True, error_model="numpy")
def _remove_cov(
    vx: float, vy: float, nobs: float, mx: float, my: float, ox: float, oy: float,
    sxy: float, sxx: float, syy: float, pdx: float, pdy: float, unstable: bool,
) -> CoMoments:  # fmt: skip
    if vx != vx or vy != vy:
        return nobs, mx, my, ox, oy, sxy, sxx, syy, pdx, pdy, unstable
    hx = vx - ox
    hy = vy - oy
    dx = hx - mx
    dy = hy - my
    nobs -= 1.0
    if nobs == 0.0:
        return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, False
    mx = mx - dx / nobs
    my = my - dy / nobs
    sxy = sxy - (hx - mx) * dy
    sxx = sxx - (hx - mx) * dx
    syy = syy - (hy - my) * dy
    pdx, pdy = _peak(pdx, pdy, abs(hx - mx), abs(hy - my))
    if _suspect(sxy, sxx, syy, pdx, pdy):
        unstable = True
    return nobs, mx, my, ox, oy, sxy, sxx, syy, pdx, pdy, unstable


@njit(cache=True, nogil=True, error_model="numpy")
def roll_corr_cov(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int, want_corr: bool) -> np.ndarray:
    """``a.rolling(w, min_periods=1).corr(b)`` / ``.cov(b)`` as pandas 3.1 computes them.

    pandas 3.1 (``roll_corr``/``roll_cov``): Welford co-moments of the pairs where both sides are numbers,
    taken about the window's first pair; the window is summed afresh whenever a sum looks cancelled;
    ``cov = ssqdm_xy / (n - 1)``, ``corr = ssqdm_xy / pow(ssqdm_x·ssqdm_y, 0.5)`` clipped to [-1, 1] and NaN
    where either side has no spread. pandas 2.2: :func:`roll_corr_cov_2_2` (a kernel of its own, so that
    only who asks for it compiles it).
    """
    t, n = a.shape
    out = new_out(t, n)
    for j in range(n):
        out[:, j] = _NAN
        nobs = mx = my = ox = oy = sxy = sxx = syy = pdx = pdy = 0.0
        unstable = False
        for i in range(lo[j], hi[j] + 1):
            r = i - lo[j]
            fresh = r == 0 or w == 1
            if not fresh:
                if r >= w:
                    nobs, mx, my, ox, oy, sxy, sxx, syy, pdx, pdy, unstable = _remove_cov(
                        _pair(a[i - w, j], b[i - w, j]), _pair(b[i - w, j], a[i - w, j]),
                        nobs, mx, my, ox, oy, sxy, sxx, syy, pdx, pdy, unstable,
                    )  # fmt: skip
                nobs, mx, my, ox, oy, sxy, sxx, syy, pdx, pdy, unstable = _add_cov(
                    _pair(a[i, j], b[i, j]), _pair(b[i, j], a[i, j]),
                    nobs, mx, my, ox, oy, sxy, sxx, syy, pdx, pdy, unstable,
                )  # fmt: skip
            if fresh or unstable:
                nobs = mx = my = ox = oy = sxy = sxx = syy = pdx = pdy = 0.0
                for m in range(max(lo[j], i - w + 1), i + 1):
                    nobs, mx, my, ox, oy, sxy, sxx, syy, pdx, pdy, unstable = _add_cov(
                        _pair(a[m, j], b[m, j]), _pair(b[m, j], a[m, j]),
                        nobs, mx, my, ox, oy, sxy, sxx, syy, pdx, pdy, unstable,
                    )  # fmt: skip
                unstable = False
            if nobs < 1.0:
                out[i, j] = _NAN
            elif want_corr:
                if sxx == 0.0 or syy == 0.0:
                    out[i, j] = _NAN
                else:
                    v = sxy / _libm_pow(sxx * syy, 0.5)  # type: ignore[call-arg]
                    out[i, j] = 1.0 if v > 1.0 else -1.0 if v < -1.0 else v
            else:
                out[i, j] = _NAN if nobs <= 1.0 else sxy / (nobs - 1.0)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def roll_corr_cov_2_2(
    a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int, want_corr: bool
) -> np.ndarray:
    """pandas 2.2's corr/cov, assembled in Python from its online routines on ``X = a + 0*b``, ``Y = b + 0*a``:
    ``cov = (mean(XY) - mean(X)·mean(Y)) · count/(count-1)`` with ``count`` = pairs in the window, and
    ``corr = cov / sqrt(var(X)·var(Y))`` (numpy's ``** 0.5`` on arrays is ``sqrt``).
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
        u = False  # pandas 2.2 has no instability restart
        pairs = 0
        for i in range(lo[j], hi[j] + 1):
            r = i - lo[j]
            xv = _pair(a[i, j], b[i, j])
            yv = _pair(b[i, j], a[i, j])
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
                ox = _pair(a[i - w, j], b[i - w, j])
                oy = _pair(b[i - w, j], a[i - w, j])
                n1, s1, g1, r1 = _remove_mean(ox * oy, n1, s1, g1, r1)
                n2, s2, g2, r2 = _remove_mean(ox, n2, s2, g2, r2)
                n3, s3, g3, r3 = _remove_mean(oy, n3, s3, g3, r3)
                vn4, m4, q4, r4, u = _remove_var(ox, vn4, m4, q4, r4, u)
                vn5, m5, q5, r5, u = _remove_var(oy, vn5, m5, q5, r5, u)
                if ox + oy == ox + oy:
                    pairs -= 1
            n1, s1, g1, a1, c1, p1 = _add_mean(xy, n1, s1, g1, a1, c1, p1)
            n2, s2, g2, a2, c2, p2 = _add_mean(xv, n2, s2, g2, a2, c2, p2)
            n3, s3, g3, a3, c3, p3 = _add_mean(yv, n3, s3, g3, a3, c3, p3)
            vn4, m4, q4, a4, c4, p4, u = _add_var(xv, vn4, m4, q4, a4, c4, p4, u)
            vn5, m5, q5, a5, c5, p5, u = _add_var(yv, vn5, m5, q5, a5, c5, p5, u)
            if xv + yv == xv + yv:
                pairs += 1
            mxy = _calc_mean(n1, g1, s1, c1, p1)
            mx = _calc_mean(n2, g2, s2, c2, p2)
            my = _calc_mean(n3, g3, s3, c3, p3)
            cnt = float(pairs)
            num = (mxy - mx * my) * (cnt / (cnt - 1.0))
            if want_corr:
                vx = _calc_var(vn4, q4, c4, 1, PANDAS_2_2)
                vy = _calc_var(vn5, q5, c5, 1, PANDAS_2_2)
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
