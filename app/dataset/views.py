"""The raw / infer / learn frames of Qlib's ``DataHandlerLP``, for both of its process types.

::

    append (the default):  raw --[infer processors]--> infer --[learn processors]--> learn
    independent:           raw --[infer processors]--> infer
                           raw --[learn processors]--> learn

Each processor is fitted on the fit window's rows of its input (the previous processor's output) and then
applied to every row, in list order, as Qlib's ``fit_process_data`` does. ``raw`` is never modified, so the
unprocessed label stays available for evaluation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from app.core.errors import ConfigError, DataError, DateRangeError
from app.dataset.processors import Processor, StatelessProcessor, WindowedProcessor

log = logging.getLogger(__name__)

ViewName = Literal["raw", "infer", "learn"]
VIEWS: tuple[ViewName, ...] = ("raw", "infer", "learn")
ProcessType = Literal["append", "independent"]
PROCESS_TYPES: tuple[ProcessType, ...] = ("append", "independent")


@dataclass(frozen=True, eq=False)
class ProcessedViews:
    """Three aligned frames indexed ``(datetime, instrument)`` with ``(group, name)`` columns.

    ``raw``: the handler's output. ``infer``: raw after the infer processors (predictions use it).
    ``learn``: infer after the learn processors (training uses it; it may have fewer rows and a
    normalised label); with ``process_type="independent"``, raw after the learn processors.
    """

    raw: pd.DataFrame
    infer: pd.DataFrame
    learn: pd.DataFrame
    fit_start: pd.Timestamp
    fit_end: pd.Timestamp

    @classmethod
    def build(
        cls,
        raw: pd.DataFrame,
        infer_processors: Sequence[Processor] = (),
        learn_processors: Sequence[Processor] = (),
        *,
        fit_start: str | pd.Timestamp,
        fit_end: str | pd.Timestamp,
        process_type: ProcessType = "append",
    ) -> ProcessedViews:
        """Fit and run the processors; statistics only ever see rows dated ``fit_start..fit_end``.

        ``process_type``: ``append`` runs the learn processors on the infer view, ``independent`` on ``raw``.

        Raises:
            DataError: ``raw`` is not indexed ``(datetime, instrument)`` (sorted) with ``(group, name)`` columns.
            ConfigError: a learn-only processor is in ``infer_processors``, the fit window is reversed, a
                processor's own fit window reaches outside ``fit_start..fit_end``, or ``process_type`` is
                another value.
            DateRangeError: the fit window holds no rows of ``raw``.
        """
        if process_type not in PROCESS_TYPES:
            raise ConfigError(
                f"process_type={process_type!r} is not one of {', '.join(PROCESS_TYPES)} "
                "(append: learn processors run on the infer view; independent: on the raw frame)."
            )
        check_frame(raw, "raw")
        start, end = _window(fit_start, fit_end)
        dates = raw.index.get_level_values("datetime")
        if not ((dates >= start) & (dates <= end)).any():
            span = f"{dates.min().date()}..{dates.max().date()}" if len(dates) else "nothing (empty frame)"
            raise DateRangeError(
                f"the fit window {start.date()}..{end.date()} has no rows: the data runs {span}. "
                "Set the dataset's fit_start/fit_end (usually the train segment) inside the data."
            )
        for i, proc in enumerate(infer_processors):
            if not proc.is_for_infer():
                raise ConfigError(
                    f"infer_processors[{i}] {type(proc).__name__} is learn-only (it needs the label); "
                    "move it to learn_processors."
                )
        for kind, procs in (("infer_processors", infer_processors), ("learn_processors", learn_processors)):
            for i, proc in enumerate(procs):
                _check_inside(proc, f"{kind}[{i}]", start, end)
        infer = _run(raw, infer_processors, start, end, "infer")
        learn = _run(infer if process_type == "append" else raw, learn_processors, start, end, "learn")
        check_frame(infer, "infer (after the infer processors)")
        check_frame(learn, "learn (after the learn processors)")
        return cls(raw=raw, infer=infer, learn=learn, fit_start=start, fit_end=end)

    def get(self, view: str) -> pd.DataFrame:
        """The frame called ``view`` (``raw``, ``infer`` or ``learn``).

        Raises:
            ConfigError: another name.
        """
        if view not in VIEWS:
            raise ConfigError(f"view={view!r} is not one of {', '.join(VIEWS)}.")
        frame: pd.DataFrame = getattr(self, view)
        return frame


def check_frame(df: pd.DataFrame, what: str) -> None:
    """Check the handler contract: index ``(datetime, instrument)`` sorted, columns ``(group, name)``.

    Raises:
        DataError: naming the part of the contract that ``df`` breaks.
    """
    fix = "The handler must return index (datetime, instrument), sorted, and columns (group, name)."
    if not isinstance(df.index, pd.MultiIndex) or list(df.index.names) != ["datetime", "instrument"]:
        raise DataError(f"{what} frame is indexed by {list(df.index.names)}, not ['datetime', 'instrument']. {fix}")
    if not isinstance(df.columns, pd.MultiIndex) or df.columns.nlevels != 2:
        raise DataError(f"{what} frame's columns are not two-level (group, name) pairs. {fix}")
    if not df.index.is_monotonic_increasing:
        raise DataError(f"{what} frame's index is not sorted; call sort_index() on it. {fix}")


def _window(fit_start: str | pd.Timestamp, fit_end: str | pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    try:
        start, end = pd.Timestamp(fit_start), pd.Timestamp(fit_end)
    except (ValueError, TypeError):
        raise ConfigError(f"fit window {fit_start!r}..{fit_end!r} is not a pair of dates; use YYYY-MM-DD.") from None
    if start > end:
        raise ConfigError(f"fit_start {start.date()} is after fit_end {end.date()}; swap them.")
    return start, end


def _check_inside(proc: Processor, where: str, start: pd.Timestamp, end: pd.Timestamp) -> None:
    if not isinstance(proc, WindowedProcessor):
        return
    lo, hi = proc.fit_start_time, proc.fit_end_time
    if (lo is not None and pd.Timestamp(lo) < start) or (hi is not None and pd.Timestamp(hi) > end):
        raise ConfigError(
            f"{where} {type(proc).__name__} has fit window {lo}..{hi}, which reaches outside the dataset's fit "
            f"window {start.date()}..{end.date()}; drop its fit_start_time/fit_end_time (it then uses the "
            "dataset's) or move them inside."
        )


def _run(
    df: pd.DataFrame, procs: Sequence[Processor], start: pd.Timestamp, end: pd.Timestamp, view: str
) -> pd.DataFrame:
    for proc in procs:
        t0 = time.perf_counter()
        if not isinstance(proc, StatelessProcessor):  # spare a copy of the fit window when there is nothing to learn
            dates = df.index.get_level_values("datetime")
            proc.fit(df[(dates >= start) & (dates <= end)])
        df = proc(df)
        log.debug("%s view: %r in %.2fs -> %d rows", view, proc, time.perf_counter() - t0, len(df))
    return df
