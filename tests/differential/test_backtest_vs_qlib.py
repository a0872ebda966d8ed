"""The daily TopkDropout backtest and its risk metrics: qtrain against Qlib 0.9.7 on the same synthetic market.

The market has limit days, suspensions, listings/delistings (zombie holdings), factor steps and the SH000300
index. Predictions are a noisy function of the realised next-day return, with NaN scores, tied scores at the
bottom of each day and a few planted ``change`` values of exactly float32(0.095) on the day's top pick (Qlib
compares in float32, so they are limit-up). Qlib runs with PYTHONHASHSEED=0: where the strategy's decision
depends on Python set order (ties or NaN scores among holdings when holdings >= topk + n_drop), Qlib itself
differs between processes; this market and seed avoid that case.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.data.binfile import read_bin, write_bin
from app.data.store import QlibStore
from app.data.synth import SynthSpec, write_synth_market
from app.evaluation.backtest import BacktestConfig, run_backtest
from app.evaluation.risk import portfolio_metrics
from tests.conftest import run_reference

pytestmark = [pytest.mark.qlib, pytest.mark.slow]

SEED = 11
CONFIGS = {
    "topk10_ndrop2": ([], {"topk": 10, "n_drop": 2}),
    "topk5_hold2_costs": (
        ["--hold-thresh", "2", "--account", "3000000", "--open-cost", "0.001", "--close-cost", "0.002",
         "--min-cost", "20", "--limit-threshold", "0.06", "--start", "2015-04-01", "--end", "2016-01-29"],
        {"topk": 5, "n_drop": 1, "hold_thresh": 2, "account": 3e6, "open_cost": 0.001, "close_cost": 0.002,
         "min_cost": 20.0, "limit_threshold": 0.06, "start": "2015-04-01", "end": "2016-01-29"},
    ),
}  # fmt: skip


def _predictions(store: QlibStore) -> pd.Series:
    panel = store.load(["close"], market="synth")
    close = panel.values["close"].astype(np.float64)
    label = np.full_like(close, np.nan)
    label[:-2] = close[2:] / close[1:-1] - 1  # what a score dated t earns: bought at t+1's close, held to t+2
    rng = np.random.default_rng(SEED)
    score = np.where(np.isnan(label), 0.0, label) + rng.normal(0.0, 0.02, label.shape)
    t_idx, i_idx = np.nonzero(panel.stored())
    values = score[t_idx, i_idx]
    values[rng.random(len(values)) < 0.03] = np.nan
    index = pd.MultiIndex.from_arrays(
        [panel.dates[t_idx], np.asarray(panel.instruments)[i_idx]], names=["datetime", "instrument"]
    )
    pred = pd.Series(values, index=index, name="score")
    day = pred.index.get_level_values("datetime")
    keep = (day >= panel.dates[40]) & (day <= panel.dates[-3])  # Qlib fails if predictions reach the last day
    return pred[keep]


def _tie_bottom(pred: pd.Series, store: QlibStore) -> pd.Series:
    """Tie the two lowest scores of each day among names no config holds when that score is used.

    Qlib sorts with an unstable quicksort, so the order of a tie that reaches a decision (a held name, or the
    cut of today's candidates) is implementation-defined; ties below every cut and outside the holdings are
    not, and still exercise the sort.
    """
    held: set[tuple[pd.Timestamp, str]] = set()
    for _, kwargs in CONFIGS.values():
        positions = run_backtest(pred, store, BacktestConfig(**kwargs)).positions  # end of day d = held at d+1
        held |= set(positions.index)
    scored = pred.dropna()
    free = scored[[key not in held for key in scored.index]]
    lowest = free.groupby(level="datetime").nsmallest(2).droplevel(0)
    tied = pred.copy()
    tied.loc[lowest.index] = lowest.groupby(level="datetime").transform("min")
    return tied


def _plant_float32_limits(root: Path, store: QlibStore, pred: pd.Series) -> None:
    """Set ``change`` to exactly float32(0.095) on six days for the previous day's top-scored stock."""
    cal = store.calendar()
    by_day = pred.dropna().groupby(level="datetime").idxmax()
    for day, (_, symbol) in list(by_day.items())[20:200:30]:
        path = root / "features" / symbol.lower() / "change.day.bin"
        start, values = read_bin(path, len(cal))
        row = int(cal.searchsorted(day)) + 1 - start
        if 0 <= row < len(values) and not np.isnan(values[row]):
            values = values.copy()
            values[row] = np.float32(0.095)
            write_bin(path, start, values)


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("backtest_vs_qlib")
    root = base / "store"
    write_synth_market(root, SynthSpec(instruments=60, days=300, seed=SEED, suspensions_per_year=3.0))
    store = QlibStore(root)
    pred = _predictions(store)
    _plant_float32_limits(root, store, pred)
    pred = _tie_bottom(pred, store)
    pred_path = base / "pred.parquet"
    pred.to_frame().to_parquet(pred_path)
    return root, pred_path


@pytest.mark.parametrize("name", list(CONFIGS))
def test_backtest_matches_qlib(
    name: str, market: tuple[Path, Path], qlib_python: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, pred_path = market
    args, kwargs = CONFIGS[name]
    topk, n_drop = str(kwargs["topk"]), str(kwargs["n_drop"])
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    run_reference(qlib_python, "backtest.py", root, pred_path, tmp_path, "--topk", topk, "--n-drop", n_drop, *args)
    ref = pd.read_parquet(tmp_path / "report.parquet")
    ref_pos = pd.read_parquet(tmp_path / "positions.parquet")
    ref_risk = json.loads((tmp_path / "risk.json").read_text())

    result = run_backtest(pd.read_parquet(pred_path)["score"], QlibStore(root), BacktestConfig(**kwargs))
    ours = result.report

    assert list(ours.index) == list(pd.DatetimeIndex(ref.index))
    # the market exercises the rules: trades most days, holds more than topk (zombies, failed sells), ties, NaNs
    assert ours["turnover"].gt(0).sum() > 0.8 * len(ours)
    assert (result.positions.groupby(level="datetime").size() > kwargs["topk"]).any()
    pred = pd.read_parquet(pred_path)["score"]
    assert (
        pred.isna().sum() > 100 and pred.dropna().groupby(level="datetime").apply(lambda s: s.duplicated().any()).all()
    )
    for col in ("return", "cost", "turnover", "bench"):
        np.testing.assert_allclose(ours[col], ref[col].astype(np.float64), rtol=0, atol=1e-12, err_msg=col)
    for col in ("account", "value", "cash", "total_cost", "total_turnover"):
        np.testing.assert_allclose(ours[col], ref[col], rtol=1e-12, atol=1e-6, err_msg=col)

    pos = result.positions
    assert list(pos.index) == list(ref_pos.index)
    np.testing.assert_allclose(pos["amount"], ref_pos["amount"], rtol=1e-12)
    np.testing.assert_allclose(pos["price"], ref_pos["price"], rtol=0, atol=0)
    np.testing.assert_allclose(pos["weight"], ref_pos["weight"], rtol=1e-12, atol=1e-15)
    assert (pos["count_day"].to_numpy() == ref_pos["count_day"].to_numpy()).all()

    metrics = portfolio_metrics(ours)
    assert set(metrics) == {f"1day.{k}" for k in ref_risk}
    for key, expected in ref_risk.items():
        assert metrics[f"1day.{key}"] == pytest.approx(expected, rel=1e-10, abs=1e-14), key
