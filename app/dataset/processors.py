"""Qlib 0.9.7's data processors (``qlib/data/dataset/processor.py``) with the same maths.

Every processor takes a frame indexed ``(datetime, instrument)`` with two-level columns ``(group, name)``
and returns a new frame; the input is never modified. Arithmetic runs in the columns' dtype where Qlib's does
(float32 for handler output: the fitted statistics of ``ZScoreNorm``/``RobustZScoreNorm``, ``CSZScoreNorm``,
``ProcessInf`` and ``CSZFillna`` are float32 as numpy's and pandas' are on float32 input), so those results are
Qlib's bit for bit.
``CSRankNorm`` ranks in float64 and casts back to the columns' dtype: Qlib leaves its columns float64.

Learnable processors (:class:`ZScoreNorm`, :class:`RobustZScoreNorm`) keep statistics from ``fit(df)``,
restricted to their own ``fit_start_time..fit_end_time`` when set; the others are stateless and their
``fit`` does nothing. ``is_for_infer()`` is False only for :class:`DropnaLabel`, as in Qlib: a label
normaliser is learn-only because it is listed among the learn processors, not by a flag.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from app.core.errors import ConfigError, DataError, DateRangeError, NotFittedError
from app.dataset import crosssection as cs

log = logging.getLogger(__name__)

FieldsGroup = str | Sequence[str] | None
DateLike = str | pd.Timestamp | None

EPS = 1e-12  # qlib.constant.EPS, added to the MAD before scaling
MAD_TO_STD = 1.4826  # MAD of a normal sample times this estimates its standard deviation
RANK_SCALE = 3.46  # 1 / std of a uniform(0, 1) rank, rounded as Qlib does
CLIP = 3.0


@runtime_checkable
class Processor(Protocol):
    """What :class:`app.dataset.views.ProcessedViews` needs of a processor."""

    def fit(self, df: pd.DataFrame) -> None:
        """Learn parameters from ``df`` (the output of the previous processor)."""

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Return the processed frame; ``df`` itself is left unchanged."""

    def is_for_infer(self) -> bool:
        """Whether the processor may run on inference data (False: learn processors only)."""


class StatelessProcessor:
    """Base of the processors that learn nothing: ``fit`` is a no-op."""

    def fit(self, df: pd.DataFrame) -> None:
        """Nothing to learn."""

    def is_for_infer(self) -> bool:
        """Usable for inference."""
        return True


@dataclass(kw_only=True, eq=False)
class WindowedProcessor:
    """Base of the learnable processors: statistics come from rows in ``fit_start_time..fit_end_time``.

    ``None`` bounds are open. :meth:`app.dataset.views.ProcessedViews.build` already hands ``fit`` only the
    rows of its fit window; a processor's own bounds may narrow that window but not widen it.
    """

    fields_group: FieldsGroup = None
    fit_start_time: DateLike = None
    fit_end_time: DateLike = None
    _cols: pd.Index | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.fields_group = _normalise_group(self.fields_group)
        start = _timestamp(self.fit_start_time, f"{type(self).__name__}.fit_start_time")
        end = _timestamp(self.fit_end_time, f"{type(self).__name__}.fit_end_time")
        if start is not None and end is not None and start > end:
            raise ConfigError(
                f"{type(self).__name__}: fit_start_time {start.date()} is after fit_end_time {end.date()}; swap them."
            )
        self.fit_start_time, self.fit_end_time = start, end

    def is_for_infer(self) -> bool:
        """Usable for inference."""
        return True

    def _fit_values(self, df: pd.DataFrame) -> np.ndarray:
        """Record the columns and return their values (float32 for float32 columns) on the fit window's rows."""
        self._cols = group_columns(df, self.fields_group)
        dates = _dates(df)
        keep = np.ones(len(df), dtype=bool)
        if self.fit_start_time is not None:
            keep &= dates >= self.fit_start_time
        if self.fit_end_time is not None:
            keep &= dates <= self.fit_end_time
        if not keep.any():
            span = f"{dates.min().date()}..{dates.max().date()}" if len(dates) else "nothing (empty frame)"
            raise DateRangeError(
                f"{type(self).__name__}: the fit window {_fmt(self.fit_start_time)}..{_fmt(self.fit_end_time)} "
                f"has no rows; the data runs {span}. Set fit_start_time/fit_end_time inside the data."
            )
        return _values(df.loc[keep], self._cols, native=True)

    def _call_values(self, df: pd.DataFrame) -> tuple[pd.Index, np.ndarray]:
        if self._cols is None:
            raise NotFittedError(
                f"{type(self).__name__} was applied before fit(df); fit it on the training window first "
                "(ProcessedViews.build does this)."
            )
        missing = [c for c in self._cols if c not in df.columns]
        if missing:
            raise ConfigError(
                f"{type(self).__name__}: columns seen by fit() are missing now: {_names(missing)}. "
                "Fit and apply the processor on frames with the same columns."
            )
        return self._cols, _values(df, self._cols, native=True)


@dataclass(kw_only=True, eq=False)
class ZScoreNorm(WindowedProcessor):
    """``(x - mean) / std`` per column with the fit window's mean and std (ddof=0, NaN skipped).

    Columns whose fitted std is exactly 0 are left untouched (Qlib sets their mean 0 and std 1).
    ``fields_group=None`` means every column, the label included, as in Qlib.
    """

    _mean: np.ndarray | None = field(default=None, init=False, repr=False)
    _std: np.ndarray | None = field(default=None, init=False, repr=False)

    def fit(self, df: pd.DataFrame) -> None:
        """Learn each column's mean and std on the fit window."""
        x = self._fit_values(df)
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: NaN stats, NaN output, as in Qlib
            mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
        ignore = std == 0
        mean[ignore], std[ignore] = 0.0, 1.0
        self._mean, self._std = mean, std

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Normalise the fitted columns."""
        cols, x = self._call_values(df)
        assert self._mean is not None and self._std is not None
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: NaN, as in Qlib
            z = (x - self._mean) / self._std
        return _with_values(df, cols, z)


@dataclass(kw_only=True, eq=False)
class RobustZScoreNorm(WindowedProcessor):
    """``(x - median) / (1.4826 * (MAD + 1e-12))`` per column with the fit window's statistics.

    ``clip_outlier`` clips the result to ``[-3, 3]``. A column whose MAD is 0 is divided by
    ``1.4826e-12`` (no std-0 exemption here, unlike :class:`ZScoreNorm`), as in Qlib.
    """

    clip_outlier: bool = True
    _median: np.ndarray | None = field(default=None, init=False, repr=False)
    _scale: np.ndarray | None = field(default=None, init=False, repr=False)

    def fit(self, df: pd.DataFrame) -> None:
        """Learn each column's median and scaled MAD on the fit window."""
        x = self._fit_values(df)
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(x, axis=0)
            mad = np.nanmedian(np.abs(x - median), axis=0)
        self._median, self._scale = median, (mad + EPS) * MAD_TO_STD

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Normalise the fitted columns (and clip when ``clip_outlier``)."""
        cols, x = self._call_values(df)
        assert self._median is not None and self._scale is not None
        with np.errstate(invalid="ignore", over="ignore"):
            z = (x - self._median) / self._scale
        if self.clip_outlier:
            z = np.clip(z, -CLIP, CLIP)
        return _with_values(df, cols, z)


@dataclass(kw_only=True, eq=False)
class CSZScoreNorm(StatelessProcessor):
    """Per date and column: ``zscore`` = ``(x - mean) / std`` with ddof=1 (pandas), NaN skipped;
    ``robust`` = ``(x - median) / MAD / 1.4826`` clipped to ``[-3, 3]`` (no epsilon, as in Qlib).

    A date with one valid value gets NaN (std undefined); a zero spread gives ±inf, or NaN for 0/0.
    """

    fields_group: FieldsGroup = None
    method: Literal["zscore", "robust"] = "zscore"

    def __post_init__(self) -> None:
        self.fields_group = _normalise_group(self.fields_group)
        if self.method not in ("zscore", "robust"):
            raise ConfigError(f"CSZScoreNorm.method={self.method!r} is not supported; use 'zscore' or 'robust'.")

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Normalise each date's cross-section."""
        cols = group_columns(df, self.fields_group)
        if self.method == "zscore":
            out = cs.per_date(_dates(df), _values(df, cols, native=True), cs.zscore)
        else:
            out = cs.per_date(
                _dates(df), _values(df, cols, native=True), lambda x: cs.robust_zscore(x, MAD_TO_STD, CLIP)
            )
        return _with_values(df, cols, out)


@dataclass(kw_only=True, eq=False)
class CSRankNorm(StatelessProcessor):
    """Per date and column: ``(rank_pct - 0.5) * 3.46``; pandas ``rank(pct=True)``, ties averaged, NaN kept
    (and not counted in the percentile's denominator)."""

    fields_group: FieldsGroup = None

    def __post_init__(self) -> None:
        self.fields_group = _normalise_group(self.fields_group)

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Rank each date's cross-section."""
        cols = group_columns(df, self.fields_group)
        ranks = cs.per_date(_dates(df), _values(df, cols), cs.rank_pct)
        return _with_values(df, cols, (ranks - 0.5) * RANK_SCALE)


@dataclass(kw_only=True, eq=False)
class ProcessInf(StatelessProcessor):
    """Per date and column, replace ±inf with the mean of that column's finite values on that date.

    Applies to every column (label included) as in Qlib; an all-inf/NaN date-column gets NaN.
    """

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Replace infinities."""
        values = _values(df, df.columns, native=True)
        if not np.isinf(values).any():
            return df.copy()
        return _with_values(df, df.columns, cs.per_date(_dates(df), values, cs.fill_inf_with_finite_mean))


@dataclass(kw_only=True, eq=False)
class Fillna(StatelessProcessor):
    """Replace NaN with ``fill_value`` in ``fields_group`` (``None``: every column, the label included)."""

    fields_group: FieldsGroup = None
    fill_value: float = 0.0

    def __post_init__(self) -> None:
        self.fields_group = _normalise_group(self.fields_group)

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Fill missing values."""
        if self.fields_group is None:
            return df.fillna(self.fill_value)
        cols = group_columns(df, self.fields_group)
        out = df.copy()
        out[cols] = df[cols].fillna(self.fill_value)
        return out


@dataclass(kw_only=True, eq=False)
class DropnaLabel(StatelessProcessor):
    """Drop rows whose label (any column of ``fields_group``) is NaN. Learn-only: not usable for inference."""

    fields_group: FieldsGroup = "label"

    def __post_init__(self) -> None:
        self.fields_group = _normalise_group(self.fields_group)

    def is_for_infer(self) -> bool:
        """False: dropping rows by label is impossible when the label is unknown."""
        return False

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Rows with a complete label."""
        return df.dropna(subset=list(group_columns(df, self.fields_group)))


@dataclass(kw_only=True, eq=False)
class FilterCol(StatelessProcessor):
    """Keep the ``col_list`` columns of ``fields_group`` and every column of the other groups.

    Columns keep the frame's order (not ``col_list``'s), as in Qlib. Unlike Qlib, a name in ``col_list``
    that is not in the group is an error instead of being ignored.

    Raises (on call):
        ConfigError: a name in ``col_list`` is not a column of ``fields_group``.
    """

    fields_group: str = "feature"
    col_list: Sequence[str] = ()

    def __post_init__(self) -> None:
        self.col_list = tuple(str(c) for c in self.col_list)

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """The frame with only the listed columns of the group."""
        group = group_columns(df, self.fields_group)
        present = set(group.get_level_values(-1))
        unknown = [c for c in self.col_list if c not in present]
        if unknown:
            raise ConfigError(
                f"FilterCol.col_list names columns that are not in group {self.fields_group!r}: {_names(unknown)}. "
                f"Check the spelling against the handler's columns ({len(present)} in that group)."
            )
        in_group = df.columns.isin(group)
        keep = ~in_group | df.columns.get_level_values(-1).isin(self.col_list)
        return df.loc[:, keep]


@dataclass(kw_only=True, eq=False)
class DropCol(StatelessProcessor):
    """Drop every column whose name (the second level) is in ``col_list``, in any group, the label's included.

    The other columns keep their order. As :class:`FilterCol`, and unlike Qlib, a name that is no column of
    the frame is an error instead of being ignored.

    Raises (on call):
        ConfigError: a name in ``col_list`` is not a column of the frame.
    """

    col_list: Sequence[str] = ()

    def __post_init__(self) -> None:
        self.col_list = tuple(str(c) for c in self.col_list)

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """The frame without the listed columns."""
        names = df.columns.get_level_values(-1)
        unknown = [c for c in self.col_list if c not in set(names)]
        if unknown:
            raise ConfigError(
                f"DropCol.col_list names columns that are not in the frame: {_names(unknown)}. "
                f"Check the spelling against the handler's columns ({len(df.columns)} of them)."
            )
        return df.loc[:, ~names.isin(self.col_list)]


@dataclass(kw_only=True, eq=False)
class DropnaProcessor(StatelessProcessor):
    """Drop the rows with a NaN in any column of ``fields_group`` (``None``: every column, the label included).

    ±inf is a value, not missing: such rows stay. Usable for inference (only :class:`DropnaLabel` is not).
    """

    fields_group: FieldsGroup = None

    def __post_init__(self) -> None:
        self.fields_group = _normalise_group(self.fields_group)

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Rows complete in the group."""
        return df.dropna(subset=list(group_columns(df, self.fields_group)))


@dataclass(kw_only=True, eq=False)
class CSZFillna(StatelessProcessor):
    """Per date and column of ``fields_group`` (``None``: every column), replace NaN with the mean of that
    date's other values of the column.

    The mean is pandas' ``mean()`` in the column's dtype (float32 sum over a float32 count, NaN skipped), so the
    filled value is Qlib's to the bit. ±inf counts as a value: a date-column with +inf fills NaN with +inf, one
    with both +inf and -inf with NaN; a date-column without any value stays NaN. Only NaN cells change.
    """

    fields_group: FieldsGroup = None

    def __post_init__(self) -> None:
        self.fields_group = _normalise_group(self.fields_group)

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Fill each date's gaps with its cross-sectional mean."""
        cols = group_columns(df, self.fields_group)
        values = _values(df, cols, native=True)
        if not np.isnan(values).any():
            return df.copy()
        return _with_values(df, cols, cs.per_date(_dates(df), values, _fill_nan_with_mean))


def _fill_nan_with_mean(x: np.ndarray) -> np.ndarray:
    """``x`` with each column's NaN replaced by the mean of its other values, as pandas' ``mean`` computes it:
    NaN summed as 0 in ``x``'s dtype, one contiguous (pairwise) run per column, over a count in that dtype."""
    missing = np.isnan(x)
    if not missing.any():
        return x
    filled = np.asfortranarray(np.where(missing, x.dtype.type(0), x))
    count = np.count_nonzero(~missing, axis=0).astype(x.dtype)
    mean = filled.sum(axis=0, dtype=x.dtype) / count
    return np.where(missing, mean, x)


def group_columns(df: pd.DataFrame, fields_group: FieldsGroup) -> pd.Index:
    """The columns of ``df`` in ``fields_group`` (a group name or a list of them; ``None``: all), frame order.

    Raises:
        ConfigError: a group is not a first-level column label of ``df``.
    """
    if fields_group is None:
        return df.columns
    groups = [fields_group] if isinstance(fields_group, str) else list(fields_group)
    if not isinstance(df.columns, pd.MultiIndex):
        raise DataError(
            f"the frame's columns are not (group, name) pairs, so fields_group={groups} cannot be selected; "
            "the handler must give two-level columns such as ('feature', 'KMID')."
        )
    have = df.columns.get_level_values(0)
    known = list(dict.fromkeys(have))
    missing = [g for g in groups if g not in known]
    if missing:
        raise ConfigError(
            f"fields_group {', '.join(map(repr, missing))} is not a column group of the frame; "
            f"the groups are {', '.join(map(repr, known))}."
        )
    return df.columns[have.isin(groups)]


def _normalise_group(fields_group: FieldsGroup) -> FieldsGroup:
    # Hydra hands lists over as ListConfig; keep a plain tuple so repr and equality stay simple.
    if fields_group is None or isinstance(fields_group, str):
        return fields_group
    return tuple(str(g) for g in fields_group)


def _dates(df: pd.DataFrame) -> pd.Index:
    if "datetime" not in (df.index.names or []):
        raise DataError(
            f"the frame's index has levels {list(df.index.names)}; processors need a 'datetime' level "
            "(index (datetime, instrument), as the handler builds it)."
        )
    return df.index.get_level_values("datetime")


def _values(df: pd.DataFrame, cols: pd.Index, native: bool = False) -> np.ndarray:
    """float64 ``[rows, len(cols)]``; column-major like pandas' own blocks, so no transposing copy.

    ``native``: float32 when every column is float32 (for kernels that reproduce pandas' float32 arithmetic).
    """
    sub = df if cols.equals(df.columns) else df.loc[:, df.columns.isin(cols)]
    if not sub.columns.equals(cols):  # same columns, another order than at fit time
        sub = sub[cols]
    dtype = np.float32 if native and all(t == np.float32 for t in sub.dtypes) else np.float64
    return np.asarray(sub.to_numpy()).astype(dtype, order="K")


def _with_values(df: pd.DataFrame, cols: pd.Index, values: np.ndarray) -> pd.DataFrame:
    """``df`` with ``cols`` replaced by ``values``, cast back to the columns' (floating) dtype."""
    mask = df.columns.isin(cols)
    target = df.columns[mask]
    if not target.equals(cols):
        values = values[:, cols.get_indexer(target)]
    dtypes = list(df.dtypes[mask])
    dtype = np.result_type(*dtypes) if dtypes else np.dtype(np.float64)
    if not np.issubdtype(dtype, np.floating):
        dtype = np.dtype(np.float64)
    cast = values.astype(dtype, order="K")
    if mask.all():
        return pd.DataFrame(cast, index=df.index, columns=df.columns, copy=False)  # cast is a fresh array
    out = df.copy()
    out.loc[:, mask] = cast
    return out


def _timestamp(value: DateLike, key: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        return pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ConfigError(f"{key}={value!r} is not a date; use YYYY-MM-DD.") from None


def _fmt(value: DateLike) -> str:
    return "open" if value is None else str(pd.Timestamp(value).date())


def _names(cols: Sequence[object]) -> str:
    shown = ", ".join(str(c) for c in cols[:10])
    return shown + (f" and {len(cols) - 10} more" if len(cols) > 10 else "")
