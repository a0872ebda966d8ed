"""The saved figures: what they draw (series, labels), PNG output, and matplotlib staying out of imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb

from app.evaluation.plots import excess_return_figure, ic_figure, quantile_figure
from app.tracking.artifacts import stage_object

DAYS = pd.bdate_range("2021-01-04", periods=30, name="datetime")


def _ic() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    ic = pd.DataFrame({"ic": rng.normal(0.05, 0.1, len(DAYS)), "rank_ic": rng.normal(0.04, 0.1, len(DAYS))}, DAYS)
    ic.iloc[3, 0] = np.nan  # a day without an IC draws no bar
    return ic


def test_ic_figure_draws_one_bar_per_day_and_the_rolling_means(tmp_path: Path) -> None:
    from matplotlib import dates
    from matplotlib.collections import PolyCollection

    ic = _ic()
    fig = ic_figure(ic, window=5)
    (ax,) = fig.axes
    bars = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert [b.get_label() for b in bars] == ["daily IC", "daily Rank IC"]
    for collection, column in zip(bars, ("ic", "rank_ic"), strict=True):
        values = ic[column].dropna()
        tops = np.array([path.vertices[1] for path in collection.get_paths()])  # (left, height) of each bar
        np.testing.assert_allclose(tops[:, 1], values.to_numpy())
        np.testing.assert_allclose(tops[:, 0] + 0.5, dates.date2num(values.index.to_numpy()))
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["IC 5-day mean"].get_ydata(), ic["ic"].rolling(5, min_periods=1).mean())
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["IC 5-day mean", "Rank IC 5-day mean", "daily IC", "daily Rank IC"]
    assert ax.get_title() == "Information coefficient"
    png = stage_object("ic_plot", fig, tmp_path).local_path
    assert png.name == "ic_plot.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quantile_and_excess_return_figures_draw_cumulative_series() -> None:
    table = pd.DataFrame({f"Group{g}": np.full(len(DAYS), g / 100) for g in range(1, 4)}, DAYS)
    (ax,) = quantile_figure(table).axes
    lines = {line.get_label(): np.asarray(line.get_ydata()) for line in ax.get_lines()}
    assert list(lines) == ["Group1", "Group2", "Group3", "top - bottom"]
    np.testing.assert_allclose(lines["top - bottom"], np.arange(1, len(DAYS) + 1) * 0.02)
    assert ax.get_title() == "Cumulative label by score quantile (3 groups)"

    report = pd.DataFrame({"return": 0.002, "bench": 0.001, "cost": 0.0005}, DAYS)
    top, bottom = excess_return_figure(report).axes
    curves = {line.get_label(): np.asarray(line.get_ydata()) for line in top.get_lines()}
    np.testing.assert_allclose(curves["excess with cost"], np.arange(1, len(DAYS) + 1) * 0.0005)
    colors = {line.get_label(): line.get_color() for line in top.get_lines()}
    drawdowns = bottom.get_lines()
    assert [line.get_label() for line in drawdowns] == ["excess without cost", "excess with cost"]
    assert [line.get_color() for line in drawdowns] == [colors["excess without cost"], colors["excess with cost"]]
    (area,) = bottom.collections  # one filled area: two translucent ones would blend into a third colour
    assert to_rgb(area.get_facecolor()[0]) == to_rgb(colors["excess with cost"])
    legend = bottom.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["excess without cost", "excess with cost"]
    assert [h.get_color() for h in legend.legend_handles] == [line.get_color() for line in drawdowns]


def test_drawdowns_are_what_the_cumulative_excess_lost_from_its_high() -> None:
    report = pd.DataFrame({"return": [0.01, -0.02, 0.005, 0.02], "bench": 0.0, "cost": 0.001}, DAYS[:4])
    _, bottom = excess_return_figure(report).axes
    without, with_cost = (np.asarray(line.get_ydata()) for line in bottom.get_lines())
    np.testing.assert_allclose(without, [0.0, -0.02, -0.015, 0.0])
    np.testing.assert_allclose(with_cost, [0.0, -0.021, -0.017, 0.0])


def test_importing_the_records_and_plotting_never_loads_pyplot() -> None:
    script = (
        "import sys\n"
        "import app.evaluation.records\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported at module import'\n"
        "import pandas as pd\n"
        "from app.evaluation.plots import ic_figure\n"
        "days = pd.bdate_range('2021-01-04', periods=3, name='datetime')\n"
        "ic_figure(pd.DataFrame({'ic': [0.1, 0.2, 0.3], 'rank_ic': [0.1, 0.0, 0.2]}, days))\n"
        "import matplotlib\n"
        "assert 'matplotlib.pyplot' not in sys.modules and matplotlib.get_backend().lower() == 'agg'\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
