"""Daily IC and Rank IC against Qlib's ``calc_ic`` as written (pandas' ``Series.corr``), bit for bit."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from app.evaluation.signal import daily_ic, signal_metrics


def qlib_calc_ic(pred: pd.Series, label: pd.Series) -> tuple[pd.Series, pd.Series]:
    """qlib.contrib.eva.alpha.calc_ic (0.9.7)."""
    df = pd.DataFrame({"pred": pred, "label": label})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's ConstantInputWarning
        ic = df.groupby("datetime", group_keys=False).apply(lambda df: df["pred"].corr(df["label"]))
        ric = df.groupby("datetime", group_keys=False).apply(lambda df: df["pred"].corr(df["label"], method="spearman"))
    return ic, ric


def signal(seed: int, instruments: int) -> tuple[pd.Series, pd.Series]:
    """Scores and a float32 label with ties, NaNs, a constant day, a near-constant day and a one-row day."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2021-01-04", periods=30)
    index = pd.MultiIndex.from_product(
        [dates, [f"S{i:04d}" for i in range(instruments)]], names=["datetime", "instrument"]
    )
    label = rng.standard_normal(len(index)).astype(np.float32)
    score = 0.05 * label + rng.standard_normal(len(index))
    ties = rng.random(len(index)) < 0.2
    score[ties] = np.round(score[ties], 1)
    score[rng.random(len(index)) < 0.05] = np.nan
    label[rng.random(len(index)) < 0.05] = np.nan
    day = index.get_level_values("datetime")
    score[day == dates[3]] = 0.7  # constant scores: NaN, or ~0 when their mean is not exactly 0.7
    score[day == dates[4]] = 0.1
    label[(day == dates[5]) & (index.get_level_values("instrument") != "S0000")] = np.nan  # one pair
    label[day == dates[6]] = np.round(label[day == dates[6]], 0)  # heavy label ties
    return pd.Series(score, index=index, name="score"), pd.Series(label, index=index, name="LABEL0")


@pytest.mark.parametrize(("seed", "instruments"), [(0, 40), (1, 300), (2, 3), (3, 2500)])
def test_daily_ic_and_rank_ic_are_qlibs(seed: int, instruments: int) -> None:
    pred, label = signal(seed, instruments)
    ic, ric = qlib_calc_ic(pred, label)
    ours = daily_ic(pred, label)
    assert ours.index.equals(ic.index)
    for mine, theirs in ((ours["ic"], ic), (ours["rank_ic"], ric)):
        a, b = mine.to_numpy(), theirs.to_numpy(dtype=np.float64)
        assert np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(a[~np.isnan(a)], b[~np.isnan(b)])
    metrics = signal_metrics(pred, label, ic=ours)
    assert metrics["IC"] == ic.mean() and metrics["ICIR"] == ic.mean() / ic.std()
    assert metrics["Rank IC"] == ric.mean() and metrics["Rank ICIR"] == ric.mean() / ric.std()
