"""auto and rolling segments: cut on the calendar, no label leak into a window's test, bad settings refused."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest

from app.core.errors import ConfigError
from app.data.store import QlibStore
from app.data.synth import SynthSpec, write_synth_market
from app.dataset.segments import auto_segments, rolling_segments

CAL = pd.bdate_range("2020-01-01", periods=300)
SEG = {
    "train": ["2020-01-01", "2020-06-30"],
    "valid": ["2020-07-01", "2020-08-31"],
    "test": ["2020-09-01", "2020-12-31"],
}


def _pos(date: str) -> int:
    return int(CAL.get_loc(pd.Timestamp(date)))


@pytest.mark.parametrize("mode", ["expanding", "sliding"])
def test_windows_tile_the_test_segment_and_never_look_into_it(mode: str) -> None:
    windows = rolling_segments(CAL, SEG, step=30, mode=mode, trunc_days=2)  # type: ignore[arg-type]
    tests = [w["test"] for w in windows]
    assert tests[0][0] == "2020-09-01" and tests[-1][1] == "2020-12-31"
    for a, b in itertools.pairwise(tests):
        assert _pos(b[0]) == _pos(a[1]) + 1  # consecutive, disjoint
    assert all(_pos(t[1]) - _pos(t[0]) + 1 <= 30 for t in tests)
    for k, w in enumerate(windows):
        start = _pos(w["test"][0])
        assert _pos(w["train"][1]) <= start - 2 and _pos(w["valid"][1]) <= start - 2
        assert _pos(w["valid"][0]) == min(_pos(SEG["valid"][0]) + 30 * k, start - 2)
        expected_train_start = _pos(SEG["train"][0]) + (30 * k if mode == "sliding" else 0)
        assert _pos(w["train"][0]) == expected_train_start


def test_first_window_keeps_original_train_and_truncates_valid() -> None:
    first = rolling_segments(CAL, SEG, step=30, trunc_days=2)[0]
    assert first["train"] == SEG["train"]
    assert first["valid"] == ["2020-07-01", "2020-08-28"]  # 08-31 is 1 day before test start: cut to start - 2
    assert first["test"] == ["2020-09-01", str(CAL[_pos("2020-09-01") + 29].date())]


def test_bounds_off_the_calendar_snap_inwards() -> None:
    seg = {"train": ["2020-01-04", "2020-06-28"], "test": ["2020-09-05", "2020-10-31"]}  # weekends
    w = rolling_segments(CAL, seg, step=100)[0]
    assert w["train"] == ["2020-01-06", "2020-06-26"] and w["test"] == ["2020-09-07", "2020-10-30"]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"step": 0}, "trainer.rolling.step"),
        ({"step": 10, "mode": "weekly"}, "trainer.rolling.mode"),
        ({"step": 10, "trunc_days": -1}, "trainer.rolling.trunc_days"),
        ({"step": 10, "trunc_days": 400}, "trunc_days"),
    ],
)
def test_bad_rolling_settings_name_the_key(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        rolling_segments(CAL, SEG, **kwargs)  # type: ignore[arg-type]


def test_test_segment_beyond_the_data_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"data.segments.test: 2022-01-03 lies outside"):
        rolling_segments(CAL, {**SEG, "test": ["2022-01-03", "2022-02-01"]}, step=10)


def test_auto_segments_split_the_market_span(tmp_path: Path) -> None:
    write_synth_market(tmp_path, SynthSpec(instruments=8, days=100, seed=1))
    store = QlibStore(tmp_path)
    seg = auto_segments(store, "all")
    cal = store.calendar()
    idx = {k: [int(cal.get_loc(pd.Timestamp(d))) for d in v] for k, v in seg.items()}
    assert idx["train"][0] == 0 and idx["test"][1] == len(cal) - 1
    assert idx["valid"][0] == idx["train"][1] + 1 and idx["test"][0] == idx["valid"][1] + 1
    assert idx["train"][1] + 1 == 60 and idx["valid"][1] - idx["valid"][0] + 1 == 20


def test_auto_segments_refuse_an_empty_segment(tmp_path: Path) -> None:
    write_synth_market(tmp_path, SynthSpec(instruments=3, days=30, seed=1))
    with pytest.raises(ConfigError, match="too few to split"):
        auto_segments(QlibStore(tmp_path), "all", split=(0.98, 0.01, 0.01))
