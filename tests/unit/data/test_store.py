from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.core.errors import DateRangeError, StoreFormatError, UnknownInstrumentError, UnknownMarketError
from app.data.store import QlibStore
from app.data.writer import write_store
from tests.unit.data.qlib_layout import write_calendar, write_field, write_market

NAN = float("nan")
DATES = [f"2020-01-{d:02d}" for d in (2, 3, 6, 7, 8, 9, 10, 13, 14, 15)]


@pytest.fixture
def qlib_store(tmp_path: Path) -> Path:
    """Three instruments: AAA full history, BBB listed late with a suspension, CCC delisted early."""
    root = tmp_path / "store"
    write_calendar(root, DATES)
    write_market(
        root,
        "all",
        [("SH600000", DATES[0], DATES[9]), ("SH600001", DATES[3], DATES[9]), ("SZ000002", DATES[0], DATES[5])],
    )
    # csi: SH600000 is a member twice (a gap between), SH600001 only at the end
    write_market(
        root,
        "csi",
        [("SH600000", DATES[0], DATES[2]), ("SH600000", DATES[6], DATES[9]), ("SH600001", DATES[8], DATES[9])],
    )
    write_field(root, "SH600000", "close", 0, [float(i + 1) for i in range(10)])
    write_field(root, "SH600000", "volume", 0, [100.0] * 10)
    write_field(root, "SH600001", "close", 3, [10.0, NAN, NAN, 13.0, 14.0, 15.0, 16.0])
    write_field(root, "SH600001", "volume", 3, [5.0, NAN, NAN, 5.0, 5.0, 5.0, 5.0])
    write_field(root, "SZ000002", "close", 0, [7.0, 7.5, 8.0, 8.5, 9.0, 9.5])
    write_field(root, "SZ000002", "volume", 0, [1.0] * 6)
    return root


def test_calendar_and_markets(qlib_store: Path) -> None:
    store = QlibStore(qlib_store)
    assert list(store.calendar().strftime("%Y-%m-%d")) == DATES
    assert store.markets() == ["all", "csi"]
    csi = store.instruments("csi")
    assert csi["SH600000"] == [
        (pd.Timestamp(DATES[0]), pd.Timestamp(DATES[2])),
        (pd.Timestamp(DATES[6]), pd.Timestamp(DATES[9])),
    ]
    assert store.fields("SH600000") == ["close", "volume"]


def test_panel_alignment_spans_and_suspensions(qlib_store: Path) -> None:
    panel = QlibStore(qlib_store).load(["close", "volume"], market="all")
    assert panel.instruments == ("SH600000", "SH600001", "SZ000002")
    close = panel.values["close"]
    assert close.dtype == np.float32 and close.shape == (10, 3)
    np.testing.assert_array_equal(close[:, 0], np.arange(1, 11, dtype=np.float32))
    # late listing: rows before index 3 are not stored; suspension rows 4-5 are NaN inside the series
    assert np.isnan(close[:3, 1]).all()
    assert close[3, 1] == 10.0 and np.isnan(close[4:6, 1]).all() and close[6, 1] == 13.0
    assert list(panel.first) == [0, 3, 0] and list(panel.last) == [9, 9, 5]
    stored = panel.stored()
    assert stored[4, 1] and not stored[2, 1] and not stored[6, 2]


def test_frame_honours_membership_per_date(qlib_store: Path) -> None:
    frame = QlibStore(qlib_store).load_frame(["close"], market="csi")
    assert frame.index.names == ["datetime", "instrument"]
    assert frame.index.is_monotonic_increasing
    by_symbol = frame.reset_index().groupby("instrument")["datetime"].apply(lambda s: list(s.dt.strftime("%Y-%m-%d")))
    assert by_symbol["SH600000"] == DATES[0:3] + DATES[6:10]
    assert by_symbol["SH600001"] == DATES[8:10]
    assert "SZ000002" not in by_symbol


def test_frame_keeps_suspended_rows_as_nan(qlib_store: Path) -> None:
    frame = QlibStore(qlib_store).load_frame(["close", "volume"], market="all", start=DATES[2], end=DATES[7])
    row = frame.loc[(pd.Timestamp(DATES[4]), "SH600001")]
    assert math.isnan(row["close"]) and math.isnan(row["volume"])
    # the delisted instrument has no rows after its last stored day, the late one none before its first
    assert (pd.Timestamp(DATES[6]), "SZ000002") not in frame.index
    assert (pd.Timestamp(DATES[2]), "SH600001") not in frame.index
    assert frame.index.get_level_values(0).min() == pd.Timestamp(DATES[2])


def test_window_keeps_first_last_relative_to_window(qlib_store: Path) -> None:
    panel = QlibStore(qlib_store).load(["close"], instruments=["sh600001", "SZ000002"], start=DATES[4], end=DATES[8])
    assert panel.instruments == ("SH600001", "SZ000002")
    assert list(panel.first) == [-1, -4] and list(panel.last) == [5, 1]
    assert panel.member.all()


def test_absent_field_loads_as_nan(qlib_store: Path) -> None:
    panel = QlibStore(qlib_store).load(["close", "vwap"], market="all")
    assert np.isnan(panel.values["vwap"]).all()
    assert QlibStore(qlib_store).read_series("SH600000", "vwap").empty


def test_writer_round_trip(tmp_path: Path) -> None:
    cal = pd.bdate_range("2021-01-01", periods=30)
    rng = np.random.default_rng(1)
    bars = {
        "AAA": pd.DataFrame({"close": rng.random(30), "volume": rng.random(30)}, index=cal),
        "BBB": pd.DataFrame({"close": rng.random(12), "volume": rng.random(12)}, index=cal[5:17]).drop(cal[8]),
    }
    markets = {"all": {s: [(b.index[0], b.index[-1])] for s, b in bars.items()}}
    write_store(tmp_path / "s", bars, markets, cal)
    store = QlibStore(tmp_path / "s")
    for symbol, frame in bars.items():
        for field in ("close", "volume"):
            got = store.read_series(symbol, field)
            want = frame[field].reindex(cal[cal.get_loc(frame.index[0]) : cal.get_loc(frame.index[-1]) + 1])
            np.testing.assert_array_equal(got.to_numpy(), want.to_numpy(dtype=np.float32))
            assert got.index.equals(want.index)


def test_unknown_market_names_known_ones(qlib_store: Path) -> None:
    with pytest.raises(UnknownMarketError, match=r"unknown market 'csi500'.*Known markets: all, csi"):
        QlibStore(qlib_store).load(["close"], market="csi500")


def test_unknown_instrument(qlib_store: Path) -> None:
    with pytest.raises(UnknownInstrumentError, match=r"unknown instrument\(s\) SH999999 in store .*qtrain data info"):
        QlibStore(qlib_store).load(["close"], instruments=["SH600000", "SH999999"])


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (
            "2019-12-01",
            None,
            r"start 2019-12-01 is outside the calendar: the calendar of .* runs 2020-01-02 \.\. 2020-01-15",
        ),
        (None, "2020-02-01", r"end 2020-02-01 is outside the calendar"),
        ("2020-01-10", "2020-01-03", r"start 2020-01-10 is after end 2020-01-03; swap them"),
        ("2020-01-04", "2020-01-05", r"no trading day between 2020-01-04 and 2020-01-05"),
        ("yesterday-ish", None, r"start 'yesterday-ish' is not a date"),
    ],
)
def test_date_range_errors(qlib_store: Path, start: str | None, end: str | None, message: str) -> None:
    with pytest.raises(DateRangeError, match=message):
        QlibStore(qlib_store).load(["close"], market="all", start=start, end=end)


def test_truncated_bin(qlib_store: Path) -> None:
    path = qlib_store / "features" / "sh600000" / "close.day.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(StoreFormatError, match=r"close\.day\.bin: truncated \.bin file \(42 bytes.*Re-import"):
        QlibStore(qlib_store).load(["close"], market="all")


def test_empty_bin(qlib_store: Path) -> None:
    (qlib_store / "features" / "sh600000" / "close.day.bin").write_bytes(b"")
    with pytest.raises(StoreFormatError, match=r"empty \.bin file"):
        QlibStore(qlib_store).load(["close"], market="all")


@pytest.mark.parametrize("start", [-1.0, 2.5, NAN])
def test_corrupt_start_index(qlib_store: Path, start: float) -> None:
    write_field(qlib_store, "SH600000", "close", start, [1.0, 2.0])
    with pytest.raises(StoreFormatError, match=r"corrupt \.bin file: start index .* is not a calendar position"):
        QlibStore(qlib_store).load(["close"], market="all")


def test_bin_longer_than_calendar(qlib_store: Path) -> None:
    write_field(qlib_store, "SH600000", "close", 5, [1.0] * 6)
    with pytest.raises(StoreFormatError, match=r"6 values from calendar index 5 run past the calendar's 10 days"):
        QlibStore(qlib_store).load(["close"], market="all")


def test_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreFormatError, match=r"day\.txt not found: .* is not a market store.*qtrain data synth"):
        QlibStore(tmp_path).calendar()


def test_unsorted_calendar(tmp_path: Path) -> None:
    write_calendar(tmp_path, ["2020-01-02", "2020-01-06", "2020-01-03"])
    with pytest.raises(StoreFormatError, match=r"line 3: calendar dates must be strictly increasing"):
        QlibStore(tmp_path).calendar()


def test_bad_instruments_line(qlib_store: Path) -> None:
    (qlib_store / "instruments" / "bad.txt").write_text("SH600000\t2020-01-02\n")
    with pytest.raises(StoreFormatError, match=r"bad\.txt line 1: expected 'SYMBOL<TAB>START<TAB>END'"):
        QlibStore(qlib_store).instruments("bad")
