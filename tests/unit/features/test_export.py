"""Parquet export: float32 where exact (round-trips bit for bit), float64 kept where not, pandas index restored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from app.features.export import float32_exact, write_parquet


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    dates = pd.DatetimeIndex(["2020-01-02", "2020-01-03", "2020-01-06"])
    index = pd.MultiIndex.from_product([dates, ["SH600000", "SZ000001"]], names=["datetime", "instrument"])
    values = rng.standard_normal((6, 3)).astype(np.float32)
    values[1, 0] = np.nan
    values[2, 1] = np.inf
    values[3, 2] = -0.0
    return pd.DataFrame(values, index=index, columns=["KMID", "ROC5", "LABEL0"])


def test_float32_frame_round_trips_exactly(tmp_path: Path) -> None:
    frame = _frame()
    report = write_parquet(frame, tmp_path / "f.parquet")
    back = pd.read_parquet(tmp_path / "f.parquet")
    assert report.rows == 6 and report.columns == 3 and report.float64_columns == ()
    assert back.index.names == ["datetime", "instrument"]
    assert list(back.index) == list(frame.index)
    assert list(back.columns) == list(frame.columns)
    for col in frame.columns:
        assert back[col].dtype == np.float32
        assert frame[col].to_numpy().tobytes() == back[col].to_numpy().tobytes()  # bits, NaN and -0.0 included
    meta = pq.ParquetFile(tmp_path / "f.parquet").metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_float64_narrowed_only_when_exact(tmp_path: Path) -> None:
    frame = _frame().astype(np.float64)
    frame["INEXACT"] = 0.1
    report = write_parquet(frame, tmp_path / "f.parquet")
    back = pd.read_parquet(tmp_path / "f.parquet")
    assert report.float64_columns == ("INEXACT",)
    assert back["INEXACT"].dtype == np.float64 and (back["INEXACT"] == 0.1).all()
    assert all(back[c].dtype == np.float32 for c in ("KMID", "ROC5", "LABEL0"))
    np.testing.assert_array_equal(back["KMID"].to_numpy(np.float64), frame["KMID"].to_numpy())


def test_float32_exact() -> None:
    exact = np.array([1.5, np.nan, -np.inf, float(np.float32(3.0e38))])
    assert float32_exact(exact) is not None and float32_exact(exact).dtype == np.float32  # type: ignore[union-attr]
    assert float32_exact(np.array([1.5, 0.1])) is None
    assert float32_exact(np.array([1e300])) is None  # overflows to inf


def test_replaces_an_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "f.parquet"
    write_parquet(_frame(), out)
    write_parquet(_frame().iloc[:2], out)
    assert len(pd.read_parquet(out)) == 2
    assert [p.name for p in out.parent.iterdir()] == ["f.parquet"]
