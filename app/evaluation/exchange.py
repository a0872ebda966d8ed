"""Market data and order execution of the daily backtest, as Qlib 0.9.7's ``Exchange`` does them.

:func:`load_quote` reads the whole universe (``instruments/all.txt``) once and turns it into float64
``[steps × symbols]`` arrays with the tradability flags; :class:`Costs` executes one order with Qlib's cash
checks, lot rounding and cost rules. See ``shared/reference/backtest.md`` §1, §5 and §9.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from app.core.errors import DataError, UnknownInstrumentError
from app.data.store import QlibStore

log = logging.getLogger(__name__)

UNIVERSE = "all"


@dataclass(frozen=True, eq=False)
class Quote:
    """Market data of the backtest steps; arrays are ``[len(dates), len(symbols)]``.

    ``symbols`` is alphabetical: the universe plus any predicted symbol outside it (always suspended there).
    ``price`` is the deal price, or the close where the deal price is missing or ≤ 1e-8. ``limit_buy`` and
    ``limit_sell`` include suspension. ``adjusted`` is Qlib's ``trade_w_adj_price`` (no lot rounding).
    ``bench`` is the benchmark return of each step (float32 arithmetic, stored as float64).
    """

    dates: pd.DatetimeIndex
    symbols: tuple[str, ...]
    price: np.ndarray
    close: np.ndarray
    factor: np.ndarray
    suspended: np.ndarray
    limit_buy: np.ndarray
    limit_sell: np.ndarray
    adjusted: bool
    bench: np.ndarray

    def tradable(self, t: int, col: int, direction: int | None) -> bool:
        """Qlib's ``is_stock_tradable``: not suspended and not limited (None = either direction; 1 buy, 0 sell)."""
        if self.suspended[t, col]:
            return False
        if direction is None:
            return not (self.limit_buy[t, col] or self.limit_sell[t, col])
        return not (self.limit_buy[t, col] if direction == BUY else self.limit_sell[t, col])


SELL, BUY = 0, 1


def load_quote(
    store: QlibStore,
    steps: tuple[int, int],
    extra_symbols: Sequence[str],
    *,
    deal_price: str,
    limit_threshold: float | None,
    benchmark: str | None,
) -> Quote:
    """Load the quote for calendar positions ``steps = (first, last)`` (both traded days).

    One :meth:`QlibStore.load` covers the universe from the bar before ``first`` (for the benchmark's first
    return) to the bar after ``last``.

    Raises:
        UnknownMarketError: the store has no ``instruments/all.txt``.
        UnknownInstrumentError: the benchmark is neither in the universe nor stored.
        DataError: the benchmark has no close price in the backtest window.
    """
    cal = store.calendar()
    first, last = steps
    lo, hi = max(first - 1, 0), min(last + 1, len(cal) - 1)
    fields = list(dict.fromkeys([deal_price, "close", "factor", "change"]))
    panel = store.load(fields, market=UNIVERSE, start=cal[lo], end=cal[hi])
    rows = slice(first - lo, last - lo + 1)
    universe = list(panel.instruments)
    symbols = sorted(set(universe) | set(extra_symbols))
    cols = np.searchsorted(np.asarray(symbols, dtype=object), np.asarray(universe, dtype=object))
    t, n = last - first + 1, len(symbols)

    def widen(field: str) -> np.ndarray:
        out = np.full((t, n), np.nan)
        out[:, cols] = panel.values[field][rows]
        return out

    member = np.zeros((t, n), dtype=bool)
    member[:, cols] = panel.member[rows]
    close = np.where(member, widen("close"), np.nan)
    factor = np.where(member, widen("factor"), np.nan)
    raw = np.where(member, widen(deal_price), np.nan)
    price = np.where(np.isnan(raw) | (raw <= 1e-8), close, raw)
    suspended = np.isnan(close)
    limit_buy, limit_sell = suspended.copy(), suspended.copy()
    if limit_threshold is not None:
        # Qlib compares the stored float32 change with the threshold in float32 (pandas/NumPy weak scalar)
        change = np.full((t, n), np.nan, dtype=np.float32)
        change[:, cols] = panel.values["change"][rows]
        with np.errstate(invalid="ignore"):
            limit_buy |= member & (change >= np.float32(limit_threshold))
            limit_sell |= member & (change <= np.float32(-limit_threshold))
    adjusted = bool(np.any(~suspended & np.isnan(factor)))
    if adjusted:
        log.warning("factor missing where close exists: trading in adjusted prices, without lot rounding (as Qlib)")
    window = cal[lo : hi + 1]
    bench = _benchmark(store, panel.instruments, panel.values["close"], benchmark, (first - lo, last - lo), window)
    return Quote(
        dates=cal[first : last + 1],
        symbols=tuple(symbols),
        price=price,
        close=close,
        factor=factor,
        suspended=suspended,
        limit_buy=limit_buy,
        limit_sell=limit_sell,
        adjusted=adjusted,
        bench=bench,
    )


def _benchmark(
    store: QlibStore,
    universe: Sequence[str],
    closes: np.ndarray,
    benchmark: str | None,
    rows: tuple[int, int],
    window: pd.DatetimeIndex,
) -> np.ndarray:
    """``$close/Ref($close,1)-1`` of the benchmark in float32, NaN → 0, one value per step."""
    a, b = rows
    if benchmark is None:
        return np.zeros(b - a + 1)
    if benchmark in universe:
        close = closes[:, list(universe).index(benchmark)]
    else:
        try:
            alone = store.load(["close"], instruments=[benchmark], start=window[0], end=window[-1])
            close = alone.values["close"][:, 0]
        except UnknownInstrumentError:
            shown = ", ".join(list(universe)[:20]) + (" ..." if len(universe) > 20 else "")
            raise UnknownInstrumentError(
                f"benchmark {benchmark!r} is not in {store.root}: it is not listed in instruments/{UNIVERSE}.txt "
                f"({shown}) and has no features/{benchmark.lower()}/ folder. Set benchmark to one of those "
                "symbols, or benchmark=None for no benchmark."
            ) from None
    span = close[max(a - 1, 0) : b + 1]
    if np.all(np.isnan(span)):
        raise DataError(
            f"benchmark {benchmark!r} has no close price between {window[max(a - 1, 0)].date()} and "
            f"{window[b].date()} in {store.root}. Pick a benchmark stored over the backtest, or benchmark=None."
        )
    prev = np.full(b - a + 1, np.nan, dtype=np.float32)
    if a > 0:
        prev[:] = close[a - 1 : b]
    else:
        prev[1:] = close[a:b]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = close[a : b + 1] / prev - np.float32(1)
    r = np.where(np.isnan(r), np.float32(0), r).astype(np.float32)
    one = np.float32(1)
    out: np.ndarray = ((r + one) - one).astype(np.float64)
    return out


def amounts_close(a: float, b: float) -> bool:
    """``np.isclose`` with its defaults (rtol 1e-5, atol 1e-8) for two floats."""
    return abs(a - b) <= 1e-8 + 1e-5 * abs(b)


@dataclass(frozen=True)
class Costs:
    """Qlib's ``deal_order`` rules for one order (impact cost 0, no volume limit)."""

    open_cost: float
    close_cost: float
    min_cost: float
    trade_unit: float | None
    adjusted: bool

    def round_lot(self, amount: float, factor: float) -> float:
        """Round down to whole ``trade_unit`` lots of real shares: ``(a·f + 0.1) // unit · unit / f``."""
        if self.adjusted or self.trade_unit is None:
            return amount
        return (amount * factor + 0.1) // self.trade_unit * self.trade_unit / factor

    def sell(self, amount: float, held: float, price: float, factor: float, cash: float) -> tuple[float, float, float]:
        """Deal a sell of ``amount`` out of ``held``: ``(deal_amount, value, cost)``."""
        ratio = self.close_cost
        deal = amount
        if not amounts_close(deal, held):
            deal = self.round_lot(min(held, deal), factor)
        if cash + deal * price < max(deal * price * ratio, self.min_cost):
            deal = 0.0
        return self._settle(deal, price, ratio)

    def buy(self, amount: float, price: float, factor: float, cash: float) -> tuple[float, float, float]:
        """Deal a buy of ``amount`` with ``cash`` available: ``(deal_amount, value, cost)``."""
        ratio = self.open_cost
        value = amount * price
        if cash < max(value * ratio, self.min_cost):
            deal = 0.0
        elif cash < value + max(value * ratio, self.min_cost):
            deal = self.round_lot(min(self._max_buy(price, cash, ratio), amount), factor)
        else:
            deal = self.round_lot(amount, factor)
        return self._settle(deal, price, ratio)

    def _max_buy(self, price: float, cash: float, ratio: float) -> float:
        if cash < self.min_cost:
            return 0.0
        # Qlib divides by the cost ratio here; with a zero ratio the fee is always min_cost
        critical = self.min_cost / ratio + self.min_cost if ratio > 0 else np.inf
        if cash >= critical:
            return cash / (1 + ratio) / price
        return (cash - self.min_cost) / price

    def _settle(self, deal: float, price: float, ratio: float) -> tuple[float, float, float]:
        value = deal * price
        cost = max(value * ratio, self.min_cost)
        if value <= 1e-5:
            cost = 0.0
        return deal, value, cost
