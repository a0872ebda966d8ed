"""The sweep objective: the metric names each record declares, the up-front checks of ``objective``, and the
value a job returns to its sweeper."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from app.config.objective import check_objective, logged_metrics, objective_value
from app.core.errors import ConfigError, ObjectiveError
from app.evaluation.records import PortAnaRecord, SigAnaRecord, SignalRecord
from app.evaluation.risk import portfolio_metrics
from app.evaluation.signal import signal_metrics
from tests.unit.evaluation.test_risk import report
from tests.unit.evaluation.test_signal import random_frames

OPTUNA = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
QTRAIN = "hydra_plugins.qtrain_sweeper.sweeper.QtrainSweeper"


def _records() -> list[SignalRecord | SigAnaRecord | PortAnaRecord]:
    return [SignalRecord(), SigAnaRecord(), PortAnaRecord()]


def _cfg(objective: str | None, sweeper: str = OPTUNA, choice: str = "optuna") -> object:
    hydra = {"sweeper": {"_target_": sweeper}, "runtime": {"choices": {"hydra/sweeper": choice}}}
    return OmegaConf.create({"objective": objective, "hydra": hydra})


@pytest.mark.parametrize("long_short", [False, True])
def test_each_record_declares_exactly_the_metrics_it_computes(long_short: bool) -> None:
    pred, label = random_frames(0)
    computed = signal_metrics(pred, label, long_short=long_short)
    assert SigAnaRecord(ana_long_short=long_short).metric_names() == tuple(computed)
    indicators = pd.DataFrame({"ffr": [1.0, 0.5, np.nan], "pa": [0.0] * 3, "pos": [0.0] * 3, "count": [2.0, 4.0, 0]})
    assert sorted(PortAnaRecord().metric_names()) == sorted(portfolio_metrics(report(), indicators))
    assert SignalRecord().metric_names() == ()


def test_the_objective_must_be_a_metric_the_records_log() -> None:
    assert check_objective(_cfg("Rank IC"), _records()) == "Rank IC"
    assert check_objective(_cfg("1day.excess_return_with_cost.information_ratio"), _records())
    with pytest.raises(ConfigError, match=r"^objective: 'Sharpe' is not a metric .*choose one of: IC, ICIR, Rank IC"):
        check_objective(_cfg("Sharpe"), _records())
    with pytest.raises(ConfigError, match="'IC' is not a metric"):  # no signal analysis, no IC
        check_objective(_cfg("IC"), [SignalRecord(), PortAnaRecord()])
    assert "Long-Short Ann Sharpe" in logged_metrics([SigAnaRecord(ana_long_short=True)])


def test_an_optimising_sweeper_without_an_objective_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        check_objective(_cfg(None), _records())
    message = str(info.value)
    assert message.startswith("hydra/sweeper=optuna optimises a number each job returns, and objective is not set")
    assert "objective='Rank IC'" in message and "hydra.sweeper.direction=maximize" in message
    assert "\n" not in message
    assert check_objective(_cfg(None, QTRAIN, "qtrain"), _records()) is None  # the basic sweeper needs none


def test_the_value_a_job_returns() -> None:
    metrics = {"IC": 0.25, "Rank IC": -0.5}
    assert objective_value(None, metrics, sweeper=OPTUNA) is None  # no objective: nothing, as before
    assert objective_value("Rank IC", metrics, sweeper=OPTUNA) == -0.5
    # a job without a value: a failed trial for Optuna (its float() would crash the study), NaN for the others
    with pytest.raises(ObjectiveError, match=r"'ICIR': the job has none \(it failed"):
        objective_value("ICIR", metrics, sweeper=OPTUNA)
    with pytest.raises(ObjectiveError, match="NaN"):
        objective_value("IC", {"IC": math.nan}, sweeper=OPTUNA)
    assert math.isnan(objective_value("ICIR", metrics, sweeper=QTRAIN) or 0.0)
