"""Alpha158 and its label, computed by qtrain and by Qlib 0.9.7 on the same synthetic store, must agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.data.store import QlibStore
from app.data.synth import SynthSpec, write_synth_market
from app.features.frame import build_feature_frame
from app.features.handlers import alpha158, alpha360
from tests.conftest import run_reference

pytestmark = [pytest.mark.qlib, pytest.mark.slow]


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # suspensions, late listings, delistings, limit days, and a multi-span market ("large")
    root = tmp_path_factory.mktemp("qlib_market") / "store"
    write_synth_market(root, SynthSpec(instruments=40, days=420, seed=11, suspensions_per_year=3.0))
    return root


def _compare(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    assert list(ours.columns) == list(theirs.columns)
    assert ours.index.equals(theirs.index), "row sets differ"
    failures = []
    for name in ours.columns:
        a = ours[name].to_numpy(dtype=np.float64)
        b = theirs[name].to_numpy(dtype=np.float64)
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        if not np.array_equal(nan_a, nan_b):
            failures.append(f"{name}: NaN pattern differs on {int((nan_a != nan_b).sum())} rows")
            continue
        ok = np.isclose(a[~nan_a], b[~nan_b], rtol=1e-5, atol=0) | (a[~nan_a] == b[~nan_b])
        if not ok.all():
            worst = np.max(np.abs(a[~nan_a] - b[~nan_b]) / np.maximum(np.abs(b[~nan_b]), 1e-30))
            failures.append(f"{name}: {int((~ok).sum())} values differ (worst relative {worst:.2e})")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("market_name", ["all", "large"])
def test_alpha158_matches_qlib(qlib_python: Path, market: Path, market_name: str, tmp_path: Path) -> None:
    cal = QlibStore(market).calendar()
    start, end = str(cal[0].date()), str(cal[-1].date())
    run_reference(qlib_python, "alpha158.py", market, market_name, start, end, tmp_path / "qlib.parquet")
    theirs = pd.read_parquet(tmp_path / "qlib.parquet")
    frame = build_feature_frame(QlibStore(market), alpha158(), market_name, start, end)
    ours = frame.droplevel(0, axis=1)
    assert len(ours.columns) == 159
    _compare(ours, theirs)


def test_alpha360_and_custom_expressions_match_qlib(qlib_python: Path, market: Path, tmp_path: Path) -> None:
    cal = QlibStore(market).calendar()
    start, end = str(cal[60].date()), str(cal[-1].date())
    features = alpha360().features[::7]  # a spread of Alpha360's columns
    extra = ("Mean($close>Ref($close, 1), 3)", "Quantile($volume, 7, 0.5)", "Rank($low, 4)", "Corr($open, $close, 6)")
    exprs = [e for _, e in features] + list(extra)
    run_reference(qlib_python, "expressions.py", market, "all", start, end, tmp_path / "q.parquet", *exprs)
    theirs = pd.read_parquet(tmp_path / "q.parquet")
    from app.features.handlers import expressions

    fs = expressions(features={e: e for e in exprs}, label={})
    ours = build_feature_frame(QlibStore(market), fs, "all", start, end).droplevel(0, axis=1)
    _compare(ours, theirs[exprs].astype(np.float32))
