"""What the MLflow UI shows: experiments of kind model training, runs named after their task."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from app.tracking import ExpManager
from app.tracking.backend import run_page_url
from app.tracking.manager import EXPERIMENT_KIND_TAG
from app.workflow.spec import TaskSpec
from app.workflow.train import begin_task_train
from tests.small_specs import small_spec

SEGMENTS = {"train": ["2015-01-05", "2015-10-30"], "valid": ["2015-11-02", "2015-12-31"],
            "test": ["2016-01-04", "2016-05-31"]}  # fmt: skip


def test_new_experiments_are_model_training_experiments(manager: ExpManager, tracking_uri: str) -> None:
    with manager.start(experiment_name="kind"):
        pass
    found = MlflowClient(tracking_uri).get_experiment_by_name("kind")
    assert found is not None and found.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_an_untagged_experiment_is_tagged_when_used_not_when_looked_up(manager: ExpManager, tracking_uri: str) -> None:
    client = MlflowClient(tracking_uri)
    other = client.create_experiment("made-elsewhere")
    manager.search_records("made-elsewhere")  # a read (qtrain report) writes nothing
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(other).tags
    with manager.start(experiment_name="made-elsewhere"):
        pass
    assert client.get_experiment(other).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    client.set_experiment_tag(other, EXPERIMENT_KIND_TAG, "genai_development")  # a user's own choice stays
    with manager.start(experiment_name="made-elsewhere"):
        pass
    assert client.get_experiment(other).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_runs_are_named_after_model_handler_seed_and_task(manager: ExpManager, tracking_uri: str,
                                                        tmp_path: Path) -> None:  # fmt: skip
    specs = [TaskSpec.from_mapping(small_spec(tmp_path, SEGMENTS, seed=seed)) for seed in (0, 1)]
    specs.append(TaskSpec.from_mapping(small_spec(tmp_path, SEGMENTS, seed=1, num_leaves=31)))  # a sweep over leaves
    double = small_spec(tmp_path, SEGMENTS, seed=2)
    double["model"] = {"_target_": "app.models.double_ensemble.DoubleEnsembleModel", "num_models": 2, "seed": 2}
    specs.append(TaskSpec.from_mapping(double))
    run_ids = [begin_task_train(spec, manager, experiment_name="names") for spec in specs]

    client = MlflowClient(tracking_uri)
    names = [client.get_run(run_id).info.run_name for run_id in run_ids]
    assert names == [
        f"lgbm-alpha158-seed0-{specs[0].hash[:6]}",
        f"lgbm-alpha158-seed1-{specs[1].hash[:6]}",
        f"lgbm-alpha158-seed1-{specs[2].hash[:6]}",
        f"double_ensemble-alpha158-seed2-{specs[3].hash[:6]}",
    ]
    assert len(set(names)) == len(names)  # every job of a sweep has its own name
    assert [TaskSpec.from_mapping(s.body).run_name for s in specs] == names  # deterministic


def test_a_spec_without_model_or_seed_is_named_by_its_hash() -> None:
    spec = TaskSpec.from_mapping({"data": {"market": "synth"}})
    assert spec.run_name == spec.hash[:6]


def test_printed_ui_pages_open_in_model_training_mode_without_credentials() -> None:
    url = run_page_url("http://qtrain:s3cret@mlflow:5000/", "3", "abc")
    assert url == "http://qtrain:***@mlflow:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
