"""check_spec_types: keys and value types checked against the targets' own signatures, key path named."""

from __future__ import annotations

from typing import Any

import pytest

from app.config.schema import check_spec_types
from app.core.errors import ConfigError

BACKTEST = "app.evaluation.backtest.BacktestConfig"
PORT = "app.evaluation.records.PortAnaRecord"


def _record(**config: Any) -> dict[str, Any]:
    return {"record": {"port_ana": {"_target_": PORT, "config": {"_target_": BACKTEST, **config}}}}


def test_a_valid_nested_spec_passes() -> None:
    check_spec_types(_record(topk=10, n_drop=2, benchmark=None, limit_threshold=0.095, open_cost=0))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (_record(topk="ten"), r"record.port_ana.config.topk: expected int, got 'ten' \(str\)"),
        (_record(topk=True), r"record.port_ana.config.topk: expected int, got True"),
        (_record(open_cost="cheap"), r"record.port_ana.config.open_cost: expected float"),
        (_record(benchmark=3), r"record.port_ana.config.benchmark: expected str \| None"),
        (_record(top_k=10), r"record.port_ana.config.top_k: .* takes no parameter 'top_k'; did you mean 'topk'\?"),
        ({"model": {"_target_": "app.models.nope.Model"}}, r"model._target_: cannot import 'app.models.nope'"),
        ({"model": {"_target_": "app.models.gru.GRUModle"}}, r"model._target_: .*did you mean app.models.gru.GRUModel"),
        ({"model": {"_target_": "GRUModel"}}, r"model._target_: 'GRUModel' is not a dotted import path"),
        (
            {"dataset": {"_target_": "app.dataset.handler.DatasetSpec"}},
            r"dataset: app.dataset.handler.DatasetSpec needs handler",
        ),
        (
            {"p": [{"_target_": "app.dataset.processors.CSZScoreNorm", "fields_group": 3}]},
            r"p\[0\].fields_group: expected",
        ),
    ],
)
def test_bad_values_name_their_key(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_spec_types(spec)


def test_partial_nodes_may_leave_required_parameters_out() -> None:
    check_spec_types({"t": {"_target_": "app.dataset.segments.rolling_segments", "_partial_": True, "step": 5}})
    with pytest.raises(ConfigError, match=r"t\.step: expected int"):
        check_spec_types({"t": {"_target_": "app.dataset.segments.rolling_segments", "_partial_": True, "step": "5"}})


def test_targets_taking_kwargs_accept_unknown_keys() -> None:
    # LightGBM parameters pass through **params; LightGBMModel checks their names itself when built
    check_spec_types({"model": {"_target_": "app.models.lgbm.LightGBMModel", "min_data_in_leaf": 5}})
