"""Bit-for-bit parity of the rolling kernels with Qlib 0.9.7 on pandas 3.1.1, run in ``.qlib-venv``.

``pandas_reference.py`` computes every operator the way Qlib 0.9.7 does (per instrument, on a float32
Series, with Qlib's thresholds); here the kernels run on the same data, read as float32 (as the engine
passes fields) and as float64, and every float64 result must have the same bits (NaN where NaN).
The data holds the cases where pandas 3.1 and 2.2 part ways (flat stretches, a spike leaving the window,
perfectly correlated pairs, a large common offset), so the pandas 2.2 rules fail it.
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


def _dataset(seed: int = 2, t: int = 300, n: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Prices and volumes with ties, flat stretches, NaN gaps, zeros, negatives, ±inf and odd series lengths.

    Columns 14-19 are built for pandas 3's rules: a series ending in a long flat stretch (std of a flat
    window is rounding residue or, after a restart, 0), a spike followed by a flat stretch and normal prices
    again (pandas 3 restarts its sums and drops the spike's residue; pandas 2.2 carries it on), a pair with
    ``y = 3x + 1`` (correlation ±1 up to rounding), pairs where one side is flat, a price of ~1e6 moving in
    float32 steps (deviations about the window's first value) and signed zeros. Together they reach every
    branch of pandas 3's corr: a restart, ``pow(x, 0.5)`` rounding unlike ``sqrt`` and clipping to ±1
    (mostly in 2-row windows).
    """
    rng = np.random.default_rng(seed)
    x = np.full((t, n), np.nan, dtype=np.float32)
    y = np.full((t, n), np.nan, dtype=np.float32)
    lo = rng.integers(0, 60, n)
    hi = t - 1 - rng.integers(0, 60, n)
    lo[:4], hi[:4] = (0, 50, 100, 10), (t - 1, 40, 100, 14)  # full, empty, one row, shorter than most windows
    lo[14:], hi[14:] = 0, t - 1
    for j in range(14):
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
    walk = 10 * np.exp(np.cumsum(rng.normal(0, 0.02, (t, 6)), axis=0))
    vol = rng.lognormal(12, 1, (t, 6))
    x[:, 14], y[:, 14] = np.round(walk[:, 0], 2), np.round(vol[:, 0], -2)
    x[-90:, 14] = x[-90, 14]  # ends flat: every window of the last 30+ rows holds one value
    y[-40:, 14] = y[-40, 14]
    x[:, 15], y[:, 15] = walk[:, 1], vol[:, 1]
    x[100, 15] *= 40  # a spike, then flat, then moving again
    x[101:170, 15] = x[101, 15]
    y[101:130, 15] = 0.0
    x[:, 16] = walk[:, 2]
    y[:, 16] = 3 * x[:, 16] + 1
    x[150:220, 16] = x[150, 16]  # both sides flat together
    y[150:220, 16] = y[150, 16]
    x[:, 17], y[:, 17] = walk[:, 3], vol[:, 3]
    x[40:120, 17] = x[40, 17]  # one side flat, the other moving, then the other way round
    y[160:240, 17] = y[160, 17]
    x[:, 18], y[:, 18] = 1e6 + np.round(walk[:, 4] * 16) / 16, 1e6 + np.round(vol[:, 4] / 1e4)
    signs = rng.choice(np.array([0.0, -0.0, 1e-3, -1e-3], dtype=np.float32), t)
    x[:, 19], y[:, 19] = signs, rng.choice(np.array([0.0, -0.0, 2.0], dtype=np.float32), t)
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
        result = {name: data[name] for name in data.files}
    assert str(result.pop("pandas_version")) == "3.1.1", "the reference venv is not on pandas 3.1.1"
    return result


def _flat(std: np.ndarray) -> np.ndarray:
    return std <= THRESHOLD


def _corr(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int) -> np.ndarray:
    out = k.roll_corr_cov(a, b, lo, hi, w, True)
    flat_a = _flat(k.roll_var(a, lo, hi, w, 1, True, k.PANDAS_3_1))
    out[flat_a | _flat(k.roll_var(b, lo, hi, w, 1, True, k.PANDAS_3_1))] = np.nan
    return out  # type: ignore[no-any-return]


def _rsquare(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int) -> np.ndarray:
    out = fk.roll_regression(a, lo, hi, w, fk.RSQUARE)
    out[_flat(k.roll_var(a, lo, hi, w, 1, True, k.PANDAS_3_1))] = np.nan
    return out  # type: ignore[no-any-return]


Kernel = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]
KERNELS: dict[str, Kernel] = {
    "Mean": lambda a, b, lo, hi, w: k.roll_mean_sum(a, lo, hi, w, False),
    "Sum": lambda a, b, lo, hi, w: k.roll_mean_sum(a, lo, hi, w, True),
    "Std": lambda a, b, lo, hi, w: k.roll_var(a, lo, hi, w, 1, True, k.PANDAS_3_1),
    "Var": lambda a, b, lo, hi, w: k.roll_var(a, lo, hi, w, 1, False, k.PANDAS_3_1),
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
def test_kernel_is_bitwise_equal_to_qlib_on_pandas_3_1_1(
    reference: dict[str, np.ndarray], op: str, dtype: type[np.floating]
) -> None:
    x, y, lo, hi = _dataset()
    a, b = np.asfortranarray(x, dtype=dtype), np.asfortranarray(y, dtype=dtype)
    bad = {w: _bitwise_mismatches(KERNELS[op](a, b, lo, hi, w), reference[f"{op}_{w}"]) for w in WINDOWS}
    assert not any(bad.values()), f"{op}: cells differing per window {bad}"


def test_the_dataset_exercises_the_hard_cases(reference: dict[str, np.ndarray]) -> None:
    x = _dataset()[0]
    std = reference["Std_20"]
    flat = np.zeros_like(x, dtype=bool)
    flat[19:] = np.all([x[19 - d : len(x) - d] == x[19:] for d in range(20)], axis=0)
    assert (std[flat] == 0).sum() > 50  # a restart, or exact arithmetic, leaves 0
    assert ((std[flat] > 0) & (std[flat] < 1e-6)).sum() > 20  # pandas 3: the rounding residue stays
    assert np.nanmax(np.abs(reference["Corr_20"][:, 16])) > 1 - 1e-9  # y = 3x + 1: ±1 up to rounding
    assert np.isnan(reference["Corr_5"][:, 17]).sum() > 100  # one side flat
    assert np.isnan(reference["Slope_5"][:, 5]).sum() > 200  # inf poisons Qlib's running sums


@pytest.mark.parametrize("op", ["Std", "Var", "Corr", "Cov"])
def test_pandas_2_2_rules_would_not_pass(reference: dict[str, np.ndarray], op: str) -> None:
    """The data tells the pandas versions apart: every operator whose algorithm changed fails under 2.2's rules."""
    x, y, lo, hi = _dataset()
    old = {
        "Std": lambda w: k.roll_var(x, lo, hi, w, 1, True, k.PANDAS_2_2),
        "Var": lambda w: k.roll_var(x, lo, hi, w, 1, False, k.PANDAS_2_2),
        "Corr": lambda w: k.roll_corr_cov_2_2(x, y, lo, hi, w, True),
        "Cov": lambda w: k.roll_corr_cov_2_2(x, y, lo, hi, w, False),
    }[op]
    assert all(_bitwise_mismatches(old(w), reference[f"{op}_{w}"]) > 0 for w in (5, 20, 60))
