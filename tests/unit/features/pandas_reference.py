"""Qlib 0.9.7's rolling operators computed the way Qlib computes them, for bitwise comparison.

Run with the interpreter of ``.qlib-venv`` (pandas 3.1.1, numpy 2.4.6, Qlib's compiled Cython kernels):
``python pandas_reference.py IN.npz OUT.npz``. ``IN.npz`` holds float32 ``x``/``y`` ``[T, N]``, int64 ``lo``/``hi``
(each column's series is rows ``lo..hi``) and ``windows``. Each column is cut to its series and evaluated as
a float32 pandas Series, exactly as Qlib's ``ops.py`` does per instrument; ``OUT.npz`` holds one float64
``[T, N]`` array per ``"<Op>_<window>"``, NaN outside the series, and ``pandas_version``. Only numpy,
pandas and Qlib's ``rolling`` extension module (loaded by file, without importing the ``qlib`` package) are
used.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

THRESHOLD = 2e-5


def _qlib_rolling() -> object:
    so = next((Path(sys.prefix) / "lib").glob("python3*/site-packages/qlib/data/_libs/rolling.*.so"))
    spec = importlib.util.spec_from_file_location("rolling", so)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flat(s: pd.Series, w: int) -> np.ndarray:
    return np.isclose(s.rolling(w, min_periods=1).std(), 0, atol=THRESHOLD)


def _wma(x: np.ndarray) -> float:
    weights = np.arange(len(x)) + 1
    weights = weights / weights.sum()
    return float(np.nanmean(weights * x))


def _mad(x: np.ndarray) -> float:
    x1 = x[~np.isnan(x)]
    return float(np.mean(np.abs(x1 - x1.mean())))


def _ops(cy: object) -> dict[str, Callable[[pd.Series, pd.Series, int], pd.Series]]:
    def rsquare(a: pd.Series, b: pd.Series, w: int) -> pd.Series:
        out = pd.Series(cy.rolling_rsquare(a.values, w), index=a.index)  # type: ignore[attr-defined]
        out.loc[_flat(a, w)] = np.nan
        return out

    def corr(a: pd.Series, b: pd.Series, w: int) -> pd.Series:
        out = a.rolling(w, min_periods=1).corr(b)
        out.loc[_flat(a, w) | _flat(b, w)] = np.nan
        return out

    return {
        "Mean": lambda a, b, w: a.rolling(w, min_periods=1).mean(),
        "Sum": lambda a, b, w: a.rolling(w, min_periods=1).sum(),
        "Std": lambda a, b, w: a.rolling(w, min_periods=1).std(),
        "Var": lambda a, b, w: a.rolling(w, min_periods=1).var(),
        "Max": lambda a, b, w: a.rolling(w, min_periods=1).max(),
        "Min": lambda a, b, w: a.rolling(w, min_periods=1).min(),
        "Med": lambda a, b, w: a.rolling(w, min_periods=1).median(),
        "Count": lambda a, b, w: a.rolling(w, min_periods=1).count(),
        "Rank": lambda a, b, w: a.rolling(w, min_periods=1).rank(pct=True),
        "QuantileHigh": lambda a, b, w: a.rolling(w, min_periods=1).quantile(0.8),
        "QuantileLow": lambda a, b, w: a.rolling(w, min_periods=1).quantile(0.2),
        "IdxMax": lambda a, b, w: a.rolling(w, min_periods=1).apply(lambda x: x.argmax() + 1, raw=True),
        "IdxMin": lambda a, b, w: a.rolling(w, min_periods=1).apply(lambda x: x.argmin() + 1, raw=True),
        "Corr": corr,
        "Cov": lambda a, b, w: a.rolling(w, min_periods=1).cov(b),
        "Slope": lambda a, b, w: pd.Series(cy.rolling_slope(a.values, w)),  # type: ignore[attr-defined]
        "Rsquare": rsquare,
        "Resi": lambda a, b, w: pd.Series(cy.rolling_resi(a.values, w)),  # type: ignore[attr-defined]
        "EMA": lambda a, b, w: a.ewm(span=w, min_periods=1).mean(),
        "WMA": lambda a, b, w: a.rolling(w, min_periods=1).apply(_wma, raw=True),
        "Mad": lambda a, b, w: a.rolling(w, min_periods=1).apply(_mad, raw=True),
    }


def main(src: str, dst: str) -> None:
    data = np.load(src)
    x, y, lo, hi = data["x"], data["y"], data["lo"], data["hi"]
    ops = _ops(_qlib_rolling())
    out: dict[str, np.ndarray] = {"pandas_version": np.array(pd.__version__)}
    with np.errstate(all="ignore"):
        for w in data["windows"].tolist():
            for name, fn in ops.items():
                res = np.full(x.shape, np.nan)
                for j in range(x.shape[1]):
                    if lo[j] > hi[j]:
                        continue
                    a = pd.Series(x[lo[j] : hi[j] + 1, j])
                    b = pd.Series(y[lo[j] : hi[j] + 1, j])
                    res[lo[j] : hi[j] + 1, j] = fn(a, b, w).to_numpy(dtype=np.float64)
                out[f"{name}_{w}"] = res
    np.savez(dst, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
