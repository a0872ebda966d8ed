"""Figures saved with a run (PNG): excess return vs benchmark, drawdown, daily IC, score-quantile returns.

matplotlib is imported lazily with the non-interactive Agg backend (never pyplot), so nothing needs a display
and importing this module costs nothing. Rendering is most of a record's time, so the figures avoid what costs
without showing: fixed margins instead of a layout engine (constrained layout adds a dry-run draw, about half
of a figure's time), one collection for the daily bars, titles at a fixed height (``y=1.0`` skips matplotlib's
search for a title position clear of the tick labels).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

WIDTH_IN, ROW_IN = 10.0, 3.2
MARGIN_IN = {"left": 0.75, "right": 0.35, "top": 0.4, "bottom": 0.45, "gap": 0.75}


def _figure(rows: int = 1) -> tuple[Figure, list[Axes]]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    height = ROW_IN * rows
    fig = Figure(figsize=(WIDTH_IN, height), dpi=100)
    m = MARGIN_IN
    axes_height = (height - m["top"] - m["bottom"] - (rows - 1) * m["gap"]) / rows
    fig.subplots_adjust(
        left=m["left"] / WIDTH_IN,
        right=1 - m["right"] / WIDTH_IN,
        top=1 - m["top"] / height,
        bottom=m["bottom"] / height,
        hspace=m["gap"] / axes_height,
    )
    axes = [fig.add_subplot(rows, 1, i + 1) for i in range(rows)]
    return fig, axes


def _bars(ax: Axes, values: pd.Series, *, color: str, label: str, width_days: float = 1.0) -> Artist:
    """``ax.bar(values.index, values, width=width_days)`` as one PolyCollection (not one Rectangle per day).

    A bar per day is a Rectangle artist per day; 480 of them took ~0.3 s to build and as long again to draw.
    """
    from matplotlib import dates
    from matplotlib.collections import PolyCollection

    update_units: Any = ax.xaxis.update_units  # matplotlib ships these two without annotations
    date2num: Any = dates.date2num
    update_units(values.index)  # dates on the x axis, as ax.bar would set them
    kept = values.dropna()
    x = np.asarray(date2num(kept.index.to_numpy()), dtype=float)
    y = kept.to_numpy(dtype=float)
    left, right, zero = x - width_days / 2, x + width_days / 2, np.zeros_like(y)
    verts = np.stack([np.c_[left, zero], np.c_[left, y], np.c_[right, y], np.c_[right, zero]], axis=1)
    bars = PolyCollection(list(verts), facecolors=color, edgecolors="none", linewidths=0, alpha=0.25, label=label)
    ax.add_collection(bars, autolim=True)
    ax.autoscale_view()
    return bars


def excess_return_figure(report: pd.DataFrame) -> Figure:
    """Cumulative (summed) returns: strategy, benchmark, excess without and with cost; and drawdowns."""
    fig, (top, bottom) = _figure(2)
    without = (report["return"] - report["bench"]).cumsum()
    with_cost = (report["return"] - report["bench"] - report["cost"]).cumsum()
    top.plot(report.index, report["return"].cumsum(), label="strategy (before cost)")
    top.plot(report.index, report["bench"].cumsum(), label="benchmark")
    top.plot(report.index, without, label="excess without cost")
    top.plot(report.index, with_cost, label="excess with cost")
    top.set_title("Cumulative return (summed daily returns)", y=1.0)
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    # each drawdown a line in its curve's colour; one area, the with-cost drawdown's (Qlib's max drawdown): two
    # translucent areas blend where they overlap into a colour that matches neither legend entry
    colors = {str(line.get_label()): line.get_color() for line in top.get_lines()}
    for series, label in ((without, "excess without cost"), (with_cost, "excess with cost")):
        bottom.plot(report.index, series - series.cummax(), color=colors[label], linewidth=1.2, label=label)
    bottom.fill_between(
        report.index, with_cost - with_cost.cummax(), 0, color=colors["excess with cost"], alpha=0.2, linewidth=0
    )
    bottom.set_title("Drawdown of the cumulative excess return", y=1.0)
    bottom.legend(loc="lower left")
    bottom.grid(alpha=0.3)
    return fig


def ic_figure(ic: pd.DataFrame, window: int = 20) -> Figure:
    """Daily IC and Rank IC (columns ``ic``, ``rank_ic``) with their ``window``-day rolling means."""
    fig, (ax,) = _figure(1)
    lines, bars = [], []
    for column, title, color in (("ic", "IC", "tab:blue"), ("rank_ic", "Rank IC", "tab:orange")):
        bars.append(_bars(ax, ic[column], color=color, label=f"daily {title}"))
        rolling = ic[column].rolling(window, min_periods=1).mean()
        lines += ax.plot(ic.index, rolling, color=color, label=f"{title} {window}-day mean")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_title("Information coefficient", y=1.0)
    ax.legend(handles=[*lines, *bars], loc="upper left")
    return fig


def quantile_figure(table: pd.DataFrame) -> Figure:
    """Cumulative (summed) mean label of each score-quantile group, and the top-minus-bottom spread.

    ``table`` is :func:`app.evaluation.signal.quantile_returns` (columns ``Group1..GroupN``, lowest scores first).
    """
    fig, (ax,) = _figure(1)
    for column in table.columns:
        ax.plot(table.index, table[column].cumsum(), label=column)
    if len(table.columns) >= 2:
        spread = (table.iloc[:, -1] - table.iloc[:, 0]).cumsum()
        ax.plot(table.index, spread, color="black", linestyle="--", label="top - bottom")
    ax.set_title(f"Cumulative label by score quantile ({len(table.columns)} groups)", y=1.0)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return fig
