"""Risk analysis (Qlib's sum mode, N = 238) and the metric keys PortAnaRecord logs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from app.core.errors import ConfigError
from app.evaluation.risk import indicator_analysis, parse_freq, portfolio_metrics, risk_analysis


def test_risk_analysis_by_hand() -> None:
    r = pd.Series([0.01, -0.02, 0.03, 0.0])
    out = risk_analysis(r)
    std = math.sqrt(0.0013 / 3)
    assert out["mean"] == pytest.approx(0.005, rel=1e-14)
    assert out["std"] == pytest.approx(std, rel=1e-12)
    assert out["annualized_return"] == pytest.approx(0.005 * 238, rel=1e-14)  # 238, not 252
    assert out["information_ratio"] == pytest.approx(0.005 / std * math.sqrt(238), rel=1e-12)
    assert out["max_drawdown"] == pytest.approx(-0.02, rel=1e-12)  # summed, not compounded


def test_max_drawdown_runs_from_the_first_cumulative_value() -> None:
    assert risk_analysis(pd.Series([-0.01, -0.02]))["max_drawdown"] == pytest.approx(-0.02)  # not -0.03


@pytest.mark.parametrize(
    ("freq", "n"), [("day", 238), ("1day", 238), ("d", 238), ("week", 50), ("month", 12), ("5min", 240 * 238 / 5)]
)
def test_frequency_scalers(freq: str, n: float) -> None:
    out = risk_analysis(pd.Series([0.01, 0.02, 0.04]), freq=freq)
    assert out["annualized_return"] == pytest.approx(out["mean"] * n)


def test_bad_frequency_is_named() -> None:
    with pytest.raises(ConfigError, match="'fortnight'"):
        parse_freq("fortnight")


def report() -> pd.DataFrame:
    idx = pd.bdate_range("2020-01-01", periods=5, name="datetime")
    return pd.DataFrame(
        {"return": [0.0, 0.01, -0.005, 0.02, 0.003], "bench": [0.0, 0.005, 0.001, 0.01, -0.002],
         "cost": [0.0, 0.0005, 0.0002, 0.0003, 0.0001]},
        index=idx,
    )  # fmt: skip


def test_portfolio_metrics_keys_and_values() -> None:
    rep = report()
    metrics = portfolio_metrics(rep)
    stats = ["mean", "std", "annualized_return", "information_ratio", "max_drawdown"]
    names = ["excess_return_without_cost", "excess_return_with_cost"]
    assert set(metrics) == {f"1day.{n}.{s}" for n in names for s in stats}
    without = risk_analysis(rep["return"] - rep["bench"])
    with_cost = risk_analysis(rep["return"] - rep["bench"] - rep["cost"])
    for s in stats:
        assert metrics[f"1day.excess_return_without_cost.{s}"] == without[s]
        assert metrics[f"1day.excess_return_with_cost.{s}"] == with_cost[s]


def test_portfolio_metrics_with_indicators_and_missing_columns() -> None:
    indicators = pd.DataFrame(
        {"ffr": [1.0, 0.5, np.nan], "pa": [0.0, 0.0, np.nan], "pos": [0.0, 0.0, np.nan], "count": [2.0, 4.0, 0.0]}
    )
    assert indicator_analysis(indicators) == pytest.approx({"ffr": 4 / 6, "pa": 0.0, "pos": 0.0})
    metrics = portfolio_metrics(report(), indicators)
    assert metrics["1day.ffr"] == pytest.approx(4 / 6)
    assert {"1day.pa", "1day.pos"} <= set(metrics)
    with pytest.raises(ConfigError, match="bench"):
        portfolio_metrics(report().drop(columns="bench"))
