"""Qlib's record templates on qtrain's recorder: SignalRecord, SigAnaRecord, PortAnaRecord.

Each record's ``generate(ctx)`` reads what it needs from the run (the prediction written by
:class:`SignalRecord`), saves its artifacts in open formats, logs its metrics under Qlib's names and
returns them. :func:`analyse_signal` and :func:`analyse_portfolio` are the same maths without a run
(``qtrain evaluate`` uses them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from app.data.store import QlibStore
from app.dataset.dataset import Dataset
from app.errors import ConfigError
from app.evaluation.backtest import BacktestConfig, run_backtest
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

    def generate(self, ctx: RecordContext) -> dict[str, float]:
        pred, label = _pred_and_label(ctx.recorder)
        analysis = analyse_signal(pred, label, long_short=self.ana_long_short)
        ctx.recorder.log_metrics(analysis.metrics)
        quantiles = quantile_returns(pred, label)
        ctx.recorder.save_objects(
            artifact_path="sig_analysis",
            ic=analysis.ic,
            quantile_returns=quantiles,
            ic_plot=ic_figure(analysis.ic),
            quantile_plot=quantile_figure(quantiles),
        )
        return analysis.metrics


@dataclass(kw_only=True)
class PortAnaRecord:
    """TopkDropout backtest of the saved prediction; report, positions, risk metrics, plots.

    ``config`` holds the strategy and exchange settings (Qlib's defaults: topk 50, n_drop 5, ...).
    """

    config: BacktestConfig = field(default_factory=BacktestConfig)
    name: str = field(default="port_ana", init=False)

    def generate(self, ctx: RecordContext) -> dict[str, float]:
        analysis = analyse_portfolio(_pred(ctx.recorder), ctx.store, self.config)
        ctx.recorder.log_metrics(analysis.metrics)
        ctx.recorder.save_objects(
            artifact_path="portfolio_analysis",
            report_normal_1day=analysis.report,
            positions_normal_1day=analysis.positions,
            port_analysis_1day=analysis.metrics,
            excess_return_plot=excess_return_figure(analysis.report),
        )
        return analysis.metrics
