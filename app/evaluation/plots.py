"""Figures saved with a run (PNG): excess return vs benchmark, drawdown, daily IC, score-quantile returns.

matplotlib is imported lazily with the non-interactive Agg backend, so nothing needs a display.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _figure(rows: int = 1) -> tuple[Figure, list[Axes]]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.2 * rows), dpi=100, layout="constrained")
    axes = [fig.add_subplot(rows, 1, i + 1) for i in range(rows)]
    return fig, axes


def excess_return_figure(report: pd.DataFrame) -> Figure:
    """Cumulative (summed) returns: strategy, benchmark, excess without and with cost; and drawdowns."""
    fig, (top, bottom) = _figure(2)
    without = (report["return"] - report["bench"]).cumsum()
    with_cost = (report["return"] - report["bench"] - report["cost"]).cumsum()
    top.plot(report.index, report["return"].cumsum(), label="strategy (before cost)")
    top.plot(report.index, report["bench"].cumsum(), label="benchmark")
    top.plot(report.index, without, label="excess without cost")
    top.plot(report.index, with_cost, label="excess with cost")
    top.set_title("Cumulative return (summed daily returns)")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    for series, label in ((without, "excess without cost"), (with_cost, "excess with cost")):
        bottom.fill_between(report.index, series - series.cummax(), 0, alpha=0.35, label=label)
    bottom.set_title("Drawdown of the cumulative excess return")
    bottom.legend(loc="lower left")
    bottom.grid(alpha=0.3)
    return fig


def ic_figure(ic: pd.DataFrame, window: int = 20) -> Figure:
    """Daily IC and Rank IC (columns ``ic``, ``rank_ic``) with their ``window``-day rolling means."""
    fig, (ax,) = _figure(1)
    for column, title, color in (("ic", "IC", "tab:blue"), ("rank_ic", "Rank IC", "tab:orange")):
        ax.bar(ic.index, ic[column], color=color, alpha=0.25, width=1.0, label=f"daily {title}")
        rolling = ic[column].rolling(window, min_periods=1).mean()
        ax.plot(ic.index, rolling, color=color, label=f"{title} {window}-day mean")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_title("Information coefficient")
    ax.legend(loc="upper left")
    return fig


def quantile_returns(pred: pd.Series, label: pd.Series, groups: int = 5) -> pd.DataFrame:
    """Mean label per score quantile group per day (group 1 = lowest scores); columns ``Group1..GroupN``."""
    frame = pd.DataFrame({"score": pred, "label": label}).dropna()
    ranks = frame.groupby(level="datetime")["score"].rank(pct=True, method="first").to_numpy(dtype=float)
    frame["group"] = np.clip(np.ceil(ranks * groups).astype(int), 1, groups)
    table = frame.groupby([frame.index.get_level_values("datetime"), "group"])["label"].mean().unstack()
    table.columns = [f"Group{int(g)}" for g in table.columns]
    table.index.name = "datetime"
    return table


def quantile_figure(pred: pd.Series, label: pd.Series, groups: int = 5) -> Figure:
    """Cumulative (summed) mean label of each score-quantile group, and the top-minus-bottom spread."""
    table = quantile_returns(pred, label, groups)
    fig, (ax,) = _figure(1)
    for column in table.columns:
        ax.plot(table.index, table[column].cumsum(), label=column)
    if len(table.columns) >= 2:
        spread = (table.iloc[:, -1] - table.iloc[:, 0]).cumsum()
        ax.plot(table.index, spread, color="black", linestyle="--", label="top - bottom")
    ax.set_title(f"Cumulative label by score quantile ({groups} groups)")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return fig
