"""Per-date kernels against the pandas groupby reductions Qlib uses, on NaN, ±inf, ties and unsorted dates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.dataset import crosssection as cs


def sample(seed: int, shuffle: bool) -> tuple[pd.DataFrame, pd.Index]:
    rng = np.random.default_rng(seed)
    dates = np.repeat(pd.bdate_range("2020-01-01", periods=12).to_numpy(), rng.integers(1, 9, size=12))
    x = np.round(rng.normal(size=(len(dates), 5)), 1)  # rounding makes ties
    x[rng.random(x.shape) < 0.15] = np.nan
    x[rng.random(x.shape) < 0.05] = np.inf
    x[rng.random(x.shape) < 0.05] = -np.inf
    x[:, 4] = 1.0  # constant column
    df = pd.DataFrame(x, index=pd.Index(dates, name="datetime"))
    if shuffle:
        df = df.iloc[rng.permutation(len(df))]
    return df, df.index


def same(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize(("seed", "shuffle"), [(0, False), (1, False), (2, True), (3, True)])
def test_kernels_match_pandas(seed: int, shuffle: bool) -> None:
    df, dates = sample(seed, shuffle)
    x = df.to_numpy()
    g = df.groupby(level="datetime")
    same(cs.per_date(dates, x, cs.rank_pct), g.rank(pct=True).to_numpy())
    finite = df.replace([np.inf, -np.inf], np.nan)
    fg = finite.groupby(level="datetime")
    same(
        cs.per_date(dates, finite.to_numpy(), cs.zscore),
        ((finite - fg.transform("mean")) / fg.transform("std")).to_numpy(),
    )
    same(cs.per_date(dates, x, cs.nanmedian), g.transform("median").to_numpy())
    dev = finite - fg.transform("median")
    mad = dev.abs().groupby(level="datetime").transform("median")
    with np.errstate(all="ignore"):
        robust = np.clip((dev / mad / 1.4826).to_numpy(), -3, 3)
    same(cs.per_date(dates, finite.to_numpy(), lambda b: cs.robust_zscore(b, 1.4826, 3.0)), robust)
    filled = cs.per_date(dates, x, cs.fill_inf_with_finite_mean)
    means = finite.groupby(level="datetime").transform("mean").to_numpy()
    same(filled, np.where(np.isinf(x), means, x))
