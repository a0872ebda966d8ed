"""ExpManager: experiments, artifact locations, run search as a DataFrame, model registry."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from app.core.errors import (
    ArtifactNotFoundError,
    ConfigError,
    ExperimentNotFoundError,
    RecorderNotFoundError,
    TrackingError,
)
from app.tracking import DEFAULT_EXPERIMENT, ExpManager


def _run(manager: ExpManager, experiment: str, lr: float, ic: float, name: str | None = None) -> str:
    with manager.start(experiment_name=experiment, recorder_name=name, task_hash=f"t{lr}") as rec:
        rec.log_params(model={"kwargs": {"lr": lr}})
        rec.log_metrics(ic=ic, step=0)
        return rec.id


def test_search_records_returns_runs_with_params_metrics_and_tags(manager: ExpManager) -> None:
    first = _run(manager, "search", 0.1, 0.01)
    second = _run(manager, "search", 0.2, 0.03)
    other = _run(manager, "elsewhere", 0.3, 0.05)

    frame = manager.search_records("search")
    assert list(frame["run_id"]) == [second, first]  # newest first
    assert {"metrics.ic", "params.model.kwargs.lr", "tags.task_hash", "status", "start_time"} <= set(frame.columns)
    assert list(frame["params.model.kwargs.lr"]) == ["0.2", "0.1"]
    assert list(frame["status"]) == ["FINISHED", "FINISHED"]
    assert isinstance(frame["start_time"].iloc[0], pd.Timestamp)

    both = manager.search_records(["search", "elsewhere"], filter_string="metrics.ic > 0.02")
    assert set(both["run_id"]) == {second, other}
    assert set(both["experiment_name"]) == {"search", "elsewhere"}
    by_param = manager.search_records("search", filter_string="params.`model.kwargs.lr` = '0.1'")
    assert list(by_param["run_id"]) == [first]
    oldest_first = manager.search_records("search", order_by=["attributes.start_time ASC"])
    assert list(oldest_first["run_id"]) == [first, second]


def test_search_errors_are_named(manager: ExpManager) -> None:
    _run(manager, "search", 0.1, 0.01)
    assert manager.search_records("search", filter_string="metrics.ic > 1").empty
    with pytest.raises(ExperimentNotFoundError, match=r"no experiment with name 'nope'.*known: .*search"):
        manager.search_records(["search", "nope"])
    with pytest.raises(TrackingError, match=r"searching runs.*syntax"):
        manager.search_records("search", filter_string="metrics.ic >>> 1")


def test_experiments_get_an_explicit_artifact_location(
    tracking_uri: str, artifact_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    manager = ExpManager(tracking_uri, artifact_root)
    experiment = manager.get_exp(experiment_name="alpha 158/lgbm")
    assert experiment.artifact_location == f"{artifact_root}/alpha_158_lgbm"
    with manager.start(experiment_name="alpha 158/lgbm") as rec:
        rec.save_objects(x={"a": 1})
    assert (artifact_root / "alpha_158_lgbm" / rec.id / "artifacts" / "x.json").is_file()
    assert list(elsewhere.iterdir()) == []  # no ./mlruns in the working directory


def test_experiments_are_listed_created_once_and_found(manager: ExpManager) -> None:
    created = manager.create_exp("e1")
    assert manager.create_exp("e1").id == created.id  # a concurrent creator gets the existing one
    assert manager.get_exp(experiment_name="e1", create=False).id == created.id
    assert manager.get_exp(experiment_id=created.id).name == "e1"
    assert {"e1", "Default"} <= set(manager.list_experiments())
    with pytest.raises(ExperimentNotFoundError, match="no experiment with name 'e2'") as info:
        manager.get_exp(experiment_name="e2", create=False)
    assert isinstance(info.value, KeyError)
    manager.client.delete_experiment(created.id)
    with pytest.raises(ExperimentNotFoundError, match="is deleted; restore it"):
        manager.get_exp(experiment_name="e1")


def test_default_experiment_and_recorders(manager: ExpManager) -> None:
    rec = manager.start_exp()
    assert manager.get_exp().name == DEFAULT_EXPERIMENT
    manager.end_exp("KILLED")
    _run(manager, DEFAULT_EXPERIMENT, 0.1, 0.0, name="named")
    experiment = manager.get_exp(experiment_name=DEFAULT_EXPERIMENT)
    recorders = experiment.list_recorders()
    assert len(recorders) == 2 and rec.id in recorders
    assert list(experiment.list_recorders(status="KILLED")) == [rec.id]
    assert experiment.get_recorder(recorder_name="named").name == "named"
    assert manager.get_recorder(rec.id).status == "KILLED"
    with pytest.raises(RecorderNotFoundError, match=r"no run named 'ghost'.*known names: "):
        experiment.get_recorder(recorder_name="ghost")


def test_register_model_creates_versions_from_the_run_folder(manager: ExpManager, tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "model.json").write_text(json.dumps({"format": 1, "type": "lgbm", "params": {}}))
    (saved / "model.txt").write_text("tree\n")
    with manager.start(experiment_name="reg") as rec:
        rec.save_objects(model=saved)
    assert manager.register_model(rec.id, "alpha-lgbm") == 1
    assert manager.register_model(rec.id, "alpha-lgbm") == 2
    version = manager.client.get_model_version("alpha-lgbm", "2")
    assert version.source == f"{rec.artifact_uri}/model"
    assert version.run_id == rec.id
    assert Path(version.source, "model.json").is_file()


def test_register_model_errors_name_the_run_and_artifact(manager: ExpManager) -> None:
    with manager.start(experiment_name="reg") as rec:
        rec.save_objects(pred={"a": 1})
    with pytest.raises(ArtifactNotFoundError, match=f"run {rec.id} has no artifact 'model'.*pred.json"):
        manager.register_model(rec.id, "m")
    with pytest.raises(RecorderNotFoundError, match="no run 'nope'"):
        manager.register_model("nope", "m")


def test_start_can_park_a_run_scheduled_and_resume_it(manager: ExpManager) -> None:
    with manager.start(experiment_name="parked", end_status="SCHEDULED") as rec:
        rec.log_params(lr=0.1)
    parked = manager.get_recorder(rec.id)
    assert parked.status == "SCHEDULED" and parked.info["end_time"] is None  # parked, not over
    with manager.start(run_id=rec.id) as resumed:
        assert resumed.status == "RUNNING"
    assert parked.status == "FINISHED" and parked.list_params() == {"lr": "0.1"}
    with pytest.raises(ConfigError, match="use one of FINISHED, FAILED, KILLED, SCHEDULED"):
        parked.end_run("DONE")
    with pytest.raises(ConfigError, match="end_status='KILLED'"):
        manager.start(experiment_name="parked", end_status="KILLED").__enter__()
    assert manager.active_experiment is None
