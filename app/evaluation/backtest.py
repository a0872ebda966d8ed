"""The daily TopkDropout backtest, reproducing Qlib 0.9.7's portfolio analysis (``PortAnaRecord``).

Follows ``shared/reference/backtest.md`` literally, quirks included. The loop runs over dates; market data
comes from one store load (:func:`app.evaluation.exchange.load_quote`); holdings live in a small dict.

Two choices where Qlib itself is not deterministic: tied scores are ranked stably (instrument order; Qlib's
unstable quicksort is implementation-defined), and when holdings reach ``topk + n_drop`` (so no candidate joins
them) held names with tied or missing scores are cut in instrument order, where Qlib uses Python ``set`` order,
which changes with the hash seed between processes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from app.core.errors import ConfigError, DataError, DateRangeError
from app.data.store import QlibStore
from app.evaluation.exchange import BUY, SELL, Costs, Quote, amounts_close, load_quote
from app.evaluation.strategy import pick

log = logging.getLogger(__name__)

REPORT_COLUMNS = ("account", "return", "total_turnover", "turnover", "total_cost", "cost", "value", "cash", "bench")
INDICATOR_COLUMNS = ("ffr", "pa", "pos", "deal_amount", "value", "count")


@dataclass(frozen=True, kw_only=True)
class BacktestConfig:
    """Settings of the backtest; the defaults are PortAnaRecord's (and region ``cn``'s trade unit).

    ``limit_threshold=None`` blocks only suspended stocks. ``start``/``end`` default to the first prediction
    date and the trading day after the last one; ``end`` is clamped to the calendar's second-to-last day.

    Raises:
        ConfigError: a value out of range.
    """

    topk: int = 50
    n_drop: int = 5
    hold_thresh: int = 1
    risk_degree: float = 0.95
    account: float = 1e8
    limit_threshold: float | None = 0.095
    deal_price: str = "close"
    open_cost: float = 0.0005
    close_cost: float = 0.0015
    min_cost: float = 5.0
    trade_unit: float | None = 100
    benchmark: str | None = "SH000300"
    only_tradable: bool = False
    forbid_all_trade_at_limit: bool = True
    start: str | None = None
    end: str | None = None

    def __post_init__(self) -> None:
        checks = [
            ("topk", self.topk >= 1, "a whole number >= 1, e.g. topk=50"),
            ("n_drop", self.n_drop >= 0, "a whole number >= 0, e.g. n_drop=5"),
            ("risk_degree", 0 < self.risk_degree <= 1, "in (0, 1], e.g. risk_degree=0.95"),
            ("account", self.account > 0, "a positive cash amount, e.g. account=1e8"),
            ("open_cost", self.open_cost >= 0, "a rate >= 0, e.g. open_cost=0.0005"),
            ("close_cost", self.close_cost >= 0, "a rate >= 0, e.g. close_cost=0.0015"),
            ("min_cost", self.min_cost >= 0, "an amount >= 0, e.g. min_cost=5"),
            ("trade_unit", self.trade_unit is None or self.trade_unit > 0, "> 0 shares, or None for no lots"),
            ("limit_threshold", self.limit_threshold is None or self.limit_threshold > 0, "> 0, or None"),
            ("deal_price", self.deal_price.lstrip("$").isidentifier(), "a stored field such as close, open, vwap"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"BacktestConfig.{name}={getattr(self, name)!r} is invalid: use {allowed}.")

    @property
    def deal_field(self) -> str:
        """The deal-price field name without Qlib's ``$``."""
        return self.deal_price.lstrip("$").lower()


@dataclass(frozen=True, eq=False)
class BacktestResult:
    """``report``: Qlib's daily report (index ``datetime``, :data:`REPORT_COLUMNS`).

    ``positions``: end-of-day holdings, index ``(datetime, instrument)``, columns ``amount, price, weight,
    count_day``. ``indicators``: Qlib's daily trade indicators ``ffr, pa, pos, deal_amount, value, count``.
    """

    report: pd.DataFrame
    positions: pd.DataFrame
    indicators: pd.DataFrame
    config: BacktestConfig = field(repr=False)


@dataclass
class _Holding:
    amount: float
    price: float
    count: int


@dataclass
class _Account:
    """Cash, holdings and cumulative turnover/cost: Qlib's ``Position`` and ``Account`` for one executor."""

    cash: float
    costs: Costs
    book: dict[int, _Holding] = field(default_factory=dict)
    total_turnover: float = 0.0
    total_cost: float = 0.0

    def execute(self, col: int, direction: int, amount: float, price: float, factor: float) -> tuple[float, float]:
        """Deal one (tradable) order and update the position: ``(deal_amount, value)``."""
        if direction == SELL:
            held = self.book[col]
            deal, val, cost = self.costs.sell(amount, held.amount, price, factor, self.cash)
            if val > 1e-5:
                q = val / price  # Qlib stores the recomputed amount
                if amounts_close(held.amount, q):
                    del self.book[col]
                else:
                    held.amount -= q
                self.cash += val - cost
        else:
            deal, val, cost = self.costs.buy(amount, price, factor, self.cash)
            if val > 1e-5:
                q = val / price
                if col in self.book:
                    self.book[col].amount += q
                else:
                    self.book[col] = _Holding(q, price, 0)
                self.cash -= val + cost
        if val > 1e-5:
            self.total_turnover += val
            self.total_cost += cost
        return deal, val

    def mark(self, suspended: list[bool], close: list[float]) -> float:
        """Bar end: mark to the close unless suspended, count one more bar; returns the stock value."""
        value = 0.0
        for col in sorted(self.book):
            held = self.book[col]
            if not suspended[col]:
                held.price = close[col]
            held.count += 1
            value += held.amount * held.price
        return value


def run_backtest(pred: pd.Series, store: QlibStore, config: BacktestConfig | None = None) -> BacktestResult:
    """Run Qlib's daily TopkDropout backtest of ``pred`` (a score per ``(datetime, instrument)``) on ``store``.

    The decision on day d uses the scores dated on the previous calendar day; trades happen at d's deal price.

    Raises:
        DataError: ``pred`` is malformed, does not overlap the calendar, or the benchmark is missing.
        DateRangeError: start/end leave no trading day.
        UnknownMarketError: the store has no ``instruments/all.txt``.
    """
    cfg = config or BacktestConfig()
    scores = _scores(pred)
    cal = store.calendar()
    first, last = _steps(scores, cal, cfg)
    symbols = scores.index.get_level_values("instrument").unique().tolist()
    quote = load_quote(
        store,
        (first, last),
        symbols,
        deal_price=cfg.deal_field,
        limit_threshold=cfg.limit_threshold,
        benchmark=cfg.benchmark,
    )
    score, present = _signal_matrix(scores, cal, quote, first)
    log.info(
        "backtest %s..%s: %d days, %d symbols, topk=%d n_drop=%d",
        quote.dates[0].date(),
        quote.dates[-1].date(),
        len(quote.dates),
        len(quote.symbols),
        cfg.topk,
        cfg.n_drop,
    )
    return _simulate(quote, score, present, cfg)


def _scores(pred: pd.Series | pd.DataFrame) -> pd.Series:
    """``pred`` (or its first column) as float64 indexed ``(datetime, instrument)``, sorted."""
    series = pred.iloc[:, 0] if isinstance(pred, pd.DataFrame) else pred
    names = [str(n) for n in series.index.names]
    if not isinstance(series.index, pd.MultiIndex) or sorted(names) != ["datetime", "instrument"]:
        raise DataError(
            f"predictions must be indexed by (datetime, instrument); got index levels {names}. "
            "Set it with .set_index(['datetime', 'instrument'])."
        )
    if names[0] != "datetime":
        series = series.swaplevel()
    if series.empty:
        raise DataError("predictions are empty: nothing to backtest. Pass at least one (datetime, instrument) score.")
    dt = pd.DatetimeIndex(series.index.get_level_values("datetime"))
    index = pd.MultiIndex.from_arrays(
        [dt, series.index.get_level_values("instrument").astype(str)], names=["datetime", "instrument"]
    )
    return pd.Series(series.to_numpy(dtype=np.float64, na_value=np.nan), index=index).sort_index(kind="stable")


def _steps(scores: pd.Series, cal: pd.DatetimeIndex, cfg: BacktestConfig) -> tuple[int, int]:
    """Calendar positions of the first and last backtest day (PortAnaRecord's defaults, end clamped)."""
    dts = scores.index.get_level_values("datetime")
    lo_date, hi_date = dts.min(), dts.max()
    span = f"the calendar runs {cal[0].date()}..{cal[-1].date()}"
    if hi_date < cal[0] or lo_date > cal[-1]:
        raise DateRangeError(
            f"predictions dated {lo_date.date()}..{hi_date.date()} do not overlap the store's calendar ({span}). "
            "Predict on dates inside the calendar, or use the store the predictions were made for."
        )
    start = pd.Timestamp(cfg.start) if cfg.start else lo_date
    first = int(cal.searchsorted(start, side="left"))
    if cfg.end:
        last = int(cal.searchsorted(pd.Timestamp(cfg.end), side="right")) - 1
    else:
        last = int(cal.searchsorted(hi_date, side="right"))  # the trading day after the last prediction date
    if last > len(cal) - 2:
        log.info("backtest end clamped to %s: the last step needs the next calendar bar", cal[-2].date())
        last = len(cal) - 2
    if first > last:
        raise DateRangeError(
            f"backtest start {start.date()} leaves no trading day before the end "
            f"({cal[max(last, 0)].date()}; {span}). Move start earlier or end later; the last calendar day "
            "can never be traded because each step needs the next bar."
        )
    return first, last


def _signal_matrix(scores: pd.Series, cal: pd.DatetimeIndex, quote: Quote, first: int) -> tuple[np.ndarray, np.ndarray]:
    """Step t's signal: per symbol, the last non-NaN score dated in ``[cal[k-1], cal[k])``; ``present`` rows."""
    t_n, n = len(quote.dates), len(quote.symbols)
    dts = scores.index.get_level_values("datetime")
    step = cal.searchsorted(dts, side="right") - 1 - (first - 1)
    codes, names = pd.factorize(scores.index.get_level_values("instrument"))
    cols = pd.Index(quote.symbols).get_indexer(names)[codes]
    keep = (step >= 0) & (step < t_n)
    if not keep.any():
        log.warning("no prediction falls before a backtest day: the backtest makes no trades")
    frame = pd.DataFrame({"t": step[keep], "col": cols[keep], "score": scores.to_numpy()[keep]})
    present = np.zeros((t_n, n), dtype=bool)
    present[frame["t"].to_numpy(), frame["col"].to_numpy()] = True
    valid = frame[frame["score"].notna()].drop_duplicates(["t", "col"], keep="last")
    score = np.full((t_n, n), np.nan)
    score[valid["t"].to_numpy(), valid["col"].to_numpy()] = valid["score"].to_numpy()
    return score, present


def _simulate(quote: Quote, score: np.ndarray, present: np.ndarray, cfg: BacktestConfig) -> BacktestResult:
    costs = Costs(
        open_cost=cfg.open_cost,
        close_cost=cfg.close_cost,
        min_cost=cfg.min_cost,
        trade_unit=cfg.trade_unit,
        adjusted=quote.adjusted,
    )
    acct = _Account(cash=float(cfg.account), costs=costs)
    last_account, last_cost, last_turnover = float(cfg.account), 0.0, 0.0
    report = np.zeros((len(quote.dates), len(REPORT_COLUMNS)))
    indicators = np.zeros((len(quote.dates), len(INDICATOR_COLUMNS)))
    pos_rows: list[tuple[int, int, float, float, float, int]] = []
    for t in range(len(quote.dates)):
        price, factor = quote.price[t].tolist(), quote.factor[t].tolist()
        cols = np.flatnonzero(present[t])
        orders = _orders(t, quote, acct, cols, score[t], price, factor, cfg) if len(cols) else []
        fills = []
        for col, direction, amount in orders:
            deal, val = 0.0, 0.0
            if quote.tradable(t, col, direction):  # the executor re-checks each order in its own direction
                deal, val = acct.execute(col, direction, amount, price[col], factor[col])
            fills.append((amount, deal, val))
        stock_value = acct.mark(quote.suspended[t].tolist(), quote.close[t].tolist())
        account = stock_value + acct.cash
        now_cost, now_turnover = acct.total_cost - last_cost, acct.total_turnover - last_turnover
        report[t] = (
            account,
            ((account - last_account) + now_cost) / last_account,  # before costs: they are added back
            acct.total_turnover,
            now_turnover / last_account,
            acct.total_cost,
            now_cost / last_account,
            stock_value,
            acct.cash,
            quote.bench[t],
        )
        indicators[t] = _trade_indicators(fills)
        pos_rows.extend((t, c, h.amount, h.price, h.amount * h.price / account, h.count) for c, h in acct.book.items())
        last_account, last_cost, last_turnover = account, acct.total_cost, acct.total_turnover
    index = quote.dates.rename("datetime")
    return BacktestResult(
        report=pd.DataFrame(report, index=index, columns=list(REPORT_COLUMNS)),
        positions=_positions_frame(pos_rows, quote),
        indicators=pd.DataFrame(indicators, index=index, columns=list(INDICATOR_COLUMNS)),
        config=cfg,
    )


def _orders(
    t: int,
    quote: Quote,
    acct: _Account,
    cols: np.ndarray,
    score: np.ndarray,
    price: list[float],
    factor: list[float],
    cfg: BacktestConfig,
) -> list[tuple[int, int, float]]:
    """TopkDropout's orders ``(col, direction, amount)`` for step t: sells simulated on a copy, then buys."""
    tradable = partial(quote.tradable, t)
    held = sorted(acct.book)
    picks = pick(
        held,
        cols,
        score,
        topk=cfg.topk,
        n_drop=cfg.n_drop,
        tradable=partial(tradable, direction=None) if cfg.only_tradable else None,
    )
    hold_dir = None if cfg.forbid_all_trade_at_limit else SELL
    orders: list[tuple[int, int, float]] = []
    temp_cash = cash = acct.cash  # the copy's cash (checks) and the strategy's running cash (budget)
    for col in held:
        if not tradable(col, hold_dir) or col not in picks.sell or acct.book[col].count < cfg.hold_thresh:
            continue
        if tradable(col, SELL):
            amount = acct.book[col].amount  # the full holding, not rounded
            orders.append((col, SELL, amount))
            _, val, cost = acct.costs.sell(amount, amount, price[col], factor[col], temp_cash)
            if val > 1e-5:
                temp_cash += val - cost
            cash += val - cost
    per_buy = cash * cfg.risk_degree / len(picks.buy) if picks.buy else 0.0  # untradable names keep their share
    buy_dir = None if cfg.forbid_all_trade_at_limit else BUY
    for col in picks.buy:
        if tradable(col, buy_dir):
            orders.append((col, BUY, acct.costs.round_lot(per_buy / price[col], factor[col])))
    return orders


def _trade_indicators(fills: list[tuple[float, float, float]]) -> tuple[float, ...]:
    """Qlib's per-step indicators of a simulator executor: ffr = mean deal/amount; pa = 0 at this level."""
    if not fills:
        return (math.nan, math.nan, math.nan, 0.0, 0.0, 0.0)
    ratios = [deal / amount for amount, deal, _ in fills if amount != 0]  # 0/0 is NaN in Qlib, skipped by nanmean
    ffr = sum(ratios) / len(ratios) if ratios else math.nan
    deal_amount = sum(abs(deal) for _, deal, _ in fills)
    value = sum(abs(val) for _, _, val in fills)
    return (ffr, 0.0, 0.0, deal_amount, value, float(len(fills)))


def _positions_frame(rows: list[tuple[int, int, float, float, float, int]], quote: Quote) -> pd.DataFrame:
    t, col, amount, price, weight, count = (np.asarray(x) for x in zip(*rows, strict=True)) if rows else ([],) * 6
    index = pd.MultiIndex.from_arrays(
        [
            quote.dates[np.asarray(t, dtype=np.intp)],
            np.asarray(quote.symbols, dtype=object)[np.asarray(col, dtype=np.intp)],
        ],
        names=["datetime", "instrument"],
    )
    frame = pd.DataFrame(
        {
            "amount": np.asarray(amount, dtype=np.float64),
            "price": np.asarray(price, dtype=np.float64),
            "weight": np.asarray(weight, dtype=np.float64),
            "count_day": np.asarray(count, dtype=np.int64),
        },
        index=index,
    )
    return frame.sort_index()
