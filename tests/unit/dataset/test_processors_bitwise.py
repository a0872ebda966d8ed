"""Processors against Qlib's own pandas expressions (spelled as Qlib 0.9.7 spells them), bit for bit, on the
float32 frames a handler produces: same values, same dtype."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.dataset.processors import CSZScoreNorm, ProcessInf, RobustZScoreNorm, ZScoreNorm


def frame(seed: int, instruments: int, nan_share: float) -> pd.DataFrame:
    """float32 features and label near a common level (where float32 and float64 arithmetic part most), NaNs,
    one-instrument dates and a constant column."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-01", periods=12)
    index = pd.MultiIndex.from_product(
        [dates, [f"S{i:04d}" for i in range(instruments)]], names=["datetime", "instrument"]
    )
    x = (0.5 + 0.01 * rng.standard_normal((len(index), 4))).astype(np.float32)
    x[rng.random(x.shape) < nan_share] = np.nan
    x[:, 2] = np.float32(0.25)
    columns = pd.MultiIndex.from_tuples([("feature", "A"), ("feature", "B"), ("feature", "C"), ("label", "LABEL0")])
    df = pd.DataFrame(x, index=index, columns=columns)
    last = index.get_level_values("datetime") == dates[-1]
    return df[~last | (index.get_level_values("instrument") == "S0000")]  # the last date has one instrument


def qlib_cs_zscore(df: pd.DataFrame, group: str) -> pd.DataFrame:
    """qlib.data.dataset.processor.CSZScoreNorm(fields_group=group) with qlib.utils.data.zscore."""
    df = df.copy()
    cols = df.columns[df.columns.get_level_values(0) == group]
    df[cols] = df[cols].groupby("datetime", group_keys=False).apply(lambda x: (x - x.mean()).div(x.std()))
    return df


@pytest.mark.parametrize(("instruments", "nan_share"), [(300, 0.1), (37, 0.0), (2000, 0.3), (5, 0.5)])
@pytest.mark.parametrize("group", ["label", "feature"])
def test_cs_zscore_is_qlibs_float32_arithmetic(instruments: int, nan_share: float, group: str) -> None:
    df = frame(instruments, instruments, nan_share)
    ours = CSZScoreNorm(fields_group=group)(df)
    theirs = qlib_cs_zscore(df, group)
    assert list(ours.dtypes) == list(theirs.dtypes) == [np.float32] * 4
    a, b = ours.to_numpy(), theirs.to_numpy()
    assert np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(a[~np.isnan(a)], b[~np.isnan(b)])
    # the data tell the two apart: computing in float64 and rounding once (what this replaced) is many ulps off
    group_cols = df.columns.get_level_values(0) == group
    by_float64 = df.astype(np.float64).groupby("datetime").transform(lambda x: (x - x.mean()) / x.std())
    rounded = by_float64.to_numpy().astype(np.float32)[:, group_cols]
    present = ~np.isnan(rounded)
    assert not np.array_equal(rounded[present], a[:, group_cols][present])


def test_cs_zscore_float64_frames_stay_float64_and_exact() -> None:
    df = frame(3, 200, 0.1).astype(np.float64)
    ours, theirs = CSZScoreNorm(fields_group="label")(df), qlib_cs_zscore(df, "label")
    assert list(ours.dtypes) == [np.float64] * 4
    np.testing.assert_array_equal(ours.to_numpy(), theirs.to_numpy())


def qlib_cs_robust_zscore(df: pd.DataFrame, group: str) -> pd.DataFrame:
    """CSZScoreNorm(fields_group=group, method="robust") with qlib.utils.data.robust_zscore."""

    def robust_zscore(x: pd.DataFrame) -> pd.DataFrame:
        x = x - x.median()
        mad = x.abs().median()
        return np.clip(x / mad / 1.4826, -3, 3)

    df = df.copy()
    cols = df.columns[df.columns.get_level_values(0) == group]
    df[cols] = df[cols].groupby("datetime", group_keys=False).apply(robust_zscore)
    return df


def qlib_windowed(df: pd.DataFrame, kind: str, clip_outlier: bool = True) -> pd.DataFrame:
    """qlib's ZScoreNorm / RobustZScoreNorm (fields_group="feature"), fitted on the first six dates."""
    df = df.copy()
    fit = df.loc[: df.index.get_level_values("datetime").unique()[5]]
    cols = df.columns[df.columns.get_level_values(0) == "feature"]
    x = fit[cols].values
    if kind == "zscore":
        mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
        mean[std == 0], std[std == 0] = 0, 1
        df.loc(axis=1)[cols] = (df[cols].values - mean) / std
        return df
    median = np.nanmedian(x, axis=0)
    scale = np.nanmedian(np.abs(x - median), axis=0)
    scale += 1e-12
    scale *= 1.4826
    out = df[cols]
    out -= median
    out /= scale
    df[cols] = np.clip(out, -3, 3) if clip_outlier else out
    return df


def qlib_process_inf(df: pd.DataFrame) -> pd.DataFrame:
    def process_inf(day: pd.DataFrame) -> pd.DataFrame:
        for col in day.columns:
            day[col] = day[col].replace([np.inf, -np.inf], day[col][~np.isinf(day[col])].mean())
        return day

    return df.groupby(level="datetime", group_keys=False).apply(process_inf).sort_index()


def same_bits(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    assert list(ours.dtypes) == list(theirs.dtypes)
    a, b = ours.to_numpy(), theirs.to_numpy()
    assert np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(a[~np.isnan(a)], b[~np.isnan(b)])


@pytest.mark.parametrize(("instruments", "nan_share"), [(300, 0.1), (8, 0.0), (1200, 0.3)])
def test_cs_robust_zscore_is_qlibs_float32_arithmetic(instruments: int, nan_share: float) -> None:
    df = frame(instruments + 1, instruments, nan_share)
    same_bits(CSZScoreNorm(fields_group="feature", method="robust")(df), qlib_cs_robust_zscore(df, "feature"))


@pytest.mark.parametrize("kind", ["zscore", "robust", "robust_unclipped"])
def test_windowed_norms_are_qlibs_float32_arithmetic(kind: str) -> None:
    df = frame(9, 400, 0.1)
    df.iloc[::7, 1] *= 40  # outliers to clip
    window = {"fit_start_time": "2020-01-01", "fit_end_time": str(df.index.levels[0][5].date())}
    if kind == "zscore":
        proc: ZScoreNorm | RobustZScoreNorm = ZScoreNorm(fields_group="feature", **window)
    else:
        proc = RobustZScoreNorm(fields_group="feature", clip_outlier=kind == "robust", **window)
    proc.fit(df)
    same_bits(proc(df), qlib_windowed(df, kind.removesuffix("_unclipped"), clip_outlier=kind == "robust"))


def test_process_inf_is_qlibs_float32_mean() -> None:
    df = frame(4, 300, 0.1)
    rng = np.random.default_rng(4)
    values = df.to_numpy().copy()
    values[rng.random(values.shape) < 0.05] = np.inf
    values[rng.random(values.shape) < 0.05] = -np.inf
    values[df.index.get_level_values("datetime") == df.index.levels[0][3], 1] = np.inf  # a date with no finite value
    df = pd.DataFrame(values, index=df.index, columns=df.columns)
    same_bits(ProcessInf()(df), qlib_process_inf(df.copy()))
