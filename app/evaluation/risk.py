"""Risk analysis of a return series and the metrics ``PortAnaRecord`` logs (Qlib 0.9.7, mode "sum").

``risk_analysis``: mean, std (ddof 1), annualized_return = mean·N, information_ratio = mean/std·√N,
max_drawdown = min(cumsum − cummax(cumsum)); returns are summed, never compounded. N is 238 for daily bars
(week 50, month 12, minute 240·238), divided by the bar multiple ("5min" → 240·238/5).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from app.core.errors import ConfigError

_FREQ = re.compile(r"^([0-9]*)(month|mon|week|w|day|d|minute|min)$")
_BASE = {"month": "month", "mon": "month", "week": "week", "w": "week", "day": "day", "d": "day"}
_BASE.update({"minute": "min", "min": "min"})
_SCALER = {"day": 238.0, "week": 50.0, "month": 12.0, "min": 240.0 * 238.0}
STATS = ("mean", "std", "annualized_return", "information_ratio", "max_drawdown")


def parse_freq(freq: str) -> tuple[int, str]:
    """Qlib's ``Freq.parse``: ``"day"`` → ``(1, "day")``, ``"5min"`` → ``(5, "min")``.

    Raises:
        ConfigError: not of the form (n)month/mon, (n)week/w, (n)day/d, (n)minute/min.
    """
    match = _FREQ.match(freq.lower())
    if match is None:
        raise ConfigError(
            f"freq {freq!r} is not supported: use (n)month/mon, (n)week/w, (n)day/d or (n)minute/min, e.g. 'day'."
        )
    return int(match.group(1) or 1), _BASE[match.group(2)]


def risk_analysis(r: pd.Series, freq: str = "day") -> dict[str, float]:
    """``mean``, ``std``, ``annualized_return``, ``information_ratio``, ``max_drawdown`` of returns ``r``.

    Raises:
        ConfigError: ``freq`` is not a Qlib frequency.
    """
    count, base = parse_freq(freq)
    n = _SCALER[base] / count
    r = pd.Series(r, dtype=np.float64)
    mean = float(r.mean())
    std = float(r.std(ddof=1))
    cum = r.cumsum()
    with np.errstate(invalid="ignore", divide="ignore"):
        ir = float(np.float64(mean) / np.float64(std) * np.sqrt(n))
    return {
        "mean": mean,
        "std": std,
        "annualized_return": mean * n,
        "information_ratio": ir,
        "max_drawdown": float((cum - cum.cummax()).min()),
    }


def portfolio_metrics(
    report: pd.DataFrame, indicators: pd.DataFrame | None = None, freq: str = "day"
) -> dict[str, float]:
    """The metrics PortAnaRecord logs for one report: ``1day.excess_return_{without,with}_cost.<stat>``.

    With the backtest's ``indicators`` frame, also Qlib's indicator analysis ``1day.ffr``, ``1day.pa`` and
    ``1day.pos`` (order-count-weighted means of the daily fulfil rate, price advantage and positive rate).

    Raises:
        ConfigError: ``report`` lacks a needed column, or ``freq`` is not a Qlib frequency.
    """
    missing = [c for c in ("return", "bench", "cost") if c not in report.columns]
    if missing:
        raise ConfigError(
            f"portfolio_metrics: the report has no column(s) {', '.join(missing)} (it has "
            f"{', '.join(map(str, report.columns))}); pass BacktestResult.report."
        )
    count, base = parse_freq(freq)
    prefix = f"{count}{base}"
    excess = {
        "excess_return_without_cost": report["return"] - report["bench"],
        "excess_return_with_cost": report["return"] - report["bench"] - report["cost"],
    }
    out: dict[str, float] = {}
    for name, series in excess.items():
        for stat, value in risk_analysis(series, freq=freq).items():
            out[f"{prefix}.{name}.{stat}"] = value
    if indicators is not None:
        out.update({f"{prefix}.{k}": v for k, v in indicator_analysis(indicators).items()})
    return out


def indicator_analysis(indicators: pd.DataFrame) -> dict[str, float]:
    """Qlib's ``indicator_analysis(method="mean")``: ``ffr``, ``pa``, ``pos`` weighted by daily order count."""
    weights = indicators["count"].astype(np.float64)
    total = float(weights.sum())
    out = {}
    for key in ("ffr", "pa", "pos"):
        weighted = float((indicators[key] * weights).sum())
        out[key] = weighted / total if total else math.nan
    return out
