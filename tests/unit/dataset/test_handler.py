"""DataHandler / DatasetSpec on a real (small) synthetic store, with the feature cache."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.core.errors import ConfigError
from app.data.store import QlibStore
from app.data.synth import SynthSpec, write_synth_market
from app.dataset.cache import FeatureCache
from app.dataset.dataset import TSDataset
from app.dataset.handler import DataHandler, DatasetSpec
from app.dataset.processors import CSZScoreNorm, DropnaLabel, DropnaProcessor, Fillna, RobustZScoreNorm
from app.features.handlers import alpha158, expressions

FEATURES = expressions(features={"MOM5": "Ref($close, 5)/$close", "VMA10": "Mean($volume, 10)/($volume+1e-12)"})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> QlibStore:
    root = tmp_path_factory.mktemp("handler") / "store"
    write_synth_market(root, SynthSpec(instruments=12, days=160, seed=3))
    return QlibStore(root)


def _handler(store: QlibStore, features: object = FEATURES, **kw: object) -> DataHandler:
    cal = store.calendar()
    args: dict[str, object] = {
        "features": features,
        "market": "synth",
        "start_time": str(cal[20].date()),
        "end_time": str(cal[-1].date()),
        "fit_start_time": str(cal[20].date()),
        "fit_end_time": str(cal[100].date()),
        "learn_processors": [DropnaLabel(), CSZScoreNorm(fields_group="label")],
    }
    args.update(kw)
    return DataHandler(**args)  # type: ignore[arg-type]


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    out = [r.getMessage() for r in caplog.records if r.name == "app.dataset.handler"]
    caplog.clear()
    return out


def test_raw_frame_shape(store: QlibStore) -> None:
    raw = _handler(store).raw(store)
    assert raw.index.names == ["datetime", "instrument"] and raw.index.is_monotonic_increasing
    assert list(raw.columns) == [("feature", "MOM5"), ("feature", "VMA10"), ("label", "LABEL0")]
    assert (raw.dtypes == np.float32).all()
    assert raw.index.get_level_values(0).min() == store.calendar()[20]


def test_cache_hit_and_misses(store: QlibStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    cache = FeatureCache(tmp_path / "cache")
    first = _handler(store).raw(store, cache)
    assert _messages(caplog) == [f"raw features computed and cached ({len(first)} rows)"]
    second = _handler(store).raw(store, cache)
    assert _messages(caplog) == [f"raw features loaded from cache ({len(first)} rows)"]
    pd.testing.assert_frame_equal(first, second)
    # another config misses
    _handler(store, market="large").raw(store, cache)
    assert "computed" in _messages(caplog)[0]
    # a changed store misses: rewrite one instrument file (new mtime)
    path = next((store.root / "features").glob("*/close.day.bin"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    _handler(store).raw(store, cache)
    assert "computed" in _messages(caplog)[0]


def test_views_are_cached_and_processed(store: QlibStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    cache = FeatureCache(tmp_path / "cache")
    handler = _handler(store)
    views = handler.views(store, cache)
    assert len(list((tmp_path / "cache").iterdir())) == 3  # raw, infer, learn
    again = handler.views(store, cache)
    pd.testing.assert_frame_equal(views.learn, again.learn)
    pd.testing.assert_frame_equal(views.raw, again.raw)
    assert views.learn["label"]["LABEL0"].notna().all()
    day = views.learn.index.get_level_values(0)[0]
    assert abs(float(views.learn.loc[day, ("label", "LABEL0")].mean())) < 1e-6  # CSZScoreNorm per date
    no_cache = handler.views(store)
    pd.testing.assert_frame_equal(no_cache.learn, views.learn)


def test_process_type_is_part_of_the_views_key(store: QlibStore, tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache")
    procs = {"infer_processors": [Fillna(fields_group="feature")], "learn_processors": [DropnaProcessor()]}
    append, independent = _handler(store, **procs), _handler(store, **procs, process_type="independent")
    assert append.views_key(store)["process_type"] == "append"
    assert {**independent.views_key(store), "process_type": "append"} == append.views_key(store)
    filled = append.views(store, cache).learn
    dropped = independent.views(store, cache).learn  # not the cached append views
    assert len(list((tmp_path / "cache").iterdir())) == 5  # one raw, two infer+learn pairs
    assert filled["feature"].notna().all().all() and len(filled) > len(dropped)
    raw = independent.raw(store)
    pd.testing.assert_frame_equal(dropped, raw.dropna())


def test_dataset_spec_builds_segments_and_windows(store: QlibStore) -> None:
    cal = store.calendar()
    seg = {
        "train": [str(cal[20].date()), str(cal[100].date())],
        "valid": [str(cal[101].date()), str(cal[130].date())],
        "test": [str(cal[131].date()), str(cal[-1].date())],
    }
    handler = _handler(
        store,
        features=alpha158(),
        infer_processors=[RobustZScoreNorm(fields_group="feature"), Fillna(fields_group="feature")],
    )
    ds = DatasetSpec(handler=handler, segments=seg, step_len=5).build(store)
    assert isinstance(ds, TSDataset)
    x = ds.prepare("test", "feature", view="infer")
    assert x.shape[1] == 158 and not x.isna().any().any()
    batch = next(ds.prepare_ts("train").batches(64))
    assert batch.x.shape == (64, 5, 158)


def test_dataset_spec_needs_train() -> None:
    with pytest.raises(ConfigError, match=r"dataset.segments needs a 'train' segment; got test"):
        DatasetSpec(handler=None, segments={"test": ["2020-01-01", "2020-02-01"]})  # type: ignore[arg-type]
