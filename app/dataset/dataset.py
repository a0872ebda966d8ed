"""Named date segments (train / valid / test ...) over :class:`ProcessedViews`, as Qlib's ``DatasetH``.

Qlib's convention, kept here: models train and validate on the ``learn`` view and predict on the ``infer``
view; the evaluation label is read from ``raw``. :class:`TSDataset` adds Qlib's ``TSDatasetH`` windows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import pandas as pd

from app.core.errors import ConfigError, EmptySegmentError, UnknownSegmentError
from app.dataset.cache import FeatureCache
from app.dataset.timeseries import TSSampler
from app.dataset.views import ProcessedViews, ViewName

ColSet = str | Sequence[str]
# Window samplers of cached views, shared by the jobs of a process (a sweep builds each once; they are read-only).
MAX_SAMPLERS = 8
_SAMPLERS: dict[tuple[str, str, str, str, int], TSSampler] = {}
DEFAULT_STEP_LEN = 30  # Qlib's TSDatasetH.DEFAULT_STEP_LEN


@dataclass(frozen=True)
class Segment:
    """A named, inclusive date range."""

    name: str
    start: pd.Timestamp
    end: pd.Timestamp

    def __str__(self) -> str:
        return f"segments.{self.name} {self.start.date()}..{self.end.date()}"


class Dataset:
    """Segments of the raw / infer / learn views.

    ``segments`` maps a name to ``(start, end)`` (inclusive dates). Segments need not be ordered or disjoint.
    ``cache`` and ``fingerprint`` (a digest of everything the views depend on) are set when the views came
    through a feature cache, so a model may keep what it derives from them (LightGBM's binned data) beside it.

    Raises:
        ConfigError: a segment is not a pair of dates, or its start is after its end.
        EmptySegmentError: a segment has no rows in the raw data.
    """

    def __init__(
        self,
        views: ProcessedViews,
        segments: Mapping[str, Sequence[str | pd.Timestamp]],
        *,
        cache: FeatureCache | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.views = views
        keep = cache is not None and bool(fingerprint)
        self.cache: FeatureCache | None = cache if keep else None
        self.fingerprint: str | None = fingerprint if keep else None
        self.segments: dict[str, Segment] = {name: parse_segment(name, span) for name, span in segments.items()}
        dates = views.raw.index.get_level_values("datetime").unique()
        for seg in self.segments.values():
            lo, hi = dates.searchsorted(seg.start, side="left"), dates.searchsorted(seg.end, side="right")
            if lo >= hi:
                span = (str(dates[0].date()), str(dates[-1].date())) if len(dates) else ("nothing", "nothing")
                raise EmptySegmentError(seg.name, str(seg.start.date()), str(seg.end.date()), *span)

    def segment(self, name: str) -> Segment:
        """The segment called ``name``.

        Raises:
            UnknownSegmentError: no such segment.
        """
        try:
            return self.segments[name]
        except KeyError:
            raise UnknownSegmentError(name, list(self.segments)) from None

    def prepare(self, segment: str, col_set: ColSet = "feature", view: ViewName = "infer") -> pd.DataFrame:
        """Rows of ``view`` in ``segment``.

        ``col_set`` is a column group (``"feature"``, ``"label"``: plain column names, as Qlib returns them) or
        a list of groups (two-level columns kept).

        Raises:
            UnknownSegmentError: no such segment.
            ConfigError: an unknown view or column group.
        """
        seg = self.segment(segment)
        frame = self.views.get(view)
        groups = list(dict.fromkeys(frame.columns.get_level_values(0)))
        wanted = [col_set] if isinstance(col_set, str) else list(col_set)
        missing = [g for g in wanted if g not in groups]
        if missing or not wanted:
            raise ConfigError(
                f"col_set={col_set!r}: the {view} view has column groups {', '.join(map(repr, groups))}; "
                "pass one of them or a list of them."
            )
        lo, hi = frame.index.slice_locs(seg.start, seg.end)
        rows = frame.iloc[lo:hi]
        if isinstance(col_set, str):
            return cast(pd.DataFrame, rows[col_set])
        return rows.loc[:, rows.columns.get_level_values(0).isin(wanted)]

    def prepare_ts(self, segment: str, *, step_len: int, view: ViewName = "infer") -> TSSampler:
        """Windows of ``step_len`` dates for every row of ``view`` in ``segment`` (see :class:`TSSampler`).

        Raises:
            UnknownSegmentError: no such segment.
            ConfigError: an unknown view, or ``step_len`` < 1.
        """
        seg = self.segment(segment)
        if self.fingerprint is None:
            return TSSampler(self.views.get(view), start=seg.start, end=seg.end, step_len=step_len)
        key = (self.fingerprint, view, str(seg.start), str(seg.end), int(step_len))
        sampler = _SAMPLERS.pop(key, None)
        if sampler is None:
            sampler = TSSampler(self.views.get(view), start=seg.start, end=seg.end, step_len=step_len)
        _SAMPLERS[key] = sampler  # most recent last
        while len(_SAMPLERS) > MAX_SAMPLERS:
            _SAMPLERS.pop(next(iter(_SAMPLERS)))
        return sampler


class TSDataset(Dataset):
    """A :class:`Dataset` whose time-series windows default to ``step_len`` dates (Qlib's ``TSDatasetH``)."""

    def __init__(
        self,
        views: ProcessedViews,
        segments: Mapping[str, Sequence[str | pd.Timestamp]],
        *,
        step_len: int = DEFAULT_STEP_LEN,
        cache: FeatureCache | None = None,
        fingerprint: str | None = None,
    ) -> None:
        if int(step_len) < 1:
            raise ConfigError(f"step_len={step_len} must be a whole number >= 1 (Qlib's default is 30).")
        super().__init__(views, segments, cache=cache, fingerprint=fingerprint)
        self.step_len = int(step_len)

    def prepare_ts(self, segment: str, *, step_len: int | None = None, view: ViewName = "infer") -> TSSampler:
        """As :meth:`Dataset.prepare_ts`, with the dataset's ``step_len`` unless one is given."""
        return super().prepare_ts(segment, step_len=self.step_len if step_len is None else step_len, view=view)


def parse_segment(name: str, span: Sequence[str | pd.Timestamp]) -> Segment:
    """``segments.<name>: [start, end]`` as a :class:`Segment`.

    Raises:
        ConfigError: not two dates, or start after end.
    """
    if isinstance(span, str) or len(span) != 2:
        raise ConfigError(f"segments.{name}={span!r} must be a pair [start, end] of dates (YYYY-MM-DD).")
    try:
        start, end = pd.Timestamp(span[0]), pd.Timestamp(span[1])
    except (ValueError, TypeError):
        raise ConfigError(f"segments.{name}={list(span)!r}: not a pair of dates; use YYYY-MM-DD.") from None
    if pd.isna(start) or pd.isna(end):
        raise ConfigError(f"segments.{name}={list(span)!r}: both bounds are required dates (YYYY-MM-DD).")
    if start > end:
        raise ConfigError(f"segments.{name} starts {start.date()} after it ends {end.date()}; swap the two dates.")
    return Segment(name, start, end)
