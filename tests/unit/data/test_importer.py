from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.core.errors import ConfigError, ImportValidationError
from app.data.importer import import_market
from app.data.store import QlibStore

HEADER = "date,open,high,low,close,volume\n"


def _bars(dates: list[str], start_price: float = 10.0) -> str:
    rows = []
    for i, d in enumerate(dates):
        c = start_price + i
        rows.append(f"{d},{c - 0.5},{c + 1},{c - 1},{c},{1000 + i}\n")
    return HEADER + "".join(rows)


def _snapshot(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "sh600000.csv").write_text(_bars(["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"]))
    frame = pd.read_csv(pd.io.common.StringIO(_bars(["2020-01-03", "2020-01-07"], 50.0)))
    frame["vwap"] = frame["close"] - 0.1
    frame["factor"] = 2.0
    frame.to_parquet(d / "SZ000001.parquet", index=False)
    pd.read_csv(pd.io.common.StringIO(_bars(["2020-01-06", "2020-01-07"], 5.0)), dtype=str).to_csv(
        d / "sh600002.csv.gz", index=False, compression="gzip"
    )
    return d


def test_directory_import_reads_back(src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "store"
    report = import_market(src, dest)
    assert (report.files, report.instruments, report.bars) == (3, 3, 8)
    store = QlibStore(dest)
    assert list(store.calendar().strftime("%Y-%m-%d")) == ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"]
    assert sorted(store.instruments("all")) == ["SH600000", "SH600002", "SZ000001"]
    assert (dest / "features" / "sz000001" / "vwap.day.bin").is_file()
    frame = store.load_frame(["close", "volume", "change", "factor", "vwap"], market="all")
    a = frame.xs("SH600000", level="instrument")
    np.testing.assert_array_equal(a["close"].to_numpy(), np.float32([10, 11, 12, 13]))
    np.testing.assert_allclose(a["change"].to_numpy()[1:], [0.1, 1 / 11, 1 / 12], rtol=1e-6)
    assert np.isnan(a["change"].iloc[0]) and (a["factor"] == 1.0).all() and a["vwap"].isna().all()
    b = frame.xs("SZ000001", level="instrument")
    # 2020-01-06 has no bar for SZ000001: stored as a suspended (NaN) row inside its series
    assert list(b.index.strftime("%Y-%m-%d")) == ["2020-01-03", "2020-01-06", "2020-01-07"]
    assert np.isnan(b.loc["2020-01-06", "close"]) and (b["factor"].dropna() == 2.0).all()
    np.testing.assert_allclose(b.loc["2020-01-07", "change"], 51 / 50 - 1, rtol=1e-6)
    spans = store.instruments("all")
    assert spans["SH600002"] == [(pd.Timestamp("2020-01-06"), pd.Timestamp("2020-01-07"))]


def test_long_table_with_column_mapping(tmp_path: Path) -> None:
    table = pd.DataFrame(
        {
            "ticker": ["aaa", "bbb", "aaa", "bbb"],
            "day": ["2021-03-01", "2021-03-01", "2021-03-02", "2021-03-02"],
            "o": [1.0, 2.0, 1.1, 2.1],
            "h": [1.2, 2.2, 1.3, 2.3],
            "l": [0.9, 1.9, 1.0, 2.0],
            "c": [1.1, 2.1, 1.2, 2.2],
            "v": [10, 20, 30, 40],
        }
    )
    table.to_parquet(tmp_path / "bars.parquet")
    columns = {"symbol": "ticker", "date": "day", "open": "o", "high": "h", "low": "l", "close": "c", "volume": "v"}
    import_market(tmp_path / "bars.parquet", tmp_path / "store", columns, market="mine")
    store = QlibStore(tmp_path / "store")
    assert store.markets() == ["all", "mine"]
    frame = store.load_frame(["close", "volume"], market="mine")
    assert frame.loc[(pd.Timestamp("2021-03-02"), "BBB"), "volume"] == 40


def test_append_newer_dates(src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "store"
    import_market(src, dest)
    before = QlibStore(dest).load_frame(["close", "change"], market="all")
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "SH600000.csv").write_text(_bars(["2020-01-08", "2020-01-09"], 14.0))
    (newer / "SH600003.csv").write_text(_bars(["2020-01-09"], 3.0))
    report = import_market(newer, dest)
    assert report.new_dates == 2 and report.replaced_bars == 0
    store = QlibStore(dest)
    after = store.load_frame(["close", "change"], market="all")
    pd.testing.assert_frame_equal(after.loc[before.index], before)
    a = after.xs("SH600000", level="instrument")["close"]
    np.testing.assert_array_equal(a.to_numpy(), np.float32([10, 11, 12, 13, 14, 15]))
    np.testing.assert_allclose(after.loc[(pd.Timestamp("2020-01-08"), "SH600000"), "change"], 14 / 13 - 1, rtol=1e-6)
    assert store.instruments("all")["SH600000"] == [(pd.Timestamp("2020-01-02"), pd.Timestamp("2020-01-09"))]
    assert "SH600003" in store.instruments("all") and "SZ000001" in store.instruments("all")


def _expect_failure(src: Path, dest: Path, pattern: str, **kwargs: object) -> ImportValidationError:
    before = _snapshot(dest)
    with pytest.raises(ImportValidationError, match=pattern) as info:
        import_market(src, dest, **kwargs)  # type: ignore[arg-type]
    assert _snapshot(dest) == before, "a failed import changed the store"
    assert not [p for p in dest.parent.iterdir() if "staging" in p.name or ".old-" in p.name]
    return info.value


@pytest.fixture
def existing(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "store"
    import_market(src, dest)
    return dest


def test_missing_columns(tmp_path: Path, existing: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "X.csv").write_text("date,open,high,low,close\n2020-01-02,1,1,1,1\n")
    err = _expect_failure(
        bad,
        existing,
        r"(?s)failed: 1 problem\(s\); nothing was written.*X\.csv: missing required column\(s\) volume "
        r"\(found: date, open, high, low, close\); map them with --columns volume=<source column>.*unchanged",
    )
    assert len(err.problems) == 1


def test_non_numeric_value_names_file_line_and_value(tmp_path: Path, existing: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "X.csv").write_text(HEADER + "2020-01-02,1,2,0.5,1.5,100\n2020-01-03,1,2,0.5,abc,100\n")
    _expect_failure(bad, existing, r"X\.csv line 3: close 'abc' is not a number")


def test_bad_date(tmp_path: Path, existing: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "X.csv").write_text(HEADER + "2020-13-45,1,2,0.5,1.5,100\n")
    _expect_failure(bad, existing, r"X\.csv line 2: date '2020-13-45' is not a date \(use YYYY-MM-DD\)")


def test_duplicate_and_unsorted_dates(tmp_path: Path, existing: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "X.csv").write_text(_bars(["2020-01-02", "2020-01-03", "2020-01-03"]))
    (bad / "Y.csv").write_text(_bars(["2020-01-06", "2020-01-03"]))
    err = _expect_failure(bad, existing, r"2 problem\(s\)")
    assert any("X.csv line 4: duplicate date 2020-01-03 for X" in p for p in err.problems)
    assert any("Y.csv line 3: date 2020-01-03 comes after 2020-01-06; sort the rows by date" in p for p in err.problems)


def test_no_source_files_and_missing_source(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportValidationError, match=r"empty: no source files found"):
        import_market(tmp_path / "empty", tmp_path / "store")
    with pytest.raises(ImportValidationError, match=r"does not exist"):
        import_market(tmp_path / "nope", tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_long_table_without_symbol_column(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(_bars(["2020-01-02"]))
    _expect_failure(tmp_path / "t.csv", tmp_path / "store", r"missing the symbol column.*--columns symbol=")


def test_unknown_column_mapping(src: Path, tmp_path: Path) -> None:
    with pytest.raises(ImportValidationError, match=r"--columns names unknown field\(s\): clsoe"):
        import_market(src, tmp_path / "store", {"clsoe": "Close"})


def test_destination_that_is_not_a_store(src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "precious"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    _expect_failure(src, dest, r"exists but is not a market store")


ANOMALOUS = (
    HEADER
    + "2020-01-02,10,11,9,10.5,100\n"
    + "2020-01-03,10,9,11,10,100\n"  # high < low (and open/close outside)
    + "2020-01-06,10,11,9,0,100\n"  # non-positive close, close outside
    + "2020-01-07,12,11,9,10,100\n"  # open above high
    + "2020-01-08,10,11,9,10.2,100\n"
)


@pytest.fixture
def anomalous(tmp_path: Path) -> Path:
    d = tmp_path / "anom"
    d.mkdir()
    (d / "SH600009.csv").write_text(ANOMALOUS)
    return d


def test_anomalies_stop_the_import_by_default(anomalous: Path, existing: Path) -> None:
    err = _expect_failure(
        anomalous, existing, r"(?s)3 value anomalies in 1 instrument file\(s\).*--on-anomaly drop-bar"
    )
    assert len(err.problems) == 3
    assert "SH600009.csv line 3 (2020-01-03, SH600009): high < low" in err.problems[0]
    assert "line 4 (2020-01-06, SH600009): non-positive close; close outside [low, high]" in err.problems[1]
    assert "line 5 (2020-01-07, SH600009): open outside [low, high]" in err.problems[2]


def test_anomalies_warn_keeps_bars(anomalous: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    report = import_market(anomalous, tmp_path / "store", on_anomaly="warn")
    assert len(report.anomalies) == 3 and report.dropped_bars == 0
    assert sum("SH600009.csv line" in r.message for r in caplog.records) == 3
    close = QlibStore(tmp_path / "store").read_series("SH600009", "close")
    assert close.iloc[2] == 0.0


def test_anomalies_drop_bar_stores_missing(anomalous: Path, tmp_path: Path) -> None:
    report = import_market(anomalous, tmp_path / "store", on_anomaly="drop-bar")
    assert report.dropped_bars == 3
    store = QlibStore(tmp_path / "store")
    close = store.read_series("SH600009", "close")
    assert len(close) == 5 and close.isna().tolist() == [False, True, True, True, False]
    # change after the dropped bars is measured against the last kept close
    np.testing.assert_allclose(store.read_series("SH600009", "change").iloc[4], 10.2 / 10.5 - 1, rtol=1e-6)


def test_unknown_anomaly_policy(src: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--on-anomaly 'ignore' is not one of: error, warn, drop-bar"):
        import_market(src, tmp_path / "store", on_anomaly="ignore")
