"""Dataset segments over the views: selection, column sets and error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.core.errors import ConfigError, EmptySegmentError, UnknownSegmentError
from app.dataset.dataset import Dataset, TSDataset
from app.dataset.processors import CSZScoreNorm, DropnaLabel
from app.dataset.views import ProcessedViews
from tests.unit.dataset.frames import NAN, grid

DATES = ["2015-01-05", "2016-06-01", "2018-03-01", "2020-12-15"]
SEGMENTS = {
    "train": ("2015-01-01", "2016-12-31"),
    "valid": ("2018-01-01", "2018-12-31"),
    "test": ("2019-01-01", "2020-12-31"),
}


@pytest.fixture
def views() -> ProcessedViews:
    raw = grid(
        DATES,
        ["A", "B"],
        {("feature", "F"): [1, 2, 3, 4, 5, 6, 7, 8], ("label", "L"): [0.1, 0.3, NAN, 0.2, 0.5, 0.4, 0.6, NAN]},
    )
    learn = [DropnaLabel(), CSZScoreNorm(fields_group="label")]
    return ProcessedViews.build(raw, [], learn, fit_start="2015-01-01", fit_end="2016-12-31")


def test_prepare_selects_segment_rows_columns_and_view(views: ProcessedViews) -> None:
    ds = Dataset(views, SEGMENTS)
    feat = ds.prepare("train", "feature", view="infer")
    assert list(feat.columns) == ["F"]
    assert feat.index.get_level_values("datetime").unique().tolist() == [pd.Timestamp(d) for d in DATES[:2]]
    learn = ds.prepare("train", ["feature", "label"], view="learn")
    assert list(learn.columns) == [("feature", "F"), ("label", "L")]
    assert len(learn) == 3  # (2016-06-01, A) has no label: dropped in learn only
    # CSZScoreNorm (ddof=1) on the learn label: day 1 (0.1, 0.3) -> -/+ 1/sqrt(2); day 2 has one label -> NaN
    np.testing.assert_allclose(learn[("label", "L")], [-(0.5**0.5), 0.5**0.5, NAN], rtol=1e-6)
    raw_label = ds.prepare("test", "label", view="raw")
    np.testing.assert_array_equal(raw_label["L"], np.float32([0.6, NAN]))  # the unprocessed label, NaN kept
    assert len(ds.prepare("test", "feature")) == 2  # infer is the default view, as Qlib's DK_I


def test_empty_segment_names_segment_and_data_range(views: ProcessedViews) -> None:
    with pytest.raises(EmptySegmentError) as info:
        Dataset(views, {**SEGMENTS, "test": ("2030-01-01", "2030-12-31")})
    assert str(info.value).startswith(
        "segments.test 2030-01-01..2030-12-31 has no rows: the data runs 2015-01-05..2020-12-15"
    )
    assert (info.value.segment, info.value.data_end) == ("test", "2020-12-15")
    # inside the data's span but on no data day is also empty
    with pytest.raises(EmptySegmentError, match=r"segments.gap 2017-01-01..2017-12-31 has no rows"):
        Dataset(views, {"gap": ("2017-01-01", "2017-12-31")})


def test_segment_validation(views: ProcessedViews) -> None:
    with pytest.raises(ConfigError, match=r"segments.valid starts 2018-12-31 after it ends 2018-01-01"):
        Dataset(views, {"valid": ("2018-12-31", "2018-01-01")})
    with pytest.raises(ConfigError, match=r"segments.train=.*pair"):
        Dataset(views, {"train": ("2015-01-01",)})
    with pytest.raises(ConfigError, match=r"not a pair of dates"):
        Dataset(views, {"train": ("2015-01-01", "someday")})
    ds = Dataset(views, {"test": ("2019-01-01", "2020-12-31"), "train": ("2015-01-01", "2016-12-31")})  # any order
    with pytest.raises(UnknownSegmentError, match=r"unknown segment 'valid': the dataset defines test, train"):
        ds.prepare("valid")
    with pytest.raises(KeyError):
        ds.segment("valid")


def test_prepare_rejects_unknown_view_and_col_set(views: ProcessedViews) -> None:
    ds = Dataset(views, SEGMENTS)
    with pytest.raises(ConfigError, match=r"view='all' is not one of raw, infer, learn"):
        ds.prepare("train", view="all")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"col_set='features'.*'feature', 'label'"):
        ds.prepare("train", "features")


def test_ts_dataset_step_len(views: ProcessedViews) -> None:
    ds = TSDataset(views, SEGMENTS, step_len=3)
    sampler = ds.prepare_ts("test")
    assert sampler.step_len == 3 and len(sampler) == 2
    assert ds.prepare_ts("test", step_len=2).step_len == 2
    assert len(ds.prepare_ts("test", view="learn")) == 1
    with pytest.raises(ConfigError, match=r"step_len=0"):
        TSDataset(views, SEGMENTS, step_len=0)


def test_window_samplers_of_cached_views_are_built_once_per_process(views: ProcessedViews, tmp_path: Path) -> None:
    from app.dataset.cache import FeatureCache

    cache = FeatureCache(tmp_path)
    first = TSDataset(views, SEGMENTS, step_len=3, cache=cache, fingerprint="views-a")
    second = TSDataset(views, SEGMENTS, step_len=3, cache=cache, fingerprint="views-a")  # the next job of a sweep
    shared = first.prepare_ts("test")
    assert second.prepare_ts("test") is shared
    assert second.prepare_ts("test", step_len=2) is not shared
    assert TSDataset(views, SEGMENTS, step_len=3, cache=cache, fingerprint="views-b").prepare_ts("test") is not shared
    uncached = TSDataset(views, SEGMENTS, step_len=3)
    assert uncached.prepare_ts("test") is not uncached.prepare_ts("test")
    ids = np.arange(len(shared))
    np.testing.assert_array_equal(uncached.prepare_ts("test").take(ids).x, shared.take(ids).x)
