"""Small panels for the feature-engine tests, and a per-instrument reference harness."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from app.data.panel import Panel


def make_panel(values: Mapping[str, np.ndarray], first: list[int] | np.ndarray, last: list[int] | np.ndarray) -> Panel:
    """A panel over ``values`` (``[T, N]`` each, made float32 column-major, NaN outside ``first..last``)."""
    arrays = {k: np.asfortranarray(np.asarray(v, dtype=np.float32)) for k, v in values.items()}
    t, n = next(iter(arrays.values())).shape
    first_a = np.asarray(first, dtype=np.int64)
    last_a = np.asarray(last, dtype=np.int64)
    rows = np.arange(t)[:, None]
    outside = (rows < first_a[None, :]) | (rows > last_a[None, :])
    for arr in arrays.values():
        arr[outside] = np.nan
    dates = pd.bdate_range("2020-01-01", periods=t)
    symbols = tuple(f"S{j:03d}" for j in range(n))
    return Panel(dates, symbols, arrays, first_a, last_a, np.ones((t, n), dtype=bool))


def column_panel(**columns: list[float]) -> Panel:
    """One instrument whose fields are the given lists (all the same length), stored on every row."""
    t = len(next(iter(columns.values())))
    return make_panel({k: np.asarray(v, dtype=np.float64)[:, None] for k, v in columns.items()}, [0], [t - 1])


def random_panel(seed: int, t: int = 120, n: int = 6, fields: tuple[str, ...] = ("close", "volume")) -> Panel:
    """Prices and volumes with NaN gaps, flat stretches, ties, late listings and early delistings."""
    rng = np.random.default_rng(seed)
    first = rng.integers(-5, t // 3, n)
    last = t - 1 - rng.integers(-5, t // 3, n)
    first[0], last[0] = 0, t - 1
    values: dict[str, np.ndarray] = {}
    for f in fields:
        if f == "volume":
            arr = rng.lognormal(8, 1, (t, n))
            arr[rng.random((t, n)) < 0.05] = 0.0
        else:
            arr = 10 * np.exp(np.cumsum(rng.normal(0, 0.02, (t, n)), axis=0))
            arr = np.round(arr, 2)  # ties
        for j in range(n):
            start = int(rng.integers(0, t))
            arr[start : start + int(rng.integers(2, 15)), j] = arr[start, j]  # flat stretch
            for _ in range(int(rng.integers(0, 3))):
                gap = int(rng.integers(0, t))
                arr[gap : gap + int(rng.integers(1, 12)), j] = np.nan  # suspension
        values[f] = arr
    return make_panel(values, first, last)


def bounds(panel: Panel, j: int) -> tuple[int, int]:
    """Rows ``lo..hi`` of instrument ``j``'s stored series inside the panel."""
    t = len(panel.dates)
    return max(int(panel.first[j]), 0), min(int(panel.last[j]), t - 1)


def per_instrument(panel: Panel, fn: Callable[..., np.ndarray], *fields: str) -> np.ndarray:
    """Apply ``fn`` to each instrument's stored series of ``fields`` (float64); NaN elsewhere."""
    t, n = len(panel.dates), len(panel.instruments)
    out = np.full((t, n), np.nan)
    for j in range(n):
        lo, hi = bounds(panel, j)
        if lo > hi:
            continue
        args = [panel.values[f][lo : hi + 1, j].astype(np.float64) for f in fields]
        out[lo : hi + 1, j] = fn(*args)
    return out


def windows(x: np.ndarray, w: int) -> list[np.ndarray]:
    """The raw window ending at each row of a series (shorter at its start)."""
    return [x[max(0, i - w + 1) : i + 1] for i in range(len(x))]


def assert_same(actual: np.ndarray, expected: np.ndarray, rtol: float = 0.0, atol: float = 0.0) -> None:
    """Same NaN pattern, and values equal within tolerances (bitwise when both are 0)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    diff = np.argwhere(nan_a != nan_e)
    if diff.size:
        at = tuple(diff[0])
        raise AssertionError(f"NaN pattern differs at {diff[:5].tolist()}: {actual[at]} vs {expected[at]}")
    np.testing.assert_allclose(actual[~nan_a], expected[~nan_e], rtol=rtol, atol=atol)
