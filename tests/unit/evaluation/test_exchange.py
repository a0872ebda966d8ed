"""Order execution (Qlib's deal_order) and the quote's flags: lots, cash checks, costs, limits, fallbacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.data.store import QlibStore
from app.evaluation.exchange import BUY, SELL, Costs, load_quote
from tests.unit.evaluation.tiny_market import NAN, f32_return, make_store

COSTS = Costs(open_cost=0.0005, close_cost=0.0015, min_cost=5.0, trade_unit=100, adjusted=False)


def test_round_lot_counts_real_shares_and_absorbs_float_error() -> None:
    assert COSTS.round_lot(299.99999, 1.0) == 300  # +0.1 before flooring
    assert COSTS.round_lot(299.8, 1.0) == 200
    assert COSTS.round_lot(135714.2857, 2.5) == pytest.approx(339200 / 2.5)
    assert Costs(open_cost=0, close_cost=0, min_cost=0, trade_unit=None, adjusted=False).round_lot(123.4, 1) == 123.4
    assert Costs(open_cost=0, close_cost=0, min_cost=0, trade_unit=100, adjusted=True).round_lot(123.4, NAN) == 123.4


def test_full_sale_is_not_rounded_and_pays_at_least_min_cost() -> None:
    deal, value, cost = COSTS.sell(123.45, 123.45, 10.0, 1.0, cash=0.0)
    assert (deal, value, cost) == (123.45, 1234.5, 5.0)
    deal, value, cost = COSTS.sell(1000.0, 1000.0, 10.0, 1.0, cash=0.0)
    assert cost == pytest.approx(15.0)


def test_partial_sale_is_rounded_and_a_sale_that_cannot_pay_its_fee_is_dropped() -> None:
    assert COSTS.sell(150.0, 400.0, 10.0, 1.0, cash=0.0)[0] == 100
    assert COSTS.sell(0.3, 0.3, 10.0, 1.0, cash=1.0) == (0.0, 0.0, 0.0)  # 1 + 3 < min cost 5


def test_buy_branches() -> None:
    # enough cash: rounded to lots
    assert COSTS.buy(250.0, 10.0, 1.0, cash=1e6)[:2] == (200.0, 2000.0)
    # cash cannot even pay the fee
    assert COSTS.buy(200.0, 10.0, 1.0, cash=4.0) == (0.0, 0.0, 0.0)
    # not enough for value + fee: the most cash allows, in lots
    deal, value, cost = COSTS.buy(1000.0, 10.0, 1.0, cash=9_504.0)
    assert deal == 900 and cost == 5.0
    # Qlib quirk: the +0.1 of round_lot can round the cash-limited amount (999.9) *up* to a full lot, so the
    # deal overspends by up to 0.1 share: 10000 + 5 > 10004 leaves cash at -1
    deal, value, cost = COSTS.buy(1000.0, 10.0, 1.0, cash=10_004.0)
    assert (deal, value + cost) == (1000.0, 10_005.0)
    # below the critical cash (min_cost / ratio + min_cost) the fee is min_cost
    assert COSTS.buy(1000.0, 1.0, 1.0, cash=1004.0)[0] == 900


def test_zero_value_deal_costs_nothing() -> None:
    assert COSTS.buy(50.0, 10.0, 1.0, cash=1e6) == (0.0, 0.0, 0.0)


def test_quote_flags(tmp_path: Path) -> None:
    cal = make_store(
        tmp_path,
        {"A": [10.0, 10.5, NAN, 10.0, 10.0], "B": [None, 20.0, 20.0, 20.0, 20.0]},
        change={"A": {1: 0.0949, 3: float(np.float32(-0.095))}, "B": {3: 0.2}},
        fields={"vwap": {"A": [10.0, 0.0, NAN, 10.1, NAN], "B": [None, 20.0, 20.0, 20.0, 20.0]}},
        bench=[1000.0, 1001.0, 1002.0, NAN, 1004.0],
    )
    quote = load_quote(
        QlibStore(tmp_path), (1, 3), ["ZZZ"], deal_price="vwap", limit_threshold=0.095, benchmark="SH000300"
    )
    a, b, zzz = (quote.symbols.index(s) for s in ("A", "B", "ZZZ"))
    assert list(quote.dates) == list(cal[1:4])
    assert quote.price[:, a].tolist() == [10.5, NAN, 10.0] or np.isnan(quote.price[1, a])
    assert quote.price[0, a] == 10.5  # vwap 0 -> close
    assert quote.price[2, a] == pytest.approx(10.1, rel=1e-6)
    assert quote.suspended[:, a].tolist() == [False, True, False]
    assert quote.tradable(0, a, None)  # 0.0949 < 0.095
    assert not quote.tradable(2, a, SELL) and quote.tradable(2, a, BUY)  # float32(-0.095) <= float32(-0.095)
    assert not quote.tradable(2, b, None) and quote.tradable(2, b, SELL)
    assert quote.suspended[:, zzz].all()  # a predicted symbol the market does not list
    assert not quote.adjusted
    assert quote.bench.tolist() == [f32_return(1001, 1000), f32_return(1002, 1001), 0.0]  # NaN close -> 0


def test_quote_without_limit_threshold_blocks_only_suspensions(tmp_path: Path) -> None:
    make_store(tmp_path, {"A": [10.0, 10.0, NAN, 10.0]}, change={"A": {1: 0.5}})
    quote = load_quote(QlibStore(tmp_path), (1, 2), [], deal_price="close", limit_threshold=None, benchmark=None)
    assert quote.tradable(0, 0, None)
    assert not quote.tradable(1, 0, None)
    assert (quote.bench == 0).all()
