"""TSSampler windows against a plain-loop reference of Qlib's TSDataSampler with fillna_type="ffill+bfill"."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.core.errors import ConfigError
from app.dataset.timeseries import TSBatch, TSSampler
from tests.unit.dataset.frames import NAN, rows

DAYS = [d.strftime("%Y-%m-%d") for d in pd.bdate_range("2020-01-06", periods=10)]
COLUMNS = [("feature", "F1"), ("feature", "F2"), ("label", "L")]
ABSENT = {"B": {3, 4, 7}, "C": {0, 1, 2, 3, 4}, "D": {2, 7, 8, 9}}  # C listed on day 5, D gone after day 6


def market() -> pd.DataFrame:
    """A: every day (F2 NaN on day 4); B suspended days 3, 4, 7; C listed on day 5; D absent day 2 and from day 7."""
    records = []
    for k, day in enumerate(DAYS):
        for j, inst in enumerate("ABCD"):
            if k in ABSENT.get(inst, set()):
                continue
            f2 = NAN if (inst, k) == ("A", 4) else 100 * j + k + 0.5
            records.append((day, inst, [100 * j + k, f2, 1000 + 100 * j + k]))
    return rows(records, COLUMNS)


def reference(frame: pd.DataFrame, start: str, end: str, step_len: int) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
    """Explicit loops: the step_len view dates ending at each sample; missing rows ffilled, then bfilled."""
    calendar = sorted(frame.index.get_level_values("datetime").unique())
    feats = {key: frame.loc[key, "feature"].to_numpy() for key in frame.index}
    xs, ys, keys = [], [], []
    for date, inst in frame.index:
        if not (pd.Timestamp(start) <= date <= pd.Timestamp(end)):
            continue
        p = calendar.index(date)
        window = [feats.get((calendar[k], inst)) if k >= 0 else None for k in range(p - step_len + 1, p + 1)]
        last = None
        for k in range(step_len):  # forward fill
            if window[k] is None:
                window[k] = last
            else:
                last = window[k]
        nxt = None
        for k in reversed(range(step_len)):  # back fill what is left (the leading gap)
            if window[k] is None:
                window[k] = nxt
            else:
                nxt = window[k]
        xs.append(np.stack(window))
        ys.append(frame.loc[(date, inst), "label"].to_numpy())
        keys.append((date, inst))
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32), keys


def concat(batches: list[TSBatch]) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
    return (
        np.concatenate([b.x for b in batches]),
        np.concatenate([b.y for b in batches]),
        [k for b in batches for k in b.index],
    )


@pytest.mark.parametrize(
    ("start", "end", "step_len"), [(DAYS[4], DAYS[9], 4), (DAYS[0], DAYS[3], 6), (DAYS[6], DAYS[6], 1)]
)
def test_windows_match_the_reference(start: str, end: str, step_len: int) -> None:
    frame = market()
    sampler = TSSampler(frame, start=pd.Timestamp(start), end=pd.Timestamp(end), step_len=step_len)
    x, y, keys = concat(list(sampler.batches(3)))
    rx, ry, rkeys = reference(frame, start, end, step_len)
    assert keys == rkeys == sorted(rkeys)  # (datetime, instrument) order
    assert x.dtype == np.float32 and x.shape == (len(rkeys), step_len, 2)
    np.testing.assert_array_equal(x, rx)
    np.testing.assert_array_equal(y, ry)
    assert sampler.feature_names == ("F1", "F2") and sampler.label_names == ("L",)


def test_hand_checked_windows() -> None:
    sampler = TSSampler(market(), start=pd.Timestamp(DAYS[6]), end=pd.Timestamp(DAYS[8]), step_len=4)
    pos = {key: i for i, key in enumerate(sampler.index)}
    batch = sampler.take(np.array([pos[(pd.Timestamp(DAYS[6]), "C")], pos[(pd.Timestamp(DAYS[8]), "B")]]))
    # C listed on day 5: days 3, 4 are back-filled from day 5
    np.testing.assert_array_equal(batch.x[0, :, 0], [205, 205, 205, 206])
    # B suspended day 7: forward-filled from day 6
    np.testing.assert_array_equal(batch.x[1, :, 0], [105, 106, 106, 108])
    np.testing.assert_array_equal(batch.y[:, 0], [1206, 1108])
    # a present row keeps its NaN values (A, day 4): only missing rows are filled
    a7 = sampler.take(np.array([pos[(pd.Timestamp(DAYS[7]), "A")]]))
    np.testing.assert_array_equal(a7.x[0, :, 1], [NAN, 5.5, 6.5, 7.5])


def test_shuffled_batches_cover_every_sample_once_and_repeat_with_the_seed() -> None:
    frame = market()
    sampler = TSSampler(frame, start=pd.Timestamp(DAYS[2]), end=pd.Timestamp(DAYS[9]), step_len=5)
    x, y, keys = concat(list(sampler.batches(4, shuffle=True, seed=11)))
    rx, ry, rkeys = reference(frame, DAYS[2], DAYS[9], 5)
    assert keys != rkeys and sorted(keys) == rkeys
    order = [rkeys.index(k) for k in keys]
    np.testing.assert_array_equal(x, rx[order])
    np.testing.assert_array_equal(y, ry[order])
    again = concat(list(sampler.batches(4, shuffle=True, seed=11)))
    assert again[2] == keys
    assert concat(list(sampler.batches(4, shuffle=True, seed=12)))[2] != keys


def test_batch_sizes_and_drop_last() -> None:
    sampler = TSSampler(market(), start=pd.Timestamp(DAYS[0]), end=pd.Timestamp(DAYS[9]), step_len=3)
    n = len(sampler)
    assert n == 40 - sum(len(v) for v in ABSENT.values())
    assert [len(b.index) for b in sampler.batches(8)] == [8] * (n // 8) + ([n % 8] if n % 8 else [])
    assert [len(b.index) for b in sampler.batches(8, drop_last=True)] == [8] * (n // 8)
    with pytest.raises(ConfigError, match=r"batch_size=0"):
        next(sampler.batches(0))
    with pytest.raises(ConfigError, match=r"step_len=0"):
        TSSampler(market(), start=pd.Timestamp(DAYS[0]), end=pd.Timestamp(DAYS[9]), step_len=0)


@pytest.mark.parametrize("seed", range(4))
def test_random_markets_match_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2021-03-01", periods=25)
    records = [
        (d.strftime("%Y-%m-%d"), f"S{i}", list(rng.normal(size=3)))
        for d in days
        for i in range(6)
        if rng.random() > 0.3
    ]
    frame = rows(records, [("feature", "a"), ("feature", "b"), ("label", "y")])
    start, end = days[rng.integers(0, 10)].strftime("%Y-%m-%d"), days[rng.integers(12, 25)].strftime("%Y-%m-%d")
    step_len = int(rng.integers(1, 12))
    sampler = TSSampler(frame, start=pd.Timestamp(start), end=pd.Timestamp(end), step_len=step_len)
    x, y, keys = concat(list(sampler.batches(7)))
    rx, ry, rkeys = reference(frame, start, end, step_len)
    assert keys == rkeys
    np.testing.assert_array_equal(x, rx)
    np.testing.assert_array_equal(y, ry)
