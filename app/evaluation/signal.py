"""Signal analysis as Qlib's ``SigAnaRecord`` computes it: daily IC, Rank IC, ICIR and long-short returns.

Semantics (``qlib.contrib.eva.alpha`` 0.9.7 on pandas 3.1 / scipy 1.17), vectorised over all dates where the
arithmetic allows:

* ``pred`` and ``label`` are outer-aligned on ``(datetime, instrument)``; each date of either is one row of
  :func:`daily_ic`.
* IC = Pearson, Rank IC = Spearman (average ranks for ties) over the rows of that date where both values are
  present (in instrument order), each date computed with the very operations pandas' ``Series.corr`` runs, so the
  daily values are Qlib's bit for bit: Pearson is pandas' own ``_pearson_corr`` (deviations scaled by their
  largest magnitude, three dot products, clipped to ±1; NaN for fewer than two pairs or a side whose deviations
  are all exactly 0), Spearman is ``scipy.stats.spearmanr`` (NaN for fewer than two pairs or a constant side,
  else ``np.corrcoef`` of the average ranks). ICIR = mean / std (ddof 1) over the non-NaN days, not annualised.
* Long-short (``calc_long_short_return``): per date, ``N = int(0.2 * rows)`` where *rows* counts every aligned
  row of the date (NaN ones included); the N highest and the N lowest non-NaN predictions (ties resolved by
  instrument order, as ``nlargest(keep="first")`` on a sorted frame) give ``(mean label top − mean label
  bottom) / 2``; ``long_avg`` is the date's mean label. Annualised with 252.
* Quantile returns (the quantile plot's table): rows where both values are present, per date ranked by score
  (``rank(pct=True, method="first")``: ties in row order), group ``clip(ceil(pct * groups), 1, groups)``, mean
  label per date and group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from app.core.errors import DataError

ANN_SCALER = 252
QUANTILE = 0.2


@dataclass(frozen=True)
class _Aligned:
    """Outer-aligned rows sorted by (datetime, instrument); ``code`` numbers the dates 0..len(dates)-1."""

    dates: pd.DatetimeIndex
    code: np.ndarray
    pred: np.ndarray
    label: np.ndarray


def daily_ic(pred: pd.Series, label: pd.Series) -> pd.DataFrame:
    """Per-date Pearson IC and Spearman Rank IC of ``pred`` against ``label`` (columns ``ic``, ``rank_ic``).

    Raises:
        DataError: an input is not indexed by ``(datetime, instrument)``.
    """
    rows = _align(pred, label)
    both = ~np.isnan(rows.pred) & ~np.isnan(rows.label)
    code, x, y = rows.code[both], rows.pred[both], rows.label[both]
    ic, rank_ic = np.full(len(rows.dates), np.nan), np.full(len(rows.dates), np.nan)
    if len(code):
        rank_x, rank_y = _average_ranks(code, x), _average_ranks(code, y)
        segments, starts = np.unique(code, return_index=True)
        bounds = np.append(starts, len(code))
        with np.errstate(invalid="ignore", divide="ignore"):
            for k, segment in enumerate(segments):
                a, b = bounds[k], bounds[k + 1]
                ic[segment] = _pandas_pearson(x[a:b], y[a:b])
                rank_ic[segment] = _scipy_spearman(x[a:b], y[a:b], rank_x[a:b], rank_y[a:b])
    return pd.DataFrame({"ic": ic, "rank_ic": rank_ic}, index=rows.dates)


def long_short_returns(pred: pd.Series, label: pd.Series, quantile: float = QUANTILE) -> pd.DataFrame:
    """Per-date long-short return and long-average return (columns ``long_short``, ``long_avg``).

    Raises:
        DataError: an input is not indexed by ``(datetime, instrument)``.
    """
    rows = _align(pred, label)
    n_dates = len(rows.dates)
    count = np.bincount(rows.code, minlength=n_dates)
    take = (count * quantile).astype(np.int64)  # int(len(x) * quantile), NaN rows counted
    top = _quantile_mean(rows, take, descending=True)
    bottom = _quantile_mean(rows, take, descending=False)
    avg = _segment_mean(rows.code, rows.label, n_dates)
    return pd.DataFrame({"long_short": (top - bottom) / 2, "long_avg": avg}, index=rows.dates)


def signal_metrics(
    pred: pd.Series, label: pd.Series, long_short: bool = False, ic: pd.DataFrame | None = None
) -> dict[str, float]:
    """``IC``, ``ICIR``, ``Rank IC``, ``Rank ICIR`` (and the four ``Long-…`` metrics) as SigAnaRecord logs them.

    ``ic`` is ``daily_ic(pred, label)`` when the caller has it already.

    Raises:
        DataError: an input is not indexed by ``(datetime, instrument)``.
    """
    if ic is None:
        ic = daily_ic(pred, label)
    metrics = {
        "IC": float(ic["ic"].mean()),
        "ICIR": float(ic["ic"].mean() / ic["ic"].std()),
        "Rank IC": float(ic["rank_ic"].mean()),
        "Rank ICIR": float(ic["rank_ic"].mean() / ic["rank_ic"].std()),
    }
    if long_short:
        ls = long_short_returns(pred, label)
        for name, col in (("Long-Short", "long_short"), ("Long-Avg", "long_avg")):
            r = ls[col]
            metrics[f"{name} Ann Return"] = float(r.mean() * ANN_SCALER)
            metrics[f"{name} Ann Sharpe"] = float(r.mean() / r.std() * ANN_SCALER**0.5)
    return metrics


def quantile_returns(pred: pd.Series, label: pd.Series, groups: int = 5) -> pd.DataFrame:
    """Mean label per score quantile group per day (group 1 = lowest scores); columns ``Group1..GroupN``.

    Only groups that occur on some day are columns; a group empty on a day is NaN there.
    """
    frame = pd.DataFrame({"score": pred, "label": label}).dropna()  # the row order breaks score ties
    codes, dates = pd.factorize(frame.index.get_level_values("datetime"), sort=True)
    code = codes.astype(np.int64)
    n_dates = len(dates)
    order = np.lexsort((frame["score"].to_numpy(dtype=np.float64), code))  # stable: ties keep row order
    sorted_code = code[order]
    first = np.searchsorted(sorted_code, np.arange(n_dates), side="left")
    ranks = np.empty(len(frame), dtype=np.float64)
    ranks[order] = np.arange(1, len(frame) + 1) - first[sorted_code]
    count = np.bincount(code, minlength=n_dates)
    group = np.clip(np.ceil(ranks / count[code] * groups).astype(np.int64), 1, groups)
    # pandas' grouped mean (not bincount) so that a float32 label is averaged exactly as before, in float32
    means = frame["label"].groupby(code * groups + (group - 1)).mean()
    cells = means.index.to_numpy()
    present = np.unique(cells % groups)
    table = np.full((n_dates, len(present)), np.nan, dtype=means.to_numpy().dtype)
    table[cells // groups, np.searchsorted(present, cells % groups)] = means.to_numpy()
    index = pd.DatetimeIndex(dates, name="datetime")
    return pd.DataFrame(table, index=index, columns=[f"Group{g + 1}" for g in present])


def _align(pred: pd.Series, label: pd.Series) -> _Aligned:
    """Outer-join both series on (datetime, instrument), sorted, as flat float64 arrays."""
    frame = pd.DataFrame({"pred": _standard(pred, "pred"), "label": _standard(label, "label")}).sort_index()
    codes, dates = pd.factorize(frame.index.get_level_values("datetime"), sort=True)
    return _Aligned(
        dates=pd.DatetimeIndex(dates, name="datetime"),
        code=codes.astype(np.int64),
        pred=frame["pred"].to_numpy(dtype=np.float64, na_value=np.nan),
        label=frame["label"].to_numpy(dtype=np.float64, na_value=np.nan),
    )


def _standard(values: pd.Series | pd.DataFrame, name: str) -> pd.Series:
    """The first column of ``values`` indexed ``(datetime, instrument)`` in that order."""
    series = values.iloc[:, 0] if isinstance(values, pd.DataFrame) else values
    names = list(series.index.names)
    if not isinstance(series.index, pd.MultiIndex) or sorted(map(str, names)) != ["datetime", "instrument"]:
        raise DataError(
            f"{name} must be indexed by (datetime, instrument); got index levels {names}. "
            "Set the index with .set_index(['datetime', 'instrument'])."
        )
    if names[0] != "datetime":
        series = series.swaplevel()
    if series.index.has_duplicates:
        dup = series.index[series.index.duplicated()][0]
        raise DataError(f"{name} has more than one row for {dup[1]} on {dup[0]}; keep one value per day.")
    return series.astype(np.float64)


def _segment_sum(code: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(code, weights=values, minlength=n)


def _segment_mean(code: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    ok = ~np.isnan(values)
    count = np.bincount(code[ok], minlength=n)
    total = _segment_sum(code[ok], values[ok], n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _pandas_pearson(a: np.ndarray, b: np.ndarray) -> float:
    """pandas 3.1's ``nanops._pearson_corr`` (what ``Series.corr`` runs), step for step, on contiguous float64."""
    if len(a) < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    a_scale, b_scale = np.max(np.abs(a)), np.max(np.abs(b))
    if a_scale == 0 or b_scale == 0:
        return math.nan
    a, b = a / a_scale, b / b_scale
    fact = len(a) - 1
    divisor = np.sqrt(np.dot(a, a) / fact)
    if divisor == 0:
        return math.nan
    result = np.dot(a, b) / fact / divisor
    divisor = np.sqrt(np.dot(b, b) / fact)
    if divisor == 0:
        return math.nan
    return float(np.clip(result / divisor, -1.0, 1.0))


def _scipy_spearman(x: np.ndarray, y: np.ndarray, rank_x: np.ndarray, rank_y: np.ndarray) -> float:
    """``scipy.stats.spearmanr(x, y)[0]`` from the average ranks: ``np.corrcoef`` of the ranks laid out as scipy
    lays them out (one row per variable, C order), since the products' summation order follows the layout."""
    if len(x) <= 1 or (x[0] == x).all() or (y[0] == y).all():
        return math.nan
    return float(np.corrcoef(np.vstack((rank_x, rank_y)))[1, 0])


def _average_ranks(code: np.ndarray, values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` within each segment, ties given their average rank (scipy ``rankdata``)."""
    if len(values) == 0:
        return values.astype(np.float64)
    order = np.lexsort((values, code))
    sc, sv = code[order], values[order]
    new_group = np.empty(len(sv), dtype=bool)
    new_group[0] = True
    new_group[1:] = (sc[1:] != sc[:-1]) | (sv[1:] != sv[:-1])
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], len(sv)) - 1
    new_seg = np.empty(len(sc), dtype=bool)
    new_seg[0] = True
    new_seg[1:] = sc[1:] != sc[:-1]
    seg_start = np.maximum.accumulate(np.where(new_seg, np.arange(len(sc)), 0))
    ranks_sorted = (starts[group] + ends[group]) / 2.0 - seg_start + 1.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = ranks_sorted
    return ranks


def _quantile_mean(rows: _Aligned, take: np.ndarray, *, descending: bool) -> np.ndarray:
    """Per date: mean label of the ``take[date]`` highest (or lowest) non-NaN predictions, first rows first."""
    n = len(rows.dates)
    ok = np.flatnonzero(~np.isnan(rows.pred))
    key = -rows.pred[ok] if descending else rows.pred[ok]
    order = ok[np.lexsort((key, rows.code[ok]))]  # stable: ties keep (datetime, instrument) order
    code = rows.code[order]
    first = np.searchsorted(code, np.arange(n), side="left")
    position = np.arange(len(order)) - first[code]
    chosen = order[position < take[code]]
    means = _segment_mean(rows.code[chosen], rows.label[chosen], n)
    return means
