"""ProcessedViews: Qlib's DataHandlerLP with process_type "append" (the default) and "independent"."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.core.errors import ConfigError, DataError, DateRangeError
from app.dataset.processors import CSRankNorm, DropnaLabel, Fillna, RobustZScoreNorm, ZScoreNorm
from app.dataset.views import ProcessedViews
from tests.unit.dataset.frames import NAN, grid

DATES = ["2020-01-02", "2020-01-03", "2020-01-06"]


def raw_frame() -> pd.DataFrame:
    return grid(
        DATES,
        ["A", "B"],
        {("feature", "F"): [1, 3, 2, 6, 500, -500], ("label", "L"): [0.1, NAN, 0.3, 0.2, 0.5, 0.4]},
    )


def test_infer_and_learn_views_follow_the_append_flow() -> None:
    raw = raw_frame()
    before = raw.copy()
    views = ProcessedViews.build(
        raw,
        [RobustZScoreNorm(fields_group="feature", clip_outlier=False)],
        [DropnaLabel(), CSRankNorm(fields_group="label")],
        fit_start="2020-01-02",
        fit_end="2020-01-03",
    )
    pd.testing.assert_frame_equal(views.raw, before)  # raw untouched: the unprocessed label stays available
    # RobustZScoreNorm fitted on the fit window of raw only: median 2.5, MAD median(1.5, .5, .5, 3.5) = 1
    scale = (1 + 1e-12) * 1.4826
    np.testing.assert_allclose(
        views.infer[("feature", "F")], (np.array([1, 3, 2, 6, 500, -500]) - 2.5) / scale, rtol=1e-6
    )
    np.testing.assert_array_equal(views.infer[("label", "L")], raw[("label", "L")])  # label untouched in infer
    assert len(views.infer) == 6  # DropnaLabel is learn-only
    assert len(views.learn) == 5
    assert (pd.Timestamp("2020-01-02"), "B") not in views.learn.index
    # learn = infer after the learn processors: same features, ranked label (B is alone on day 1 -> rank 1)
    np.testing.assert_array_equal(
        views.learn[("feature", "F")], views.infer[("feature", "F")].drop(("2020-01-02", "B"))
    )
    np.testing.assert_allclose(views.learn[("label", "L")], (np.array([1, 1, 0.5, 1, 0.5]) - 0.5) * 3.46)


def test_learn_processors_run_on_the_infer_output() -> None:
    raw = raw_frame()
    # Fillna over every column fills the NaN label in infer, so the learn view's DropnaLabel keeps every row
    views = ProcessedViews.build(raw, [Fillna()], [DropnaLabel()], fit_start="2020-01-02", fit_end="2020-01-06")
    assert len(views.learn) == 6
    # and a learnable learn processor is fitted on infer's values (ranks here), not raw's
    views = ProcessedViews.build(
        raw,
        [CSRankNorm(fields_group="feature")],
        [ZScoreNorm(fields_group="feature")],
        fit_start="2020-01-02",
        fit_end="2020-01-03",
    )
    ranks = views.infer[("feature", "F")].to_numpy(np.float64)
    expected = (ranks - ranks[:4].mean()) / ranks[:4].std()
    np.testing.assert_allclose(views.learn[("feature", "F")], expected, rtol=1e-6)


def test_independent_learn_processors_run_on_raw() -> None:
    raw = grid(DATES, ["A", "B"], {("feature", "F"): [1, NAN, 2, 6, NAN, 4], ("label", "L"): [1, NAN, 3, 4, 5, 6]})
    infer, learn = [Fillna()], [DropnaLabel()]
    appended = ProcessedViews.build(raw, infer, learn, fit_start="2020-01-02", fit_end="2020-01-03")
    assert len(appended.learn) == 6  # the infer view's filled NaN leave nothing to drop
    views = ProcessedViews.build(
        raw, infer, learn, fit_start="2020-01-02", fit_end="2020-01-03", process_type="independent"
    )
    pd.testing.assert_frame_equal(views.infer, appended.infer)  # infer is the same either way
    # learn: raw's rows with a label, features unfilled
    pd.testing.assert_frame_equal(views.learn, raw.drop(index=[(pd.Timestamp(DATES[0]), "B")]))
    assert views.learn[("feature", "F")].isna().sum() == 1
    # a learnable learn processor is fitted on raw's values, not infer's
    views = ProcessedViews.build(
        raw_frame(),
        [CSRankNorm(fields_group="feature")],
        [ZScoreNorm(fields_group="feature")],
        fit_start="2020-01-02",
        fit_end="2020-01-03",
        process_type="independent",
    )
    f = np.array([1, 3, 2, 6, 500, -500.0])
    np.testing.assert_allclose(views.learn[("feature", "F")], (f - f[:4].mean()) / f[:4].std(), rtol=1e-6)
    with pytest.raises(ConfigError, match=r"process_type='shared' is not one of append, independent"):
        ProcessedViews.build(raw, fit_start="2020-01-02", fit_end="2020-01-03", process_type="shared")  # type: ignore[arg-type]


def test_processor_without_window_uses_the_build_window() -> None:
    proc = ZScoreNorm(fields_group="feature")
    views = ProcessedViews.build(raw_frame(), [proc], [], fit_start="2020-01-02", fit_end="2020-01-03")
    f = np.array([1, 3, 2, 6.0])
    assert views.infer[("feature", "F")].iloc[0] == pytest.approx((1 - f.mean()) / f.std(), rel=1e-6)
    assert views.learn.equals(views.infer)


def test_learn_only_processor_refused_in_infer() -> None:
    with pytest.raises(ConfigError, match=r"infer_processors\[1\] DropnaLabel is learn-only"):
        ProcessedViews.build(raw_frame(), [Fillna(), DropnaLabel()], [], fit_start="2020-01-02", fit_end="2020-01-03")


def test_processor_window_outside_the_dataset_window_refused() -> None:
    proc = ZScoreNorm(fit_start_time="2020-01-02", fit_end_time="2020-01-06")
    with pytest.raises(ConfigError, match=r"learn_processors\[0\] ZScoreNorm .* outside the dataset's fit window"):
        ProcessedViews.build(raw_frame(), [], [proc], fit_start="2020-01-02", fit_end="2020-01-03")


def test_fit_window_errors() -> None:
    with pytest.raises(
        DateRangeError, match=r"2021-01-01..2021-06-30 has no rows: the data runs 2020-01-02..2020-01-06"
    ):
        ProcessedViews.build(raw_frame(), [], [], fit_start="2021-01-01", fit_end="2021-06-30")
    with pytest.raises(ConfigError, match=r"after fit_end"):
        ProcessedViews.build(raw_frame(), [], [], fit_start="2020-01-06", fit_end="2020-01-02")


def test_raw_frame_contract_is_checked() -> None:
    raw = raw_frame()
    with pytest.raises(DataError, match=r"not sorted"):
        ProcessedViews.build(raw.iloc[::-1], fit_start="2020-01-02", fit_end="2020-01-03")
    with pytest.raises(DataError, match=r"not \['datetime', 'instrument'\]"):
        ProcessedViews.build(raw.swaplevel().sort_index(), fit_start="2020-01-02", fit_end="2020-01-03")
    flat = raw.set_axis(["F", "L"], axis=1)
    with pytest.raises(DataError, match=r"two-level"):
        ProcessedViews.build(flat, fit_start="2020-01-02", fit_end="2020-01-03")
    views = ProcessedViews.build(raw, fit_start="2020-01-02", fit_end="2020-01-03")
    with pytest.raises(ConfigError, match=r"view='test' is not one of raw, infer, learn"):
        views.get("test")
