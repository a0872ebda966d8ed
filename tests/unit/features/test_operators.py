"""Every operator against a plain per-instrument reference, plus the edge cases Qlib's numbers depend on."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.features import evaluate
from tests.unit.features.panels import assert_same, column_panel, per_instrument, random_panel, windows

NAN = np.nan
Ref = Callable[[np.ndarray, int], np.ndarray]


def _finite_windows(x: np.ndarray, w: int) -> list[np.ndarray]:
    """Window values pandas sees: NaN and ±inf left out."""
    return [v[np.isfinite(v)] for v in windows(x, w)]


def _stat(fn: Callable[[np.ndarray], float], min_count: int = 1) -> Ref:
    return lambda x, w: np.array([fn(v) if len(v) >= min_count else NAN for v in _finite_windows(x, w)])


def _rank(x: np.ndarray, w: int) -> np.ndarray:
    out = []
    for raw in windows(x, w):
        v = raw[np.isfinite(raw)]
        out.append(NAN if not np.isfinite(raw[-1]) else pd.Series(v).rank(pct=True).iloc[-1])
    return np.array(out)


def _argext(pick: Callable[[np.ndarray], np.integer]) -> Ref:
    def ref(x: np.ndarray, w: int) -> np.ndarray:
        out = []
        for raw in windows(x, w):
            v = np.where(np.isinf(raw), NAN, raw)
            out.append(float(pick(v)) + 1 if np.isfinite(v).any() else NAN)
        return np.array(out)

    return ref


def _ema(x: np.ndarray, w: int) -> np.ndarray:
    alpha = 2.0 / (w + 1)
    out = []
    for i in range(len(x)):
        past = x[: i + 1]
        ok = np.isfinite(past)
        weights = (1 - alpha) ** (i - np.arange(i + 1))[ok]
        if not ok.any():
            out.append(NAN)
        elif weights.sum() == 0:  # span 1 (alpha 1) on a NaN row: pandas keeps the last value
            out.append(past[ok][-1])
        else:
            out.append(np.sum(weights * past[ok]) / np.sum(weights))
    return np.array(out)


def _wma(x: np.ndarray, w: int) -> np.ndarray:
    out = []
    for raw in windows(x, w):
        weights = np.arange(1, len(raw) + 1) / (len(raw) * (len(raw) + 1) / 2)
        out.append(np.nanmean(weights * raw) if np.isfinite(raw).any() else NAN)
    return np.array(out)


ROLLING: dict[str, Ref] = {
    "Mean": _stat(np.mean),
    "Sum": _stat(np.sum),
    "Std": _stat(lambda v: float(np.std(v, ddof=1)), 2),
    "Var": _stat(lambda v: float(np.var(v, ddof=1)), 2),
    "Max": _stat(np.max),
    "Min": _stat(np.min),
    "Med": _stat(np.median),
    "Mad": _stat(lambda v: float(np.mean(np.abs(v - v.mean())))),
    "Count": lambda x, w: np.array([float(np.sum(~np.isnan(v))) for v in windows(x, w)]),
    "Rank": _rank,
    "IdxMax": _argext(np.argmax),
    "IdxMin": _argext(np.argmin),
    "EMA": _ema,
    "WMA": _wma,
}


@pytest.mark.parametrize("op", sorted(ROLLING))
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31), w=st.sampled_from([1, 2, 3, 5, 10, 20]))
def test_rolling_operator_matches_reference(op: str, seed: int, w: int) -> None:
    panel = random_panel(seed)
    for field in ("close", "volume"):
        got = evaluate(panel, {"y": f"{op}(${field}, {w})"})["y"]
        expected = per_instrument(panel, lambda x: ROLLING[op](x, w), field).astype(np.float32)
        assert_same(got, expected, rtol=2e-6, atol=1e-6 * np.nanmax(np.abs(panel.values[field])))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31), w=st.sampled_from([1, 2, 5, 10, 30]), q=st.sampled_from([0.2, 0.5, 0.8, 0.25]))
def test_quantile_is_linear_interpolation(seed: int, w: int, q: float) -> None:
    panel = random_panel(seed)
    got = evaluate(panel, {"y": f"Quantile($close, {w}, {q})"})["y"]
    expected = per_instrument(panel, lambda x: _stat(lambda v: float(np.quantile(v, q)))(x, w), "close")
    assert_same(got, expected.astype(np.float32), rtol=1e-6)


def _regression(x: np.ndarray, w: int, kind: str) -> np.ndarray:
    """Closed-form fit of each window on positions 1..w (today = w), NaN rows left out.

    Rows Qlib's running sums cannot match are marked: 2.0 where the window has one value (Qlib divides
    0 or rounding noise by 0), 3.0 where Rsquare's std is near the 2e-5 threshold (running vs two-pass std).
    """
    out = np.full(len(x), NAN)
    for i in range(len(x)):
        pos = np.arange(max(0, i - w + 1), i + 1)
        ys = x[pos]
        ok = ~np.isnan(ys)
        xs = (w - (i - pos))[ok].astype(np.float64)
        ys = ys[ok]
        if len(ys) < 2:
            out[i] = 2.0 if len(ys) == 1 else NAN
            continue
        slope, intercept = np.polyfit(xs, ys, 1)
        if kind == "Slope":
            out[i] = slope
        elif kind == "Resi":
            out[i] = x[i] - (intercept + slope * w)
        else:
            sd = np.std(ys, ddof=1)
            out[i] = 3.0 if sd <= 1e-4 else np.corrcoef(xs, ys)[0, 1] ** 2
    return out


@pytest.mark.parametrize("kind", ["Slope", "Rsquare", "Resi"])
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31), w=st.sampled_from([2, 3, 5, 10, 20, 60]))
def test_regression_operators_keep_window_positions(kind: str, seed: int, w: int) -> None:
    panel = random_panel(seed)
    got = evaluate(panel, {"y": f"{kind}($close, {w})"})["y"].astype(np.float64)
    expected = per_instrument(panel, lambda x: _regression(x, w, kind), "close")
    single = expected == 2.0
    assert not np.isfinite(got[single]).any()
    keep = ~single & (expected != 3.0)
    assert_same(got[keep], expected[keep], rtol=1e-4, atol=1e-4)


def _corr(a: np.ndarray, b: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.full(len(a), NAN)
    skip = np.zeros(len(a), dtype=bool)
    for i, (wa, wb) in enumerate(zip(windows(a, w), windows(b, w), strict=True)):
        both = ~np.isnan(wa) & ~np.isnan(wb)
        sa = np.std(wa[~np.isnan(wa)], ddof=1) if (~np.isnan(wa)).sum() > 1 else NAN
        sb = np.std(wb[~np.isnan(wb)], ddof=1) if (~np.isnan(wb)).sum() > 1 else NAN
        if both.sum() < 2 or sa <= 2e-5 or sb <= 2e-5:
            continue
        pa, pb = wa[both], wb[both]
        if np.std(pa) < 1e-9 or np.std(pb) < 1e-9:
            skip[i] = True  # pairs flat although each side is not: pandas divides by ~0
            continue
        out[i] = np.corrcoef(pa, pb)[0, 1]
    return out, skip


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), w=st.sampled_from([2, 3, 5, 10, 30]))
def test_corr_and_cov_over_pairs(seed: int, w: int) -> None:
    panel = random_panel(seed)
    got = evaluate(panel, {"c": f"Corr($close, $volume, {w})", "v": f"Cov($close, $volume, {w})"})
    corr = per_instrument(panel, lambda a, b: _corr(a, b, w)[0], "close", "volume")
    skip = per_instrument(panel, lambda a, b: _corr(a, b, w)[1].astype(float), "close", "volume") == 1
    assert_same(got["c"][~skip], corr[~skip], rtol=1e-5, atol=1e-5)

    def cov(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        res = []
        for wa, wb in zip(windows(a, w), windows(b, w), strict=True):
            both = ~np.isnan(wa) & ~np.isnan(wb)
            res.append(np.cov(wa[both], wb[both])[0, 1] if both.sum() >= 2 else NAN)
        return np.array(res)

    expected = per_instrument(panel, cov, "close", "volume")
    assert_same(got["v"], expected, rtol=1e-5, atol=1e-3)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), k=st.sampled_from([-3, -1, 0, 1, 2, 7]))
def test_ref_and_delta_shift_within_the_series(seed: int, k: int) -> None:
    panel = random_panel(seed)
    got = evaluate(panel, {"r": f"Ref($close, {k})", "d": f"Delta($close, {abs(k)})"})

    def shifted(x: np.ndarray, by: int) -> np.ndarray:
        if by == 0:
            return np.full(len(x), x[0])
        return pd.Series(x).shift(by).to_numpy()

    assert_same(got["r"], per_instrument(panel, lambda x: shifted(x, k), "close").astype(np.float32))
    delta = per_instrument(panel, lambda x: x.astype(np.float32) - shifted(x, abs(k)).astype(np.float32), "close")
    assert_same(got["d"], delta.astype(np.float32))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_elementwise_operators_are_numpy_float32(seed: int) -> None:
    panel = random_panel(seed)
    a, b = panel.values["close"], panel.values["volume"]
    stored = _stored(panel)
    with np.errstate(all="ignore"):
        cases = {
            "($close-$volume)/($close+1e-12)": (a - b) / (a + np.float32(1e-12)),
            "Greater($close, 10) * Less($volume, 3000)": np.maximum(a, 10) * np.minimum(b, 3000),
            "Abs($close - 10.5)": np.abs(a - np.float32(10.5)),
            "Log($volume + 1)": np.log(b + np.float32(1)),
            "Sign($close - Ref($close, 1))": np.sign(a - _ref1(panel, a)),
            "Power($close, 0.5)": np.power(a, np.float32(0.5)),
            "$close ** 2": a**2,
            "If($close > 10, $close, $volume)": np.where(a > 10, a, b),
        }
        got = evaluate(panel, dict(zip(map(str, range(len(cases))), cases, strict=True)))
    for (text, expected), value in zip(cases.items(), got.values(), strict=True):
        assert value.dtype == np.float32, text
        assert_same(value, np.where(stored, expected, np.nan).astype(np.float32))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_comparisons_are_zero_with_nan_and_nan_outside_the_series(seed: int) -> None:
    panel = random_panel(seed)
    a = panel.values["close"]
    prev = _ref1(panel, a)
    stored = _stored(panel)
    ops = {">": np.greater, "<": np.less, ">=": np.greater_equal}
    ops |= {"<=": np.less_equal, "==": np.equal, "!=": np.not_equal}
    got = evaluate(panel, {op: f"$close {op} Ref($close, 1)" for op in ops})
    for op, fn in ops.items():
        with np.errstate(invalid="ignore"):
            expected = np.where(stored, fn(a, prev).astype(np.float32), np.nan)
        assert_same(got[op], expected)
    logic = evaluate(
        panel,
        {
            "and": "($close > Ref($close, 1)) & ($volume > 0)",
            "or": "($close > Ref($close, 1)) | ($volume > 0)",
            "not": "Not($close > Ref($close, 1))",
        },
    )
    up = np.nan_to_num(got[">"]) > 0
    vol = np.nan_to_num(panel.values["volume"]) > 0
    assert_same(logic["and"], np.where(stored, up & vol, np.nan))
    assert_same(logic["or"], np.where(stored, up | vol, np.nan))
    assert_same(logic["not"], np.where(stored, ~up, np.nan))


def _stored(panel: object) -> np.ndarray:
    return panel.stored()  # type: ignore[attr-defined, no-any-return]


def _ref1(panel: object, a: np.ndarray) -> np.ndarray:
    out = np.full_like(a, np.nan)
    out[1:] = a[:-1]
    stored = _stored(panel)
    out[~stored] = np.nan
    out[1:][~stored[:-1]] = np.nan
    return out


# --- edge cases ------------------------------------------------------------------------------------------------


def _one(expr: str, **columns: list[float]) -> np.ndarray:
    return evaluate(column_panel(**columns), {"y": expr})["y"][:, 0].astype(np.float64)


def test_flat_windows_give_exactly_zero_std_and_nan_rsquare() -> None:
    x = [3.0, 1.0, 2.0, 5.0, 5.0, 5.0, NAN, 5.0, 5.0, 7.0]
    std = _one("Std($x, 3)", x=x)
    assert std[0] != std[0] and std[5] == 0.0 and std[7] == 0.0 and std[8] == 0.0  # exact: small integers
    assert np.isnan(_one("Rsquare($x, 3)", x=x)[[5, 7, 8]]).all()
    var = _one("Var($x, 3)", x=x)
    assert var[5] == 0.0 and var[1] == 2.0


def test_corr_is_nan_where_either_side_is_flat() -> None:
    a = [1.0, 2.0, 3.0, 4.0, 4.0, 4.0, 4.0, 5.0]
    b = [1.0, 3.0, 2.0, 5.0, 4.0, 6.0, 5.0, 9.0]
    corr = _one("Corr($a, $b, 3)", a=a, b=b)
    assert np.isnan(corr[0]) and abs(corr[2] - np.corrcoef(a[:3], b[:3])[0, 1]) < 1e-6
    assert np.isnan(corr[5]) and np.isnan(corr[6])  # $a flat over the window
    assert np.isfinite(corr[7])


def test_rank_ties_share_the_average_rank() -> None:
    rank = _one("Rank($x, 3)", x=[1.0, 2.0, 2.0, 2.0, 1.0, NAN, 3.0])
    np.testing.assert_allclose(rank[:5], [1.0, 1.0, (2 + 3) / 2 / 3, 2 / 3, 1 / 3], rtol=1e-7)
    assert np.isnan(rank[5]) and rank[6] == 1.0  # NaN today -> NaN; the NaN in the window is not counted


def test_idxmax_ties_go_to_the_earliest_and_nan_wins() -> None:
    x = [1.0, 3.0, 3.0, 2.0, NAN, 1.0, 0.5, 0.2, 0.1]
    imax = _one("IdxMax($x, 3)", x=x)
    imin = _one("IdxMin($x, 3)", x=x)
    np.testing.assert_array_equal(imax[:4], [1, 2, 2, 1])  # partial windows count from the series start
    np.testing.assert_array_equal(imax[4:7], [3, 2, 1])  # position of the NaN while it is in the window
    np.testing.assert_array_equal(imin[4:7], imax[4:7])
    np.testing.assert_array_equal(imin[7:], [3, 3])


def test_all_nan_windows() -> None:
    x = [1.0, NAN, NAN, NAN, 2.0]
    for op in ("Mean", "Sum", "Max", "Min", "Std", "Med", "Rank", "IdxMax", "IdxMin", "Mad", "WMA"):
        assert np.isnan(_one(f"{op}($x, 2)", x=x)[2]), op
    assert _one("Count($x, 2)", x=x)[2] == 0.0
    assert _one("Mean($x, 2)", x=x)[1] == 1.0


def test_first_rows_of_a_series_use_shorter_windows() -> None:
    x = [4.0, 2.0, 6.0, 8.0]
    np.testing.assert_allclose(_one("Mean($x, 3)", x=x), [4, 3, 4, 16 / 3], rtol=1e-7)
    np.testing.assert_allclose(_one("Sum($x, 10)", x=x), [4, 6, 12, 20])
    np.testing.assert_allclose(_one("Max($x, 3)", x=x), [4, 4, 6, 8])
    assert np.isnan(_one("Std($x, 3)", x=x)[0])


def test_infinities_are_skipped_by_pandas_statistics_but_counted() -> None:
    x = [1.0, np.inf, 3.0, -np.inf, 5.0]
    np.testing.assert_allclose(_one("Mean($x, 3)", x=x), [1, 1, 2, 3, 4])
    np.testing.assert_allclose(_one("Max($x, 2)", x=x), [1, 1, 3, 3, 5])
    np.testing.assert_allclose(_one("Count($x, 2)", x=x), [1, 2, 2, 2, 2])


def test_future_ref_and_label() -> None:
    close = [10.0, 11.0, NAN, 12.0, 13.2, 12.0]
    label = _one("Ref($close, -2)/Ref($close, -1) - 1", close=close)
    assert np.isnan(label[0]) and np.isnan(label[1])  # a NaN price at T+1 or T+2
    assert label[2] == np.float32(np.float32(13.2) / np.float32(12.0) - np.float32(1))  # defined on a suspended day
    assert np.isnan(label[4:]).all()  # no T+2 in the series
    np.testing.assert_array_equal(_one("Ref($close, 0)", close=close), [10.0] * 6)


def test_windows_start_at_each_instruments_first_stored_row() -> None:
    from tests.unit.features.panels import make_panel

    t = 8
    close = np.tile(np.arange(1.0, t + 1)[:, None], (1, 2))
    panel = make_panel({"close": close}, first=[0, 3], last=[t - 1, 6])
    out = evaluate(panel, {"cntp": "Mean($close>Ref($close, 1), 5)", "m": "Mean($close, 5)"})
    np.testing.assert_allclose(out["cntp"][:, 1], [NAN, NAN, NAN, 0.0, 0.5, 2 / 3, 0.75, NAN], rtol=1e-7)
    np.testing.assert_allclose(out["m"][3:7, 1], [4, 4.5, 5, 5.5])
    assert np.isnan(out["m"][[0, 1, 2, 7], 1]).all()
    np.testing.assert_allclose(out["cntp"][:, 0], [0, 0.5, 2 / 3, 0.75, 0.8, 1, 1, 1], rtol=1e-7)
