"""Bit-for-bit parity of the rolling kernels with pandas 2.2.3 and Qlib's Cython, run in ``.qlib-venv``.

``pandas_reference.py`` computes every operator the way Qlib 0.9.7 does (per instrument, on a float32
Series, with Qlib's thresholds); here the kernels run on the same data, read as float32 (as the engine
passes fields) and as float64, and every float64 result must have the same bits (NaN where NaN).
``.qlib-venv`` is built on first use (the ``qlib_python`` fixture in tests/conftest.py).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from app.features import fit_kernels as fk
from app.features import kernels as k
from app.features import order_kernels as ok

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = Path(__file__).with_name("pandas_reference.py")
WINDOWS = (1, 2, 5, 20, 60)
THRESHOLD = 2e-5

pytestmark = [pytest.mark.qlib, pytest.mark.slow]


def _dataset(seed: int = 2, t: int = 300, n: int = 14) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Prices and volumes with ties, flat stretches, NaN gaps, zeros, negatives, ±inf and odd series lengths."""
    rng = np.random.default_rng(seed)
    x = np.full((t, n), np.nan, dtype=np.float32)
    y = np.full((t, n), np.nan, dtype=np.float32)
    lo = rng.integers(0, 60, n)
    hi = t - 1 - rng.integers(0, 60, n)
    lo[:4], hi[:4] = (0, 50, 100, 10), (t - 1, 40, 100, 14)  # full, empty, one row, shorter than most windows
    for j in range(n):
        m = hi[j] - lo[j] + 1
        if m <= 0:
            continue
        p = 10 * np.exp(np.cumsum(rng.normal(0, 0.02, m)))
        p = np.round(p, 2) if j % 3 == 0 else p * (1e4 if j % 4 == 1 else 1)
        v = rng.lognormal(10, 1, m)
        v = np.round(v, -4) if j % 5 == 2 else v
        for _ in range(int(rng.integers(0, 4))):
            s, length = int(rng.integers(0, m)), int(rng.integers(3, 80))
            p[s : s + length] = p[s]
            v[s : s + length // 2] = v[s]
        for _ in range(int(rng.integers(0, 5))):
            s, length = int(rng.integers(0, m)), int(rng.integers(1, 70))
            p[s : s + length] = np.nan
            if rng.random() < 0.5:
                v[s : s + length] = np.nan
        if j in (5, 9) and m > 30:
            p[rng.integers(0, m, 2)] = np.inf
            v[rng.integers(0, m)] = -np.inf
        if j == 6 and m > 5:
            p[:] = 3.25
        if j == 7 and m > 5:
            p[::2] = np.nan
        if j == 8 and m > 5:
            p[-m // 2 :] = -p[-m // 2 :]
            v[: m // 3] = 0.0
        x[lo[j] : hi[j] + 1, j] = p
        y[lo[j] : hi[j] + 1, j] = v
    return np.asfortranarray(x), np.asfortranarray(y), lo.astype(np.int64), hi.astype(np.int64)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, qlib_python: Path) -> dict[str, np.ndarray]:
    folder = tmp_path_factory.mktemp("parity")
    x, y, lo, hi = _dataset()
    np.savez(folder / "in.npz", x=x, y=y, lo=lo, hi=hi, windows=np.array(WINDOWS))
    run = subprocess.run(
        [qlib_python, REFERENCE, folder / "in.npz", folder / "out.npz"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    with np.load(folder / "out.npz") as data:
        return {name: data[name] for name in data.files}


def _flat(std: np.ndarray) -> np.ndarray:
    return std <= THRESHOLD


def _corr(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int) -> np.ndarray:
    out = k.roll_corr_cov(a, b, lo, hi, w, True)
    out[_flat(k.roll_var(a, lo, hi, w, 1, True)) | _flat(k.roll_var(b, lo, hi, w, 1, True))] = np.nan
    return out  # type: ignore[no-any-return]


def _rsquare(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int) -> np.ndarray:
    out = fk.roll_regression(a, lo, hi, w, fk.RSQUARE)
    out[_flat(k.roll_var(a, lo, hi, w, 1, True))] = np.nan
    return out  # type: ignore[no-any-return]


Kernel = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]
KERNELS: dict[str, Kernel] = {
    "Mean": lambda a, b, lo, hi, w: k.roll_mean_sum(a, lo, hi, w, False),
    "Sum": lambda a, b, lo, hi, w: k.roll_mean_sum(a, lo, hi, w, True),
    "Std": lambda a, b, lo, hi, w: k.roll_var(a, lo, hi, w, 1, True),
    "Var": lambda a, b, lo, hi, w: k.roll_var(a, lo, hi, w, 1, False),
    "Max": lambda a, b, lo, hi, w: ok.roll_max_min(a, lo, hi, w, True),
    "Min": lambda a, b, lo, hi, w: ok.roll_max_min(a, lo, hi, w, False),
    "Med": lambda a, b, lo, hi, w: ok.roll_quantile(a, lo, hi, w, 0.5, True),
    "QuantileHigh": lambda a, b, lo, hi, w: ok.roll_quantile(a, lo, hi, w, 0.8, False),
    "QuantileLow": lambda a, b, lo, hi, w: ok.roll_quantile(a, lo, hi, w, 0.2, False),
    "Count": lambda a, b, lo, hi, w: k.roll_count(a, lo, hi, w),
    "Rank": lambda a, b, lo, hi, w: ok.roll_rank(a, lo, hi, w),
    "IdxMax": lambda a, b, lo, hi, w: ok.roll_argext(a, lo, hi, w, True),
    "IdxMin": lambda a, b, lo, hi, w: ok.roll_argext(a, lo, hi, w, False),
    "Corr": _corr,
    "Cov": lambda a, b, lo, hi, w: k.roll_corr_cov(a, b, lo, hi, w, False),
    "Slope": lambda a, b, lo, hi, w: fk.roll_regression(a, lo, hi, w, fk.SLOPE),
    "Rsquare": _rsquare,
    "Resi": lambda a, b, lo, hi, w: fk.roll_regression(a, lo, hi, w, fk.RESI),
    "EMA": lambda a, b, lo, hi, w: k.ewm_mean(a, lo, hi, (w - 1) / 2),
    "WMA": lambda a, b, lo, hi, w: fk.roll_wma(a, lo, hi, w),
    "Mad": lambda a, b, lo, hi, w: fk.roll_mad(a, lo, hi, w),
}


def _bitwise_mismatches(actual: np.ndarray, expected: np.ndarray) -> int:
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    same = (nan_a == nan_e) & (nan_a | (actual.view(np.int64) == expected.view(np.int64)))
    return int((~same).sum())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", sorted(KERNELS))
def test_kernel_is_bitwise_equal_to_qlib_on_pandas_2_2_3(
    reference: dict[str, np.ndarray], op: str, dtype: type[np.floating]
) -> None:
    x, y, lo, hi = _dataset()
    a, b = np.asfortranarray(x, dtype=dtype), np.asfortranarray(y, dtype=dtype)
    bad = {w: _bitwise_mismatches(KERNELS[op](a, b, lo, hi, w), reference[f"{op}_{w}"]) for w in WINDOWS}
    assert not any(bad.values()), f"{op}: cells differing per window {bad}"


def test_the_dataset_exercises_the_hard_cases(reference: dict[str, np.ndarray]) -> None:
    assert (reference["Std_20"] == 0).sum() > 100  # flat windows (pandas' repeated-value rule)
    assert np.isinf(reference["Corr_5"]).any()  # pandas divides rounding noise by a zero variance
    assert np.isnan(reference["Slope_5"][:, 5]).sum() > 200  # inf poisons Qlib's running sums
