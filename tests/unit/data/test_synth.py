"""Synthetic market: determinism, bar consistency, listings/suspensions/limits, markets, planted signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.core.errors import ConfigError
from app.data.store import QlibStore
from app.data.synth import SynthSpec, synth_market, trading_calendar, write_synth_market

FIELDS = ["open", "high", "low", "close", "volume", "vwap", "factor", "change"]
INDEX = "SH000300"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> QlibStore:
    dest = tmp_path_factory.mktemp("synth") / "store"
    write_synth_market(dest, SynthSpec(instruments=40, days=400, seed=7))
    return QlibStore(dest)


@pytest.fixture(scope="module")
def frame(store: QlibStore) -> pd.DataFrame:
    return store.load_frame(FIELDS, market="all")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    spec = SynthSpec(instruments=20, days=300, seed=3)
    write_synth_market(tmp_path / "a", spec)
    write_synth_market(tmp_path / "b", spec)
    write_synth_market(tmp_path / "c", SynthSpec(instruments=20, days=300, seed=4))
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert len(a) > 20 * len(FIELDS)
    assert a["features/sh600000/close.day.bin"] != c["features/sh600000/close.day.bin"]
    assert a["calendars/day.txt"] == c["calendars/day.txt"]  # the calendar depends on start/days only


def test_rewriting_replaces_the_store(tmp_path: Path) -> None:
    dest = tmp_path / "s"
    write_synth_market(dest, SynthSpec(instruments=6, days=100, seed=0))
    write_synth_market(dest, SynthSpec(instruments=4, days=60, seed=0))
    store = QlibStore(dest)
    assert len(store.calendar()) == 60
    assert set(store.instruments("synth")) == {"SH600000", "SZ000001", "SH600001", "SZ000002"}
    assert not list(tmp_path.glob(".s.*"))  # no staging/retired leftovers


def test_calendar_is_business_days_without_holidays() -> None:
    cal = trading_calendar("2015-01-05", 1000)
    assert len(cal) == 1000 and cal[0] == pd.Timestamp("2015-01-05")
    assert cal.is_monotonic_increasing and not cal.has_duplicates
    assert (cal.day_of_week < 5).all()
    assert not ((cal.month == 1) & (cal.day == 1)).any()
    assert not ((cal.month == 10) & (cal.day <= 3)).any()
    per_year = pd.Series(cal.year).value_counts()
    full = per_year.loc[2016]  # a complete year
    assert 240 <= full <= 255


def test_every_stored_bar_is_consistent(frame: pd.DataFrame) -> None:
    bars = frame.dropna(subset=["close"])
    assert len(bars) > 10_000
    assert bars[["open", "high", "low", "close", "volume", "vwap", "factor"]].notna().all().all()
    o, h, lo, c, v, w = (bars[k].to_numpy() for k in ("open", "high", "low", "close", "volume", "vwap"))
    assert (lo > 0).all() and (v > 0).all() and (bars["factor"] > 0).all()
    assert (lo <= np.minimum(o, c)).all()
    assert (h >= np.maximum(o, c)).all()
    assert ((w >= lo) & (w <= h)).all()
    # suspended rows (inside a series) carry no values at all
    assert frame[frame["close"].isna()][FIELDS].isna().all().all()


def test_change_is_close_over_previous_stored_close(store: QlibStore) -> None:
    for symbol in ["SH600000", "SZ000001", "SH600007", INDEX]:
        close = store.read_series(symbol, "close").astype(np.float64)
        change = store.read_series(symbol, "change").astype(np.float64)
        expected = close / close.ffill().shift(1) - 1.0
        assert np.isnan(change.iloc[0])
        np.testing.assert_allclose(change.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-6)


def test_listings_delistings_and_suspensions(store: QlibStore) -> None:
    cal = store.calendar()
    spans = store.instruments("synth")
    starts = [s[0][0] for s in spans.values()]
    ends = [s[-1][1] for s in spans.values()]
    assert sum(s > cal[0] for s in starts) >= 2  # late listings
    assert sum(e < cal[-1] for e in ends) >= 2  # early delistings
    gaps = 0
    for symbol, ((start, end),) in spans.items():
        close = store.read_series(symbol, "close")
        assert close.index[0] == start and close.index[-1] == end
        assert np.isfinite(close.iloc[0]) and np.isfinite(close.iloc[-1])
        gaps += int(close.isna().sum())
    assert gaps > 0  # NaN suspension rows inside series


def test_limit_days_exist_and_moves_stay_within_the_limit(frame: pd.DataFrame) -> None:
    stocks = frame.drop(index=INDEX, level="instrument")
    change = stocks["change"].dropna().abs()
    assert (change >= 0.095).sum() >= 3
    assert change.max() <= 0.1 + 1e-5
    prev = stocks.groupby(level="instrument")["close"].transform(lambda s: s.ffill().shift(1))
    assert ((stocks["high"] / prev).dropna() <= 1.1 + 1e-5).all()
    assert ((stocks["low"] / prev).dropna() >= 0.9 - 1e-5).all()


def test_markets(store: QlibStore) -> None:
    cal = store.calendar()
    assert store.markets() == ["all", "large", "synth"]
    everything, synth, large = store.instruments("all"), store.instruments("synth"), store.instruments("large")
    assert INDEX in everything and INDEX not in synth
    assert everything[INDEX] == [(cal[0], cal[-1])]
    assert set(everything) - {INDEX} == set(synth)
    assert sum(len(s) >= 2 for s in large.values()) >= 2
    for symbol, spans in large.items():
        (lo, hi) = synth[symbol][0]
        assert all(lo <= a <= b <= hi for a, b in spans)
    panel = store.load(["close"], market="large")
    members = panel.member.sum(axis=1)
    listed = store.load(["close"], market="synth").stored().sum(axis=1)
    rebalances = np.arange(0, len(cal), 63)
    np.testing.assert_array_equal(members[rebalances], np.ceil(listed[rebalances] / 2))


def test_index_is_the_equal_weight_mean_of_stock_changes(frame: pd.DataFrame) -> None:
    stocks = frame.drop(index=INDEX, level="instrument")["change"].astype(np.float64)
    mean = stocks.groupby(level="datetime").mean().fillna(0.0)
    index = frame.xs(INDEX, level="instrument")
    assert index["close"].notna().all() and (index["volume"] > 0).all()
    np.testing.assert_allclose(index["change"].to_numpy()[1:], mean.to_numpy()[1:], atol=2e-6)
    volume = frame.drop(index=INDEX, level="instrument")["volume"].groupby(level="datetime").sum()
    np.testing.assert_allclose(index["volume"].to_numpy(), volume.to_numpy(), rtol=1e-5)


def test_planted_signal_shows_in_the_rank_ic_of_short_term_reversal(tmp_path: Path) -> None:
    write_synth_market(tmp_path / "s", SynthSpec(instruments=60, days=800, seed=11))
    close = QlibStore(tmp_path / "s").load_frame(["close"], market="synth")["close"].unstack().astype(np.float64)
    predictor = -(close / close.shift(3) - 1.0)  # minus the 3-day return
    label = close.shift(-2) / close.shift(-1) - 1.0  # Ref(close,-2)/Ref(close,-1)-1
    ok = predictor.notna() & label.notna()
    p, y = predictor.where(ok).rank(axis=1), label.where(ok).rank(axis=1)
    pc, yc = p.sub(p.mean(axis=1), axis=0), y.sub(y.mean(axis=1), axis=0)
    ic = (pc * yc).sum(axis=1) / np.sqrt((pc**2).sum(axis=1) * (yc**2).sum(axis=1))
    ic = ic[ok.sum(axis=1) >= 20]
    assert len(ic) > 700
    assert ic.mean() > 0.02


def test_synth_market_in_memory_matches_fields_and_spec_is_validated() -> None:
    cal, bars, markets = synth_market(SynthSpec(instruments=5, days=60, seed=1))
    assert len(cal) == 60 and set(markets) == {"all", "synth", "large"}
    assert len(bars) == 6
    for frame in bars.values():
        assert list(frame.columns) == FIELDS
        assert frame.index.isin(cal).all()
        np.testing.assert_array_equal(frame.to_numpy(), frame.to_numpy().astype(np.float32))
    with pytest.raises(ConfigError):
        SynthSpec(instruments=1)
    with pytest.raises(ConfigError):
        SynthSpec(days=10)
