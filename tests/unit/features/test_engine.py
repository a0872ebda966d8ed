"""evaluate() / required_fields(): precision rules, shared sub-expressions, layout and errors."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.errors import ExpressionError
from app.features import engine, evaluate, required_fields
from tests.unit.features.panels import column_panel, make_panel, random_panel


def test_results_are_float32_column_major_in_the_given_order() -> None:
    panel = random_panel(1)
    exprs = {"z": "$close", "a": "Mean($close, 5)/$close", "m": "$close > $volume"}
    out = evaluate(panel, exprs)
    assert list(out) == ["z", "a", "m"]
    for arr in out.values():
        assert arr.dtype == np.float32 and arr.flags.f_contiguous
        assert arr.shape == (len(panel.dates), len(panel.instruments))
        assert np.isnan(arr[~panel.stored()]).all()
    np.testing.assert_array_equal(out["z"], panel.values["close"])
    assert out["z"] is not panel.values["close"]


def test_element_wise_arithmetic_stays_float32() -> None:
    x = [1.0, 2.5, 3.0]
    one = evaluate(column_panel(x=x), {"d": "($x + 1e-12) - $x", "w": "$x > 0.99999999"})
    assert (one["d"] == 0).all()  # float32: 1e-12 is lost next to x
    assert one["w"][0] == 0 and (one["w"][1:] == 1).all()  # the constant compares as float32, i.e. as 1.0


def test_anything_mixed_with_a_rolling_result_is_float64_until_the_end() -> None:
    x = [1.0, 2.5, 3.0]
    out = evaluate(column_panel(x=x), {"d": "(Mean($x, 1) + 1e-12) - $x"})["d"]
    np.testing.assert_allclose(out, 1e-12, rtol=1e-3)  # float64 keeps 1e-12, then one rounding to float32


def test_qlib_float32_division_order_is_kept() -> None:
    rng = np.random.default_rng(0)
    a = rng.uniform(1, 100, (50, 3)).astype(np.float32)
    b = rng.uniform(1, 100, (50, 3)).astype(np.float32)
    panel = make_panel({"a": a, "b": b}, [0, 0, 0], [49, 49, 49])
    out = evaluate(panel, {"k": "($a-$b)/($a+$b+1e-12)", "r": "Mean($a, 1)/$b"})
    np.testing.assert_array_equal(out["k"], (a - b) / (a + b + np.float32(1e-12)))
    np.testing.assert_array_equal(out["r"], (a.astype(np.float64) / b.astype(np.float64)).astype(np.float32))


def test_shared_sub_expressions_are_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = engine._ROLLING_KERNELS["Max"]

    def counting(*args: object) -> np.ndarray:
        calls.append(1)
        return real(*args)  # type: ignore[no-any-return]

    monkeypatch.setitem(engine._ROLLING_KERNELS, "Max", counting)
    exprs = {
        "MAX5": "Max($high, 5)/$close",
        "RSV5": "($close-Min($low, 5))/(Max($high, 5)-Min($low, 5)+1e-12)",
        "SAME": "Max( $HIGH , 5 ) / $close",
        "MAX10": "Max($high, 10)/$close",
    }
    panel = random_panel(2, fields=("close", "high", "low"))
    out = evaluate(panel, exprs)
    assert len(calls) == 2  # Max($high,5) once, Max($high,10) once
    np.testing.assert_array_equal(out["MAX5"], out["SAME"])


def test_rsquare_and_corr_reuse_the_std_they_threshold_on(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = engine._ROLLING_KERNELS["Std"]

    def counting(*args: object) -> np.ndarray:
        calls.append(1)
        return real(*args)  # type: ignore[no-any-return]

    monkeypatch.setitem(engine._ROLLING_KERNELS, "Std", counting)
    panel = random_panel(3)
    out = evaluate(panel, {"s": "Std($close, 5)", "r": "Rsquare($close, 5)", "c": "Corr($close, $volume, 5)"})
    assert len(calls) == 2  # Std($close,5) shared by all three, Std($volume,5) for Corr
    assert np.isnan(out["r"][out["s"] <= 2e-5]).all()


def test_unknown_field_names_field_expression_and_what_the_panel_has() -> None:
    panel = random_panel(4)
    with pytest.raises(ExpressionError) as info:
        evaluate(panel, {"ok": "$close", "bad": "Mean($clsoe, 5)"})
    msg = str(info.value)
    assert "unknown field $clsoe" in msg and "'bad'" in msg and "$close, $volume" in msg
    assert info.value.expression == "Mean($clsoe, 5)" and info.value.position == 5


def test_field_names_are_case_insensitive_and_required_fields_lists_them() -> None:
    exprs = {"a": "Corr($Close, Log($VOLUME+1), 5)", "b": "$open/$close"}
    assert required_fields(exprs) == {"close", "volume", "open"}
    panel = random_panel(5, fields=("close", "volume", "open"))
    out = evaluate(panel, {"x": "$CLOSE"})
    np.testing.assert_array_equal(out["x"], panel.values["close"])
    with pytest.raises(ExpressionError, match="syntax error"):
        required_fields({"a": "Mean($close 5)"})


def test_instruments_outside_the_panel_window_are_all_nan() -> None:
    close = np.arange(1.0, 41.0).reshape(10, 4)
    panel = make_panel({"close": close}, first=[-5, 12, 0, 3], last=[4, 20, -1, 2])
    out = evaluate(panel, {"m": "Mean($close, 3)", "c": "$close > 0", "r": "Ref($close, -1)"})
    for arr in out.values():
        assert np.isnan(arr[:, 1:]).all()
        assert np.isnan(arr[5:, 0]).all() and not np.isnan(arr[:5, 0]).all()
    np.testing.assert_array_equal(out["c"][:5, 0], 1.0)


def test_empty_expression_mapping() -> None:
    assert evaluate(random_panel(6), {}) == {}
