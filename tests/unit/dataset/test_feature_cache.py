"""FeatureCache: hits, misses on key or store changes, concurrent builders, corrupt files."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.core.errors import ConfigError
from app.data.fingerprint import store_fingerprint
from app.dataset.cache import FeatureCache, canonical_json, forget_loaded_frames, key_digest
from tests.unit.data.qlib_layout import write_calendar, write_field, write_market
from tests.unit.dataset.frames import NAN, grid

KEY = {"handler": "alpha158", "market": "csi300", "start": "2020-01-02", "end": "2020-01-03"}


def frame() -> pd.DataFrame:
    df = grid(
        ["2020-01-02", "2020-01-03"],
        ["SH600000", "SZ000001"],
        {
            ("feature", "KMID"): [0.1, NAN, 0.3, 0.4],
            ("feature", "A:B"): [1, 2, 3, 4],
            ("label", "LABEL0"): [1, 2, 3, NAN],
        },
    )
    return df


@pytest.fixture(autouse=True)
def _files_only() -> None:
    forget_loaded_frames()  # each test reads what is on disk, not frames an earlier test kept


class Builder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> pd.DataFrame:
        self.calls += 1
        return frame()


def test_second_call_hits_and_round_trips_exactly(tmp_path: Path) -> None:
    cache, build = FeatureCache(tmp_path / "cache"), Builder()
    _, hit1 = cache.get_or_build(KEY, build)
    forget_loaded_frames()
    second, hit2 = cache.get_or_build(dict(reversed(KEY.items())), build)  # key order does not matter
    assert (hit1, hit2, build.calls) == (False, True, 1)
    pd.testing.assert_frame_equal(second, frame())
    assert list(second.columns) == [("feature", "KMID"), ("feature", "A:B"), ("label", "LABEL0")]
    assert second.dtypes.tolist() == [np.float32] * 3
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{key_digest(KEY)}.arrow"]  # no temp files left


def test_changed_key_misses(tmp_path: Path) -> None:
    cache, build = FeatureCache(tmp_path), Builder()
    cache.get_or_build(KEY, build)
    _, hit = cache.get_or_build({**KEY, "end": "2020-01-06"}, build)
    assert not hit and build.calls == 2


def test_changed_store_misses(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_calendar(store, ["2020-01-02", "2020-01-03"])
    write_market(store, "all", [("SH600000", "2020-01-02", "2020-01-03")])
    bin_path = write_field(store, "SH600000", "close", 0, [1.0, 2.0])
    cache, build = FeatureCache(tmp_path / "cache"), Builder()
    assert cache.get_or_build({**KEY, "store": store_fingerprint(store)}, build)[1] is False
    assert cache.get_or_build({**KEY, "store": store_fingerprint(store)}, build)[1] is True
    st = bin_path.stat()
    os.utime(bin_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # `touch`
    assert cache.get_or_build({**KEY, "store": store_fingerprint(store)}, build)[1] is False
    assert build.calls == 2


def test_corrupt_file_is_rebuilt_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache, build = FeatureCache(tmp_path), Builder()
    cache.get_or_build(KEY, build)
    path = cache.path_for(KEY)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    with caplog.at_level(logging.WARNING, logger="app.dataset.cache"):
        df, hit = cache.get_or_build(KEY, build)
    assert not hit and build.calls == 2
    assert "unreadable" in caplog.text and path.name in caplog.text
    pd.testing.assert_frame_equal(df, frame())
    assert cache.get_or_build(KEY, build)[1] is True  # the rebuilt file is whole
    path.write_bytes(b"not arrow at all")
    assert cache.get_or_build(KEY, build)[1] is False
    assert (cache.hits, cache.misses) == (1, 3)  # an unreadable file counts as a miss


def test_counts_hits_and_misses(tmp_path: Path) -> None:
    cache, build = FeatureCache(tmp_path), Builder()
    assert (cache.hits, cache.misses) == (0, 0)
    cache.get_or_build(KEY, build)
    cache.get_or_build(KEY, build)
    cache.get_or_build({**KEY, "end": "2020-01-06"}, build)
    assert (cache.hits, cache.misses) == (1, 2)


def test_file_for_another_key_is_not_trusted(tmp_path: Path) -> None:
    cache, build = FeatureCache(tmp_path), Builder()
    cache.get_or_build(KEY, build)
    other = {**KEY, "market": "csi500"}
    os.replace(cache.path_for(KEY), cache.path_for(other))
    assert cache.get_or_build(other, build)[1] is False


def test_key_must_be_json(tmp_path: Path) -> None:
    assert canonical_json({"b": 1, "a": [Path("/x"), pd.Timestamp("2020-01-02")]}) == (
        '{"a":["/x","2020-01-02T00:00:00"],"b":1}'
    )
    with pytest.raises(ConfigError, match=r"cache key.x = <object object .*> of type object is not JSON"):
        FeatureCache(tmp_path).get_or_build({"x": object()}, Builder())
    with pytest.raises(ConfigError, match=r"cache key.x is nan, which JSON cannot represent"):
        key_digest({"x": float("nan")})


def _build_slowly(root: str, barrier: object, results: object) -> None:
    """Child process: miss, wait until the other child has missed too, then write."""

    def build() -> pd.DataFrame:
        barrier.wait(timeout=20)  # type: ignore[attr-defined]
        return frame()

    df, hit = FeatureCache(Path(root)).get_or_build(KEY, build)
    results.put((hit, df.equals(frame())))  # type: ignore[attr-defined]


def test_concurrent_builders_both_succeed(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")  # no fork: the parent may hold pyarrow/pandas threads
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_build_slowly, args=(str(tmp_path), barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(results.get(timeout=5) for _ in procs) == [(False, True), (False, True)]
    build = Builder()
    df, hit = FeatureCache(tmp_path).get_or_build(KEY, build)
    assert hit and build.calls == 0
    pd.testing.assert_frame_equal(df, frame())
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{key_digest(KEY)}.arrow"]


def test_colliding_flat_column_names_survive(tmp_path: Path) -> None:
    df = frame().iloc[:, :2].set_axis(pd.MultiIndex.from_tuples([("a:b", "c"), ("a", "b:c")]), axis=1)
    cache = FeatureCache(tmp_path)
    cache.get_or_build(KEY, lambda: df)
    again, hit = cache.get_or_build(KEY, lambda: df)
    assert hit
    pd.testing.assert_frame_equal(again, df)


def test_a_process_reads_each_file_once_while_it_is_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import app.dataset.cache as cache_module

    reads = []
    real_read = cache_module._read
    monkeypatch.setattr(cache_module, "_read", lambda *a: reads.append(a) or real_read(*a))
    cache, build = FeatureCache(tmp_path / "cache"), Builder()
    built, _ = cache.get_or_build(KEY, build)
    other = FeatureCache(tmp_path / "cache")  # another job of the same process
    kept, hit = other.get_or_build(KEY, build)
    assert (hit, build.calls, len(reads)) == (True, 1, 0)
    pd.testing.assert_frame_equal(kept, built)
    path = other.path_for(KEY)
    stamp = path.stat()
    path.write_bytes(b"torn")  # the file changed under us: read again (unreadable -> rebuilt)
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1))
    again, hit = other.get_or_build(KEY, build)
    assert (hit, build.calls) == (False, 2)
    pd.testing.assert_frame_equal(again, frame())


def test_frames_shared_between_jobs_cannot_be_changed_through_each_other(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache")
    first, _ = cache.get_or_build(KEY, Builder())
    first.iloc[0, 0] = 99.0  # copy on write: the kept frame is not touched
    second, _ = cache.get_or_build(KEY, Builder())
    assert second.iloc[0, 0] == np.float32(0.1)
