"""The daily TopkDropout backtest on hand-built stores: every rule of shared/reference/backtest.md by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.errors import ConfigError, DataError, DateRangeError, UnknownInstrumentError
from app.data.store import QlibStore
from app.data.synth import SynthSpec, write_synth_market
from app.evaluation.backtest import REPORT_COLUMNS, BacktestConfig, run_backtest
from app.evaluation.risk import portfolio_metrics
from tests.unit.evaluation.tiny_market import NAN, f32_return, make_store, predictions

A_UP = [10.0, 10.0, 10.5, 11.0, 11.0, 11.0]
FLAT = [20.0] * 6
BENCH = [1000.0, 1000.0, 1010.0, 1010.0, 1010.0, 1010.0]
A_FIRST = {0: {"A": 1.0, "B": 0.0}, 1: {"A": 1.0, "B": 0.0}}
B_FIRST = {2: {"A": 0.0, "B": 1.0}, 3: {"A": 0.0, "B": 1.0}}
ONE = BacktestConfig(topk=1, n_drop=1, account=1e6)


def run(root: Path, scores: dict[int, dict[str, float]], config: BacktestConfig = ONE, **store: object) -> object:
    cal = make_store(root, **store)  # type: ignore[arg-type]
    return run_backtest(predictions(cal, scores), QlibStore(root), config)


def test_report_rows_by_hand(tmp_path: Path) -> None:
    res = run(tmp_path, {**A_FIRST, **B_FIRST}, closes={"A": A_UP, "B": FLAT}, bench=BENCH)
    rep = res.report
    assert list(rep.columns) == list(REPORT_COLUMNS)
    assert len(rep) == 5  # start = first prediction date, end = the day after the last one
    # day 0: no prediction before it -> no trade, still a row
    assert rep.iloc[0][["return", "turnover", "cost", "value"]].tolist() == [0, 0, 0, 0]
    # day 1: buy A with 95 % of the cash at the close, 95000 shares = 950 lots
    assert rep.iloc[1]["cash"] == pytest.approx(1e6 - 950_000 - 475, rel=1e-15)
    assert rep.iloc[1]["return"] == pytest.approx(0.0, abs=1e-15)
    assert rep.iloc[1]["cost"] == pytest.approx(475 / 1e6, rel=1e-12)
    assert rep.iloc[1]["turnover"] == pytest.approx(0.95, rel=1e-12)
    # day 2: marked to the new close
    assert rep.iloc[2]["value"] == pytest.approx(95_000 * 10.5, rel=1e-15)
    assert rep.iloc[2]["return"] == pytest.approx(47_500 / 999_525, rel=1e-12)
    assert rep.iloc[2]["bench"] == f32_return(1010, 1000)
    # day 3: B now ranks first: sell all of A at 11 (close cost), buy B with the proceeds (lots of 100)
    sell_val, sell_cost = 95_000 * 11.0, 95_000 * 11.0 * 0.0015
    cash = 49_525 + (sell_val - sell_cost)
    lots = (cash * 0.95 / 20 + 0.1) // 100 * 100
    buy_val = lots * 20
    cash_after = cash - (buy_val + buy_val * 0.0005)
    assert rep.iloc[3]["cash"] == pytest.approx(cash_after, rel=1e-12)
    assert rep.iloc[3]["total_cost"] == pytest.approx(475 + sell_cost + buy_val * 0.0005, rel=1e-12)
    prev_account = 95_000 * 10.5 + 49_525
    expected = ((buy_val + cash_after - prev_account) + sell_cost + buy_val * 0.0005) / prev_account
    assert rep.iloc[3]["return"] == pytest.approx(expected, rel=1e-12)
    assert rep.iloc[3]["turnover"] == pytest.approx((sell_val + buy_val) / prev_account, rel=1e-12)
    assert (rep["return"] - rep["cost"]).to_numpy()[1:] == pytest.approx(
        (rep["account"] / rep["account"].shift(1) - 1).to_numpy()[1:], abs=1e-15
    )
    pos = res.positions
    assert list(pos.index.get_level_values("instrument")) == ["A", "A", "B", "B"]
    assert pos["count_day"].tolist() == [1, 2, 1, 2]
    assert pos.loc[(rep.index[2], "A"), "price"] == 10.5  # marked to the close
    weights = pos.groupby(level="datetime")["weight"].sum()
    np.testing.assert_allclose(weights + rep["cash"].iloc[1:] / rep["account"].iloc[1:], 1.0)


def test_limit_up_blocks_the_buy_and_the_slot_stays_idle(tmp_path: Path) -> None:
    res = run(tmp_path, A_FIRST, closes={"A": A_UP, "B": FLAT}, change={"A": {1: 0.10}})
    assert res.report.iloc[1]["turnover"] == 0  # A cannot be bought; B is not bought in its place
    assert res.report.iloc[2]["turnover"] > 0


def test_limit_threshold_none_ignores_limits(tmp_path: Path) -> None:
    config = BacktestConfig(topk=1, n_drop=1, account=1e6, limit_threshold=None)
    res = run(tmp_path, A_FIRST, config, closes={"A": A_UP, "B": FLAT}, change={"A": {1: 0.10}})
    assert res.report.iloc[1]["turnover"] == pytest.approx(0.95)


def test_limit_is_compared_in_float32(tmp_path: Path) -> None:
    # float32(0.095) = 0.0949999988 < 0.095, yet Qlib's float32 comparison calls it limit-up
    res = run(tmp_path, A_FIRST, closes={"A": A_UP, "B": FLAT}, change={"A": {1: float(np.float32(0.095))}})
    assert res.report.iloc[1]["turnover"] == 0


def test_limit_down_blocks_the_sell_and_the_failed_sell_still_frees_a_slot(tmp_path: Path) -> None:
    res = run(tmp_path, {**A_FIRST, **B_FIRST}, closes={"A": A_UP, "B": FLAT}, change={"A": {3: -0.10}})
    day3 = res.positions.xs(res.report.index[3], level="datetime")
    assert sorted(day3.index) == ["A", "B"]  # A unsold, B bought anyway: len(sell) counts candidates
    assert day3.loc["B", "amount"] == 2300  # the cash left after day 1: 49525 * 0.95 / 20 -> 23 lots


def test_forbid_all_trade_at_limit_false_buys_a_limit_down_stock(tmp_path: Path) -> None:
    kw = {"closes": {"A": A_UP, "B": FLAT}, "change": {"A": {1: -0.10}}}
    blocked = run(tmp_path / "a", A_FIRST, **kw)
    config = BacktestConfig(topk=1, n_drop=1, account=1e6, forbid_all_trade_at_limit=False)
    allowed = run(tmp_path / "b", A_FIRST, config, **kw)
    assert blocked.report.iloc[1]["turnover"] == 0
    assert allowed.report.iloc[1]["turnover"] == pytest.approx(0.95)


def test_min_cost_and_lot_rounding(tmp_path: Path) -> None:
    config = BacktestConfig(topk=1, n_drop=1, account=5000.0)
    res = run(tmp_path, {**A_FIRST, **B_FIRST}, config, closes={"A": A_UP, "B": FLAT})
    rep = res.report
    assert res.positions.loc[(rep.index[1], "A"), "amount"] == 400  # 4750 / 10 = 475 shares -> 4 lots
    assert rep.iloc[1]["total_cost"] == 5.0  # 4000 * 0.0005 = 2 < min cost 5
    assert rep.iloc[1]["cash"] == 5000 - 4000 - 5
    assert rep.iloc[3]["total_cost"] == pytest.approx(5 + 400 * 11 * 0.0015 + 5)  # sell 6.6, buy at min cost


def test_factor_sets_the_lot_size_in_real_shares(tmp_path: Path) -> None:
    res = run(tmp_path, A_FIRST, closes={"A": [7.0] * 6, "B": FLAT}, factor={"A": [2.5] * 6})
    amount = res.positions["amount"].iloc[0]
    assert amount == pytest.approx((950_000 / 7 * 2.5 + 0.1) // 100 * 100 / 2.5, rel=1e-15)
    assert (amount * 2.5) % 100 == pytest.approx(0, abs=1e-6)


def test_missing_factor_switches_to_adjusted_prices_without_lots(tmp_path: Path) -> None:
    res = run(tmp_path, A_FIRST, closes={"A": [7.0] * 6, "B": FLAT}, factor={"B": [1.0, NAN, 1, 1, 1, 1]})
    assert res.positions["amount"].iloc[0] == pytest.approx(950_000 / 7, rel=1e-15)


def rotation(days: int, n: int = 6) -> dict[int, dict[str, float]]:
    """Every day each score drops by one rank: exactly one held name becomes the worst of the candidates."""
    return {d: {f"S{i}": float((i - d) % n) for i in range(n)} for d in range(days)}


def test_n_drop_replaces_one_name_a_day(tmp_path: Path) -> None:
    config = BacktestConfig(topk=2, n_drop=1, account=1e6)
    res = run(tmp_path, rotation(7), config, closes={f"S{i}": [10.0] * 9 for i in range(6)})
    counts = res.indicators["count"].to_numpy()
    assert counts[1] == 2 and (counts[2:] == 2).all()  # day 1: two buys; then one sell + one buy a day
    held = res.positions.groupby(level="datetime").size()
    assert (held == 2).all()
    names = res.positions.reset_index().groupby("datetime")["instrument"].apply(frozenset).tolist()
    assert all(len(a - b) == 1 for a, b in zip(names[1:], names[:-1], strict=True))


def test_hold_thresh_delays_sells(tmp_path: Path) -> None:
    stores = {f"S{i}": [10.0] * 11 for i in range(6)}
    quick = run(tmp_path / "a", rotation(9), BacktestConfig(topk=2, n_drop=1), closes=stores)
    slow = run(tmp_path / "b", rotation(9), BacktestConfig(topk=2, n_drop=1, hold_thresh=3), closes=stores)

    def held_days_when_sold(res: object) -> list[int]:
        pos = res.positions.reset_index()  # type: ignore[attr-defined]
        last_day = pos["datetime"].max()
        last = pos.sort_values("datetime").groupby("instrument").tail(1)
        return last.loc[last["datetime"] < last_day, "count_day"].tolist()

    assert min(held_days_when_sold(quick)) == 2  # bought at the top, sold two days later
    assert min(held_days_when_sold(slow)) >= 3


def test_suspended_candidate_keeps_its_share_of_cash(tmp_path: Path) -> None:
    scores = {0: {"A": 2.0, "B": 1.0, "C": 0.0}}
    res = run(tmp_path, scores, BacktestConfig(topk=2, n_drop=0, account=1e6),
              closes={"A": [10, NAN, 10, 10], "B": [10.0] * 4, "C": [10.0] * 4})  # fmt: skip
    assert res.report.iloc[1]["value"] == pytest.approx(475_000)  # half of 95 %: A's half stays cash


def test_zombie_holding_is_kept_at_its_last_price_and_adds_a_buy(tmp_path: Path) -> None:
    closes = {"A": [10, 10, 10.4, None, None, None, None, None], "B": [10.0] * 8, "C": [10.0] * 8, "D": [10.0] * 8}
    scores = {0: {"A": 3.0, "B": 2.0, "C": 1.0, "D": 0.0}, 1: {"A": 3.0, "B": 2.0, "C": 1.0, "D": 0.0}}
    scores |= {d: {"B": 2.0, "C": 1.0, "D": 0.0} for d in range(2, 6)}
    res = run(tmp_path, scores, BacktestConfig(topk=2, n_drop=1, account=1e6), closes=closes)
    last = res.positions.xs(res.report.index[-1], level="datetime")
    assert sorted(last.index) == ["A", "B", "C"]  # 3 > topk: A's failed sell bought C
    assert last.loc["A", "price"] == float(np.float32(10.4))  # its last stored close, frozen
    assert last.loc["A", "count_day"] == len(res.report) - 1


def test_prediction_timing_uses_the_previous_calendar_bar(tmp_path: Path) -> None:
    cal = make_store(tmp_path, {"A": [10.0] * 8, "B": [10.0] * 8})
    friday = cal[4]
    pred = pd.Series(
        [2.0, 1.0, 1.0, 2.0],
        index=pd.MultiIndex.from_tuples(
            [(friday, "A"), (friday, "B"), (friday + pd.Timedelta(days=1), "A"), (friday + pd.Timedelta(days=1), "B")],
            names=["datetime", "instrument"],
        ),
    )
    res = run_backtest(pred, QlibStore(tmp_path), BacktestConfig(topk=1, n_drop=1))
    assert list(res.report.index) == [cal[4], cal[5]]
    assert res.positions.index.tolist() == [(cal[5], "B")]  # Saturday's score is the last in Friday's bar


def test_end_is_clamped_to_the_second_to_last_day(tmp_path: Path) -> None:
    cal = make_store(tmp_path, {"A": [10.0] * 5, "B": [10.0] * 5})
    pred = predictions(cal, {d: {"A": 1.0, "B": 0.0} for d in range(5)})
    assert run_backtest(pred, QlibStore(tmp_path), ONE).report.index[-1] == cal[-2]
    late = BacktestConfig(topk=1, n_drop=1, end="2030-01-01")
    assert run_backtest(pred, QlibStore(tmp_path), late).report.index[-1] == cal[-2]
    with pytest.raises(DateRangeError, match="no trading day"):
        run_backtest(pred, QlibStore(tmp_path), BacktestConfig(start=str(cal[-1].date())))
    early = predictions(cal - pd.Timedelta(days=3650), {0: {"A": 1.0}})
    with pytest.raises(DateRangeError, match="do not overlap"):
        run_backtest(early, QlibStore(tmp_path), ONE)


def test_benchmark_first_day_uses_the_bar_before_start(tmp_path: Path) -> None:
    res = run(tmp_path, {2: {"A": 1.0, "B": 0.0}}, closes={"A": A_UP, "B": FLAT}, bench=BENCH)
    assert res.report.index[0] == pd.Timestamp("2020-01-08")
    assert res.report["bench"].iloc[0] == f32_return(1010, 1000)
    assert res.report["bench"].iloc[0] != pytest.approx(0.01, rel=1e-9)  # float32, not float64


def test_benchmark_none_and_missing(tmp_path: Path) -> None:
    cal = make_store(tmp_path, {"A": A_UP, "B": FLAT}, bench=BENCH)
    pred = predictions(cal, A_FIRST)
    res = run_backtest(pred, QlibStore(tmp_path), BacktestConfig(topk=1, n_drop=1, benchmark=None))
    assert (res.report["bench"] == 0).all()
    with pytest.raises(UnknownInstrumentError, match=r"SZ399905.*A, B, SH000300"):
        run_backtest(pred, QlibStore(tmp_path), BacktestConfig(benchmark="SZ399905"))


def test_benchmark_outside_the_universe_is_read_from_its_features(tmp_path: Path) -> None:
    cal = make_store(tmp_path, {"A": A_UP, "B": FLAT}, bench=BENCH, universe=["A", "B"])
    res = run_backtest(predictions(cal, A_FIRST), QlibStore(tmp_path), ONE)
    assert res.report["bench"].iloc[2] == f32_return(1010, 1000)


def test_bad_predictions_and_config_are_named(tmp_path: Path) -> None:
    cal = make_store(tmp_path, {"A": A_UP, "B": FLAT})
    flat = pd.Series([1.0], index=pd.Index([cal[0]], name="datetime"))
    with pytest.raises(DataError, match=r"indexed by \(datetime, instrument\)"):
        run_backtest(flat, QlibStore(tmp_path), ONE)
    with pytest.raises(ConfigError, match="n_drop"):
        BacktestConfig(n_drop=-1)
    swapped = predictions(cal, A_FIRST).swaplevel()
    assert run_backtest(swapped, QlibStore(tmp_path), ONE).report.iloc[1]["turnover"] > 0


def _synth(root: Path, days: int = 160) -> QlibStore:
    write_synth_market(root, SynthSpec(instruments=30, days=days, seed=5, suspensions_per_year=3.0))
    return QlibStore(root)


def _foresight(store: QlibStore, sign: float) -> pd.Series:
    panel = store.load(["close"], market="synth")
    close = panel.values["close"].astype(np.float64)
    future = np.full_like(close, np.nan)
    future[:-2] = close[2:] / close[1:-1] - 1
    t, i = np.nonzero(panel.stored()[:-2])
    index = pd.MultiIndex.from_arrays(
        [panel.dates[t], np.asarray(panel.instruments)[i]], names=["datetime", "instrument"]
    )
    return pd.Series(sign * np.nan_to_num(future[t, i], nan=-1.0), index=index)


def test_perfect_foresight_beats_the_benchmark_and_its_reverse_loses(tmp_path: Path) -> None:
    store = _synth(tmp_path / "m")
    config = BacktestConfig(topk=5, n_drop=2)
    good = portfolio_metrics(run_backtest(_foresight(store, 1.0), store, config).report)
    bad = portfolio_metrics(run_backtest(_foresight(store, -1.0), store, config).report)
    assert good["1day.excess_return_with_cost.annualized_return"] > 1.0
    assert bad["1day.excess_return_with_cost.annualized_return"] < -0.5


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory: pytest.TempPathFactory) -> QlibStore:
    return _synth(tmp_path_factory.mktemp("cash") / "m", days=90)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**31),
    topk=st.integers(1, 8),
    n_drop=st.integers(0, 4),
    hold=st.integers(1, 3),
    account=st.sampled_from([3e3, 2e4, 1e5, 1e8]),
    risk=st.sampled_from([0.5, 0.95, 1.0]),
    only_tradable=st.booleans(),
)
def test_cash_never_goes_negative(
    synth_store: QlibStore, seed: int, topk: int, n_drop: int, hold: int, account: float, risk: float,
    only_tradable: bool,
) -> None:  # fmt: skip
    frame = synth_store.load_frame(["close", "factor"], market="synth")
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal(len(frame))
    scores[rng.random(len(frame)) < 0.05] = np.nan
    pred = pd.Series(scores, index=frame.index)
    config = BacktestConfig(topk=topk, n_drop=n_drop, hold_thresh=hold, account=account, risk_degree=risk,
                            only_tradable=only_tradable, min_cost=5.0)  # fmt: skip
    res = run_backtest(pred, synth_store, config)
    rep = res.report
    # never below zero, except Qlib's round_lot overshoot of at most 0.1 share on a cash-limited buy
    overshoot = 0.1 * float(np.nanmax(frame["close"] / frame["factor"])) * (1 + config.open_cost)
    assert (rep["cash"] >= -overshoot).all()
    assert not rep.isna().any().any()
    np.testing.assert_allclose(rep["account"], rep["value"] + rep["cash"], rtol=1e-12)
    assert (res.positions["amount"] > 0).all()
