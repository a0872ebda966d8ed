"""Time-series samples as Qlib's ``TSDataSampler`` builds them, streamed in batches.

A sample is one row of a view in the segment; its window is the ``step_len`` dates of the view ending at
the sample's date (dates before the segment start included), for the sample's instrument. A date on which the
instrument has no row is filled from the nearest earlier row in the window, and leading gaps (including
dates before the data starts) from the first row in the window: Qlib's ``fillna_type="ffill+bfill"``, which
fills missing *rows*; NaN values inside a present row stay NaN.

Memory: the view's rows of the needed dates are copied once into a ``[rows + 1, features]`` float32 array
(the last row all NaN) with a ``[dates × instruments]`` row-number lookup; windows are gathered per batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

from app.core.errors import ConfigError


@dataclass(frozen=True, eq=False)
class TSBatch:
    """One batch: ``x`` float32 ``[samples, step_len, features]`` (oldest step first, the sample's date
    last), ``y`` float32 ``[samples, labels]`` on the sample's date, ``index`` the samples'
    ``(datetime, instrument)``."""

    x: np.ndarray
    y: np.ndarray
    index: pd.MultiIndex


class TSSampler:
    """Windows of ``step_len`` rows for every row of ``frame`` dated ``start..end``.

    ``frame`` is a view (index ``(datetime, instrument)`` sorted, columns ``(group, name)``) with a
    ``feature`` group; the ``label`` group, when present, gives ``y``. Samples are ordered by
    ``(datetime, instrument)``.

    Raises:
        ConfigError: ``step_len`` < 1, or ``frame`` has no ``feature`` column group.
    """

    def __init__(self, frame: pd.DataFrame, *, start: pd.Timestamp, end: pd.Timestamp, step_len: int) -> None:
        if int(step_len) < 1:
            raise ConfigError(f"step_len={step_len} must be a whole number >= 1 (Qlib's default is 30).")
        groups = list(dict.fromkeys(frame.columns.get_level_values(0)))
        if "feature" not in groups:
            raise ConfigError(f"the view has no 'feature' column group (groups: {groups}); windows need features.")
        self.step_len = int(step_len)
        dates = frame.index.get_level_values("datetime")
        calendar = dates.unique()  # sorted: the frame is
        s, e = calendar.searchsorted(start, side="left"), calendar.searchsorted(end, side="right")
        lo = max(0, int(s) - self.step_len + 1)
        calendar = calendar[lo:e]
        r0, r1 = (0, 0) if len(calendar) == 0 else frame.index.slice_locs(calendar[0], calendar[-1])
        rows = frame.iloc[r0:r1]
        self.feature_names: tuple[str, ...] = tuple(rows["feature"].columns)
        self.label_names: tuple[str, ...] = tuple(rows["label"].columns) if "label" in groups else ()
        n_rows = len(rows)
        self._features = np.full((n_rows + 1, len(self.feature_names)), np.nan, dtype=np.float32)
        self._features[:n_rows] = rows["feature"].to_numpy(dtype=np.float32)
        labels = rows["label"].to_numpy(dtype=np.float32) if self.label_names else np.empty((n_rows, 0), np.float32)
        row_dates = rows.index.get_level_values("datetime")
        self._t = np.asarray(calendar.searchsorted(row_dates), dtype=np.int64)
        inst_codes, instruments = pd.factorize(rows.index.get_level_values("instrument"), sort=True)
        self._n = np.asarray(inst_codes, dtype=np.int64)
        self._lookup = np.full((len(calendar), len(instruments)), -1, dtype=np.int64)
        self._lookup[self._t, self._n] = np.arange(n_rows)
        first = int(np.searchsorted(self._t, int(s) - lo, side="left"))  # rows are date-sorted
        self._rows = np.arange(first, n_rows)
        self._labels = labels
        self.index = cast(pd.MultiIndex, rows.index[first:])

    def __len__(self) -> int:
        return len(self._rows)

    def take(self, samples: np.ndarray) -> TSBatch:
        """The batch of the given sample numbers (0 .. len-1), in that order."""
        ids = np.asarray(samples, dtype=np.int64)
        rows = self._rows[ids]
        t, n = self._t[rows], self._n[rows]
        steps = t[:, None] + np.arange(1 - self.step_len, 1)[None, :]
        pos = np.where(steps >= 0, self._lookup[np.clip(steps, 0, None), n[:, None]], -1)
        present = pos >= 0
        step_no = np.broadcast_to(np.arange(self.step_len), pos.shape)
        last_seen = np.maximum.accumulate(np.where(present, step_no, -1), axis=1)  # forward fill
        first_seen = np.argmax(present, axis=1)[:, None]  # the sample's own row is always present
        source = np.where(last_seen >= 0, last_seen, first_seen)  # then back fill the leading gap
        filled = np.take_along_axis(pos, source, axis=1)
        x = self._features[np.where(filled >= 0, filled, len(self._features) - 1)]
        return TSBatch(x=x, y=self._labels[rows], index=self.index[ids])

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, drop_last: bool = False
    ) -> Iterator[TSBatch]:
        """Every sample once, ``batch_size`` at a time; shuffled with ``seed`` when ``shuffle``.

        ``drop_last`` skips a final short batch (Qlib's GRU trains and validates with it on).

        Raises:
            ConfigError: ``batch_size`` < 1.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1.")
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for i in range(0, stop, batch_size):
            yield self.take(order[i : i + batch_size])
