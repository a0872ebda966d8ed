"""Qlib's record templates on qtrain's recorder: SignalRecord, SigAnaRecord, PortAnaRecord.

Each record's ``generate(ctx)`` reads what it needs from the run (the prediction written by
:class:`SignalRecord`), saves its artifacts in open formats, logs its metrics under Qlib's names and
returns them. :func:`analyse_signal` and :func:`analyse_portfolio` are the same maths without a run
(``qtrain evaluate`` uses them).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from app.core.errors import ConfigError
from app.data.store import QlibStore
from app.dataset.dataset import Dataset
from app.evaluation.backtest import BacktestConfig, run_backtest
from app.evaluation.drawing import draw
from app.evaluation.plots import excess_return_figure, ic_figure, quantile_figure
from app.evaluation.risk import portfolio_metrics
from app.evaluation.signal import daily_ic, quantile_returns, signal_metrics
from app.models.base import Model

log = logging.getLogger(__name__)


class RunRecorder(Protocol):
    """What the records need of a run (app.tracking.Recorder provides it)."""

    def log_metrics(self, metrics: Mapping[str, float] | None = None, step: int | None = None) -> None: ...

    def save_objects(self, artifact_path: str | None = None, **objects: Any) -> None: ...

    def load_object(self, name: str) -> Any: ...


@dataclass
class RecordContext:
    """Everything a record may use: the trained model, its dataset, the market store, the run.

    ``model`` and ``dataset`` are None when the run analyses a prediction it did not make (a merged rolling
    signal); only records that read the saved ``pred``/``label`` work then.
    """

    model: Model | None
    dataset: Dataset | None
    store: QlibStore
    recorder: RunRecorder
    plots: PlotQueue | None = None  # where figures go to be drawn later; None: drawn and saved at once

    def save_plots(self, artifact_path: str, **makers: Callable[[], Any]) -> None:
        """Save the figures ``makers`` draw (``name=lambda: figure``) under ``artifact_path``, now or queued."""
        if self.plots is not None:
            self.plots.add(artifact_path, makers)
        else:
            self.recorder.save_objects(artifact_path=artifact_path, **draw(dict(makers)))


class PlotQueue:
    """Figures of one run to be drawn and uploaded after its records (one upload, off the job's path).

    Drawing the three record figures costs about as much as all the records' maths; :meth:`draw_in_background`
    hands them to one process-wide drawing thread, so the next job runs while they are drawn (in a local sweep
    the thread has them drawn in a separate low-priority process, see :mod:`app.evaluation.drawing`). Pending
    figures are finished before the process exits; :func:`wait_for_plots` waits earlier.
    """

    def __init__(self) -> None:
        self._items: list[tuple[str, Mapping[str, Callable[[], Any]]]] = []

    def add(self, artifact_path: str, makers: Mapping[str, Callable[[], Any]]) -> None:
        self._items.append((artifact_path, dict(makers)))

    def draw(self, recorder: Any) -> None:
        """Draw every queued figure and upload them to ``recorder``'s run in one go."""
        with recorder.deferred_artifacts():
            for artifact_path, makers in self._items:
                recorder.save_objects(artifact_path=artifact_path, **draw(dict(makers)))
        self._items.clear()

    def draw_in_background(self, recorder: Any) -> Future[None]:
        """:meth:`draw` on the drawing thread (figures are drawn one run at a time: matplotlib is not thread-safe)."""
        future = _drawing_thread().submit(self._draw_logged, recorder)
        _PENDING.add(future)
        future.add_done_callback(_PENDING.discard)
        return future

    def _draw_logged(self, recorder: Any) -> None:
        try:
            self.draw(recorder)
        except Exception:  # the run's metrics and data artifacts are saved already; only its pictures are missing
            log.exception("drawing the record figures of run %s failed", getattr(recorder, "id", "?"))
            raise


_PENDING: set[Future[None]] = set()


@functools.cache
def _drawing_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="qtrain-plots")


def wait_for_plots() -> None:
    """Block until every figure queued with :meth:`PlotQueue.draw_in_background` is drawn and uploaded."""
    wait(list(_PENDING))


@dataclass(frozen=True)
class SignalAnalysis:
    metrics: dict[str, float]
    ic: pd.DataFrame  # columns ic, rank_ic; index datetime


@dataclass(frozen=True)
class PortfolioAnalysis:
    report: pd.DataFrame
    positions: pd.DataFrame
    metrics: dict[str, float]


def analyse_signal(pred: pd.Series, label: pd.Series, long_short: bool = False) -> SignalAnalysis:
    """IC, ICIR, Rank IC, Rank ICIR (and long-short) of ``pred`` against the raw ``label``."""
    ic = daily_ic(pred, label)
    return SignalAnalysis(signal_metrics(pred, label, long_short=long_short, ic=ic), ic)


def analyse_portfolio(pred: pd.Series, store: QlibStore, config: BacktestConfig) -> PortfolioAnalysis:
    """The TopkDropout backtest of ``pred`` and the risk analysis of its excess returns."""
    result = run_backtest(pred, store, config)
    return PortfolioAnalysis(result.report, result.positions, portfolio_metrics(result.report, result.indicators))


@dataclass(kw_only=True)
class SignalRecord:
    """Predict the test segment; save ``pred`` (column ``score``) and the raw ``label``."""

    name: str = field(default="signal", init=False)

    def metric_names(self) -> tuple[str, ...]:
        """The metrics :meth:`generate` returns: none (it saves the prediction)."""
        return ()

    def generate(self, ctx: RecordContext) -> dict[str, float]:
        if ctx.model is None or ctx.dataset is None:
            raise ConfigError("the signal record needs a trained model and its dataset; this run has none")
        pred = ctx.model.predict(ctx.dataset, "test")
        label = ctx.dataset.prepare("test", "label", view="raw")
        ctx.recorder.save_objects(pred=pred.rename("score").to_frame(), label=label)
        log.info("signal record: %d predictions", len(pred))
        return {}


def _pred(recorder: RunRecorder) -> pd.Series:
    pred: pd.Series = recorder.load_object("pred")["score"]
    return pred


def _pred_and_label(recorder: RunRecorder) -> tuple[pd.Series, pd.Series]:
    pred = _pred(recorder)
    return pred, recorder.load_object("label").iloc[:, 0]


@dataclass(kw_only=True)
class SigAnaRecord:
    """Signal analysis of the saved prediction: Qlib's IC metrics, daily IC, quantile returns, plots."""

    ana_long_short: bool = False
    ann_scaler: int = 252
    name: str = field(default="sig_ana", init=False)

    def metric_names(self) -> tuple[str, ...]:
        """The metrics :meth:`generate` returns (:func:`app.evaluation.signal.signal_metrics`)."""
        long_short = [f"{side} Ann {stat}" for side in ("Long-Short", "Long-Avg") for stat in ("Return", "Sharpe")]
        return ("IC", "ICIR", "Rank IC", "Rank ICIR", *(long_short if self.ana_long_short else ()))

    def generate(self, ctx: RecordContext) -> dict[str, float]:
        pred, label = _pred_and_label(ctx.recorder)
        analysis = analyse_signal(pred, label, long_short=self.ana_long_short)
        ctx.recorder.log_metrics(analysis.metrics)
        quantiles = quantile_returns(pred, label)
        ctx.recorder.save_objects(artifact_path="sig_analysis", ic=analysis.ic, quantile_returns=quantiles)
        ctx.save_plots(
            "sig_analysis",
            ic_plot=functools.partial(ic_figure, analysis.ic),
            quantile_plot=functools.partial(quantile_figure, quantiles),
        )
        return analysis.metrics


@dataclass(kw_only=True)
class PortAnaRecord:
    """TopkDropout backtest of the saved prediction; report, positions, risk metrics, plots.

    ``config`` holds the strategy and exchange settings (Qlib's defaults: topk 50, n_drop 5, ...).
    """

    config: BacktestConfig = field(default_factory=BacktestConfig)
    name: str = field(default="port_ana", init=False)

    def metric_names(self) -> tuple[str, ...]:
        """The metrics :meth:`generate` returns (:func:`app.evaluation.risk.portfolio_metrics` of a daily backtest)."""
        stats = ("mean", "std", "annualized_return", "information_ratio", "max_drawdown")
        excess = [f"1day.excess_return_{cost}_cost.{stat}" for cost in ("without", "with") for stat in stats]
        return (*excess, "1day.ffr", "1day.pa", "1day.pos")

    def generate(self, ctx: RecordContext) -> dict[str, float]:
        analysis = analyse_portfolio(_pred(ctx.recorder), ctx.store, self.config)
        ctx.recorder.log_metrics(analysis.metrics)
        ctx.recorder.save_objects(
            artifact_path="portfolio_analysis",
            report_normal_1day=analysis.report,
            positions_normal_1day=analysis.positions,
            port_analysis_1day=analysis.metrics,
        )
        ctx.save_plots(
            "portfolio_analysis", excess_return_plot=functools.partial(excess_return_figure, analysis.report)
        )
        return analysis.metrics
