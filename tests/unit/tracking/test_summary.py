"""`qtrain report` over an experiment whose runs are of different models (each has parameters the other lacks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli.main import main
from app.tracking import ExpManager
from app.tracking.summary import run_table, summary_table
from app.workflow.spec import TaskSpec
from tests.small_specs import small_spec

SEGMENTS = {"train": ["2015-01-05", "2015-10-30"], "valid": ["2015-11-02", "2015-12-31"],
            "test": ["2016-01-04", "2016-05-31"]}  # fmt: skip
DOUBLE_ENSEMBLE = {"_target_": "app.models.double_ensemble.DoubleEnsembleModel", "num_models": 2,
                   "sub_weights": [1, 1], "epochs": 15, "enable_fs": True, "bins_fs": 5}  # fmt: skip


def _log_run(manager: ExpManager, spec: TaskSpec, ic: float, *, status: str = "FINISHED") -> str:
    with manager.start(experiment_name="mixed", task_hash=spec.hash) as rec:
        rec.log_params(**spec.flat_params())
        if status == "FINISHED":
            rec.log_metrics(**{"IC": ic, "Rank IC": ic / 2, "1day.excess_return_with_cost.annualized_return": ic * 10})
        run_id = rec.id
    if status != "FINISHED":
        manager.client.set_terminated(run_id, status)
    return run_id


@pytest.fixture
def mixed(manager: ExpManager, tmp_path: Path) -> ExpManager:
    """lgbm and DoubleEnsemble runs, two seeds each, and a failed lgbm run without metrics, in one experiment."""
    for seed in (0, 1):
        _log_run(manager, TaskSpec.from_mapping(small_spec(tmp_path, SEGMENTS, seed=seed)), 0.02 + seed / 100)
        de = small_spec(tmp_path, SEGMENTS, seed=seed)
        de["model"] = {**DOUBLE_ENSEMBLE, "seed": seed}
        _log_run(manager, TaskSpec.from_mapping(de), 0.04 + seed / 100)
    _log_run(manager, TaskSpec.from_mapping(small_spec(tmp_path, SEGMENTS, seed=2)), 0.0, status="FAILED")
    return manager


def test_runs_of_different_models_get_their_own_configuration(mixed: ExpManager) -> None:
    rows = run_table(mixed.search_records(["mixed"]))
    assert sorted(rows["model"]) == ["DoubleEnsembleModel"] * 2 + ["LightGBMModel"] * 3
    by_model = rows.groupby("model")["config"].unique()
    assert len(by_model["LightGBMModel"]) == 1 and len(by_model["DoubleEnsembleModel"]) == 1
    assert by_model["LightGBMModel"][0] != by_model["DoubleEnsembleModel"][0]
    summary = summary_table(rows).set_index("model")
    assert summary.loc["LightGBMModel", "runs"] == 2  # the failed run is left out
    assert summary.loc["DoubleEnsembleModel", "IC"] == "0.0450±0.0071"


def _report(monkeypatch: pytest.MonkeyPatch, manager: ExpManager, capsys: pytest.CaptureFixture[str],
            fmt: str) -> str:  # fmt: skip
    monkeypatch.setenv("MLFLOW_TRACKING_URI", manager.uri)
    monkeypatch.setenv("QTRAIN_ARTIFACT_ROOT", str(manager.artifact_root))
    assert main(["report", "mixed", "--format", fmt]) == 0
    return capsys.readouterr().out


def test_report_json_over_mixed_models_is_valid_json_with_null_for_missing(
    mixed: ExpManager, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(_report(monkeypatch, mixed, capsys, "json"))  # strict JSON: NaN would not parse as null
    failed = [run for run in doc["runs"] if run["status"] == "FAILED"]
    assert len(doc["runs"]) == 5 and len(failed) == 1
    assert failed[0]["IC"] is None and failed[0]["seed"] == "2"
    key = "Excess Return (ann., with cost)"
    assert {row["model"]: row[key] for row in doc["summary"]} == {
        "DoubleEnsembleModel": "0.4500±0.0707", "LightGBMModel": "0.2500±0.0707",
    }  # fmt: skip


def test_report_markdown_and_csv_over_mixed_models_show_no_nan(
    mixed: ExpManager, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _report(monkeypatch, mixed, capsys, "md")
    assert "## mixed: 5 runs" in text and "DoubleEnsembleModel" in text and "LightGBMModel" in text
    assert "nan" not in text.lower()
    assert "Excess Return (ann., with cost)" in text
    csv = _report(monkeypatch, mixed, capsys, "csv")
    assert "DoubleEnsembleModel" in csv and "nan" not in csv.lower()
