"""Processor maths on hand-computed frames (Qlib 0.9.7 semantics, reference §4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.core.errors import ConfigError, DateRangeError, NotFittedError
from app.dataset.processors import (
    CSRankNorm,
    CSZFillna,
    CSZScoreNorm,
    DropCol,
    DropnaLabel,
    DropnaProcessor,
    Fillna,
    FilterCol,
    ProcessInf,
    RobustZScoreNorm,
    ZScoreNorm,
)
from tests.unit.dataset.frames import INF, NAN, grid

D2 = ["2020-01-02", "2020-01-03"]
ABCD = ["A", "B", "C", "D"]


def col(df: pd.DataFrame, group: str, name: str) -> np.ndarray:
    return df[(group, name)].to_numpy(dtype=np.float64)


def test_cs_rank_norm_ties_nan_and_scale() -> None:
    df = grid(D2, ABCD, {("feature", "F"): [1, 2, 2, 4, 1, NAN, 3, 3], ("label", "L"): [9, 8, 7, 6, 5, 4, 3, 2]})
    out = CSRankNorm(fields_group="feature")(df)
    # day 1: average ranks 1, 2.5, 2.5, 4 of 4; day 2: NaN kept and not counted, ranks 1, 2.5, 2.5 of 3
    pct = np.array([1 / 4, 2.5 / 4, 2.5 / 4, 4 / 4, 1 / 3, NAN, 2.5 / 3, 2.5 / 3])
    np.testing.assert_allclose(col(out, "feature", "F"), (pct - 0.5) * 3.46, rtol=1e-6)
    np.testing.assert_array_equal(col(out, "label", "L"), col(df, "label", "L"))
    assert out.dtypes.tolist() == [np.float32, np.float32]
    np.testing.assert_allclose(col(out, "feature", "F")[:4], [-0.865, 0.4325, 0.4325, 1.73], rtol=1e-6)


def test_cs_zscore_uses_ddof_1_and_skips_nan() -> None:
    df = grid(D2, ABCD, {("feature", "F"): [1, 2, 3, NAN, 5, NAN, NAN, NAN], ("label", "L"): [1, 2, 3, 4] * 2})
    out = CSZScoreNorm(fields_group="feature")(df)
    # day 1: mean 2, sample std 1; day 2: one value -> std undefined -> NaN
    np.testing.assert_allclose(col(out, "feature", "F"), [-1, 0, 1, NAN, NAN, NAN, NAN, NAN])
    label = CSZScoreNorm(fields_group="label")(df)
    s = np.std([1, 2, 3, 4], ddof=1)
    np.testing.assert_allclose(col(label, "label", "L"), (np.array([1, 2, 3, 4] * 2) - 2.5) / s, rtol=1e-6)
    np.testing.assert_array_equal(col(label, "feature", "F"), col(df, "feature", "F"))


def test_cs_zscore_robust_median_mad_and_clip() -> None:
    df = grid(D2, ABCD, {("feature", "F"): [1, 2, 2, 4, 1, 1, 2, 100]})
    out = col(CSZScoreNorm(fields_group="feature", method="robust")(df), "feature", "F")
    # day 1: median 2, MAD median(1,0,0,2)=0.5; day 2: median 1.5, MAD 0.5, 98.5/0.5/1.4826 clipped to 3
    expected = [-1 / 0.5 / 1.4826, 0, 0, 2 / 0.5 / 1.4826, -0.5 / 0.5 / 1.4826, -0.5 / 0.5 / 1.4826, 0.5 / 0.5 / 1.4826]
    np.testing.assert_allclose(out[:7], expected, rtol=1e-6)
    assert out[7] == 3.0


def test_cs_zscore_rejects_unknown_method() -> None:
    with pytest.raises(ConfigError, match=r"'zscore' or 'robust'"):
        CSZScoreNorm(fields_group="label", method="minmax")  # type: ignore[arg-type]


def window_frame() -> pd.DataFrame:
    """F in the fit window (first two dates): 1, 2, 4, 10; then huge values outside it."""
    return grid(
        ["2020-01-02", "2020-01-03", "2020-01-06"],
        ["A", "B"],
        {
            ("feature", "F"): [1, 2, 4, 10, 1000, -1000],
            ("feature", "K"): [5, 5, 5, 5, 7, 9],
            ("label", "L"): [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        },
    )


def test_robust_zscore_fits_on_the_window_only() -> None:
    df = window_frame()
    proc = RobustZScoreNorm(fields_group="feature", fit_start_time="2020-01-02", fit_end_time="2020-01-03")
    proc.fit(df)
    out = proc(df)
    scale = (1.5 + 1e-12) * 1.4826  # median 3, |x-3| = 2,1,1,7 -> MAD 1.5
    np.testing.assert_allclose(
        col(out, "feature", "F"), np.clip((np.array([1, 2, 4, 10, 1000, -1000]) - 3) / scale, -3, 3)
    )
    # K has MAD 0 in the window: divided by 1.4826e-12 (no exemption), so anything off 5 clips
    np.testing.assert_allclose(col(out, "feature", "K"), [0, 0, 0, 0, 3, 3])
    np.testing.assert_array_equal(col(out, "label", "L"), col(df, "label", "L"))
    # the same statistics whatever lies outside the window
    other = df.copy()
    other.loc[pd.Timestamp("2020-01-06"), ("feature", "F")] = [-5.0, 7.0]
    proc2 = RobustZScoreNorm(fields_group="feature", fit_start_time="2020-01-02", fit_end_time="2020-01-03")
    proc2.fit(other)
    np.testing.assert_array_equal(col(proc2(df), "feature", "F"), col(out, "feature", "F"))


def test_robust_zscore_without_clip() -> None:
    df = window_frame()
    proc = RobustZScoreNorm(fields_group="feature", clip_outlier=False, fit_end_time="2020-01-03")
    proc.fit(df)
    assert col(proc(df), "feature", "F")[4] == pytest.approx((1000 - 3) / ((1.5 + 1e-12) * 1.4826), rel=1e-6)


def test_zscore_norm_ddof0_and_std0_column_untouched() -> None:
    df = window_frame()
    proc = ZScoreNorm(fields_group="feature", fit_start_time="2020-01-02", fit_end_time="2020-01-03")
    proc.fit(df)
    out = proc(df)
    f = np.array([1, 2, 4, 10, 1000, -1000.0])
    np.testing.assert_allclose(col(out, "feature", "F"), (f - 4.25) / np.std([1, 2, 4, 10]), rtol=1e-6)
    np.testing.assert_array_equal(col(out, "feature", "K"), [5, 5, 5, 5, 7, 9])


def test_learnable_processor_errors() -> None:
    with pytest.raises(NotFittedError, match=r"before fit"):
        ZScoreNorm(fields_group="feature")(window_frame())
    proc = RobustZScoreNorm(fields_group="feature", fit_start_time="2021-01-01", fit_end_time="2021-02-01")
    with pytest.raises(
        DateRangeError, match=r"2021-01-01..2021-02-01 has no rows; the data runs 2020-01-02..2020-01-06"
    ):
        proc.fit(window_frame())
    with pytest.raises(ConfigError, match=r"fit_start_time 2021-02-01 is after fit_end_time 2021-01-01"):
        ZScoreNorm(fit_start_time="2021-02-01", fit_end_time="2021-01-01")
    with pytest.raises(ConfigError, match=r"'feat' is not a column group.*'feature', 'label'"):
        CSRankNorm(fields_group="feat")(window_frame())


def test_process_inf_uses_the_dates_finite_mean_for_every_column() -> None:
    df = grid(
        D2,
        ABCD,
        {("feature", "F"): [1, INF, 3, -INF, INF, INF, NAN, -INF], ("label", "L"): [1, 2, NAN, INF, 0, 0, 0, 0]},
    )
    out = ProcessInf()(df)
    # day 1 F: finite mean 2; day 2 F: no finite value -> NaN; label: day 1 finite mean of 1, 2 -> 1.5
    np.testing.assert_array_equal(col(out, "feature", "F"), [1, 2, 3, 2, NAN, NAN, NAN, NAN])
    np.testing.assert_array_equal(col(out, "label", "L"), [1, 2, NAN, 1.5, 0, 0, 0, 0])


def test_fillna_group_or_all() -> None:
    df = grid(D2, ["A"], {("feature", "F"): [NAN, 1], ("label", "L"): [NAN, 2]})
    out = Fillna(fields_group="feature")(df)
    np.testing.assert_array_equal(col(out, "feature", "F"), [0, 1])
    np.testing.assert_array_equal(col(out, "label", "L"), [NAN, 2])
    np.testing.assert_array_equal(Fillna()(df).to_numpy(), [[0, 0], [1, 2]])


def test_dropna_label_is_learn_only() -> None:
    df = grid(D2, ["A"], {("feature", "F"): [NAN, 1], ("label", "L"): [3, NAN]})
    proc = DropnaLabel()
    assert proc.is_for_infer() is False
    assert CSRankNorm(fields_group="label").is_for_infer() is True  # as in Qlib: learn-only by placement
    out = proc(df)
    assert list(out.index.get_level_values("datetime")) == [pd.Timestamp("2020-01-02")]


def test_filter_col_keeps_frame_order_and_other_groups() -> None:
    df = grid(["2020-01-02"], ["A"], {("feature", n): [i] for i, n in enumerate("ABCD")} | {("label", "L"): [9]})
    out = FilterCol(fields_group="feature", col_list=["D", "B"])(df)
    assert list(out.columns) == [("feature", "B"), ("feature", "D"), ("label", "L")]
    with pytest.raises(ConfigError, match=r"not in group 'feature': X"):
        FilterCol(col_list=["B", "X"])(df)


def test_drop_col_drops_the_names_in_every_group() -> None:
    columns: dict[tuple[str, str], list[float]] = {("feature", n): [i] for i, n in enumerate(["A", "VWAP0", "B"])}
    df = grid(["2020-01-02"], ["A"], {**columns, ("label", "L"): [9]})
    out = DropCol(col_list=["VWAP0"])(df)
    assert [tuple(c) for c in out.columns] == [("feature", "A"), ("feature", "B"), ("label", "L")]
    dropped = DropCol(col_list=["L", "A"])(df)
    assert [tuple(c) for c in dropped.columns] == [("feature", "VWAP0"), ("feature", "B")]  # the label's too
    pd.testing.assert_frame_equal(DropCol()(df), df)
    with pytest.raises(ConfigError, match=r"not in the frame: VWAP1"):
        DropCol(col_list=["VWAP0", "VWAP1"])(df)


def test_dropna_processor_drops_rows_with_nan_in_the_group_and_keeps_inf() -> None:
    df = grid(
        D2,
        ["A", "B"],
        {("feature", "F"): [1, NAN, INF, 4], ("feature", "G"): [1, 2, 3, NAN], ("label", "L"): [NAN, 1, 2, 3]},
    )
    out = DropnaProcessor(fields_group="feature")(df)
    # (day 1, B) has a NaN F and (day 2, B) a NaN G; (day 2, A) has inf, which is a value; a NaN label stays
    assert list(out.index) == [(pd.Timestamp(D2[0]), "A"), (pd.Timestamp(D2[1]), "A")]
    np.testing.assert_array_equal(out.to_numpy(np.float64), [[1, 1, NAN], [INF, 3, 2]])
    assert list(DropnaProcessor()(df).index) == [(pd.Timestamp(D2[1]), "A")]  # None: every column
    assert DropnaProcessor(fields_group="feature").is_for_infer() is True


def test_cs_zfillna_fills_each_dates_mean_of_the_column() -> None:
    df = grid(
        D2,
        ABCD,
        {
            ("feature", "F"): [1, NAN, 3, 8, NAN, NAN, NAN, NAN],
            ("feature", "G"): [INF, NAN, 1, 2, INF, -INF, NAN, 1],
            ("label", "L"): [NAN, 1, 2, 3, 4, 5, 6, 7],
        },
    )
    out = CSZFillna(fields_group="feature")(df)
    # F: day 1 mean of 1, 3, 8 = 4; day 2 has no value, stays NaN
    np.testing.assert_array_equal(col(out, "feature", "F"), [1, 4, 3, 8, NAN, NAN, NAN, NAN])
    # G: inf is a value of the mean: +inf on day 1, inf - inf = NaN on day 2
    np.testing.assert_array_equal(col(out, "feature", "G"), [INF, INF, 1, 2, INF, -INF, NAN, 1])
    np.testing.assert_array_equal(col(out, "label", "L"), col(df, "label", "L"))
    assert out.dtypes.tolist() == [np.float32] * 3
    assert col(CSZFillna()(df), "label", "L")[0] == 2.0  # None: the label too (mean of 1, 2, 3)


def test_cs_zfillna_means_in_float32_as_pandas() -> None:
    # float32: 16777216 + 1 + 1 = 16777216, / 3 = 5592405.5 (pandas' float32 mean); in float64 it would be 5592406
    df = grid(["2020-01-02"], ABCD, {("feature", "F"): [16777216, 1, 1, NAN]})
    assert col(CSZFillna(fields_group="feature")(df), "feature", "F")[3] == 5592405.5


@pytest.mark.parametrize(
    "proc",
    [
        CSRankNorm(fields_group="feature"),
        CSZFillna(),
        DropCol(col_list=["K"]),
        DropnaProcessor(fields_group="feature"),
        CSZScoreNorm(fields_group="feature"),
        CSZScoreNorm(method="robust"),
        ProcessInf(),
        Fillna(),
        DropnaLabel(),
        FilterCol(col_list=["F"]),
        RobustZScoreNorm(fields_group="feature"),
        ZScoreNorm(),
    ],
    ids=lambda p: type(p).__name__,
)
def test_processors_leave_their_input_unchanged(proc: CSRankNorm) -> None:
    df = window_frame()
    df.iloc[0, 0], df.iloc[1, 2] = INF, NAN
    before = df.copy()
    proc.fit(df)
    proc(df)
    pd.testing.assert_frame_equal(df, before)


def test_fitted_statistics_follow_column_names_not_positions() -> None:
    df = window_frame()
    proc = ZScoreNorm(fields_group="feature", fit_end_time="2020-01-03")
    proc.fit(df)
    swapped = df[[("label", "L"), ("feature", "K"), ("feature", "F")]]
    out = proc(swapped)
    assert list(out.columns) == list(swapped.columns)
    pd.testing.assert_frame_equal(out[list(df.columns)], proc(df))
