"""Delayed training on a small market: begin parks a SCHEDULED run, end trains that same run once; DelayTrainerR
keeps order and records failures; per-stage timings and the feature-cache tag."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from app.core.errors import ConfigError, RunStatusError
from app.data.store import QlibStore
from app.data.synth import SynthSpec, write_synth_market
from app.dataset.cache import FeatureCache
from app.tracking import ExpManager, prepare_tracking_store
from app.workflow.spec import TaskSpec
from app.workflow.train import Components, begin_task_train, end_task_train, task_train
from app.workflow.trainer import DelayTrainerR, TrainerR
from tests.small_specs import small_spec

pytestmark = pytest.mark.slow

TIMINGS = {"time_data_s", "time_fit_s", "time_records_s"}


def _spec(root: Path, seed: int = 0, **model: Any) -> dict[str, Any]:
    segments = {"train": ["2015-01-05", "2015-08-31"], "valid": ["2015-09-01", "2015-10-30"],
                "test": ["2015-11-02", "2016-03-10"]}  # fmt: skip
    return small_spec(root, segments, seed=seed, **model)


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("delayed") / "store"
    write_synth_market(root, SynthSpec(instruments=20, days=300, seed=5, signal=2.0))
    return root


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mlflow-template")
    prepare_tracking_store(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts")  # schema migrations: ~3 s once
    return root / "mlflow.db"


@pytest.fixture
def manager(tmp_path: Path, template_db: Path) -> ExpManager:
    shutil.copy(template_db, tmp_path / "mlflow.db")
    return ExpManager(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")


@pytest.fixture
def build(market: Path) -> Any:
    def build(spec: TaskSpec) -> Components:
        nodes = {key: spec.body[key] for key in ("dataset", "model", "records")}
        try:
            built = {key: instantiate(node, _convert_="all") for key, node in nodes.items()}
        except InstantiationException as exc:
            raise ConfigError(str(exc.__cause__ or exc)) from exc.__cause__
        return Components(QlibStore(market), built["dataset"], built["model"], built["records"])

    return build


def test_begin_parks_a_scheduled_run_with_the_spec(market: Path, manager: ExpManager) -> None:
    spec = TaskSpec.from_mapping(_spec(market))
    run_id = begin_task_train(spec, manager, experiment_name="delayed")
    recorder = manager.get_recorder(run_id)
    assert recorder.status == "SCHEDULED"
    assert recorder.load_object("spec") == spec.body
    assert recorder.list_params()["model.num_leaves"] == "15"
    tags = recorder.list_tags()
    assert tags["task_hash"] == spec.hash and tags["qtrain.stage"] == "begun"
    assert "model" not in tags
    assert set(recorder.list_artifacts()) == {"spec.json"}
    assert recorder.list_metrics() == {}


def test_end_trains_the_begun_run_once(market: Path, manager: ExpManager, build: Any) -> None:
    spec = TaskSpec.from_mapping(_spec(market))
    run_id = begin_task_train(spec, manager, experiment_name="delayed")
    result = end_task_train(run_id, manager, build)
    assert result.run_id == run_id and result.error is None
    recorder = manager.get_recorder(run_id)
    assert recorder.status == "FINISHED"
    assert {"IC", "1day.excess_return_with_cost.annualized_return"} <= set(result.metrics)
    assert {"spec.json", "model", "pred.parquet"} <= set(recorder.list_artifacts())
    assert TIMINGS | {"IC", "valid.l2"} <= set(recorder.list_metrics())
    assert set(result.timings) == {"data", "fit", "records"} and all(t > 0 for t in result.timings.values())
    assert result.to_json()["timings"] == result.timings
    tags = recorder.list_tags()
    assert tags["qtrain.stage"] == "done" and tags["model"] == "lgbm" and tags["feature_cache"] == "off"

    with pytest.raises(RunStatusError, match=rf"run {run_id} is already FINISHED.*begin_task_train") as info:
        end_task_train(run_id, manager, build)
    assert info.value.status == "FINISHED"
    assert recorder.status == "FINISHED" and recorder.get_metric_history("time_fit_s")[-1].value > 0
    assert len(recorder.get_metric_history("time_fit_s")) == 1  # no second training


def test_delay_trainer_records_failures_and_keeps_order(market: Path, manager: ExpManager, build: Any) -> None:
    good, bad, other = _spec(market), _spec(market, num_threads=0), _spec(market, num_leaves=7)
    specs = [TaskSpec.from_mapping(s) for s in (good, bad, other)]
    trainer = DelayTrainerR(manager, build, experiment_name="sweep")
    assert trainer.delayed and not TrainerR(manager, build, experiment_name="sweep").delayed

    begun = trainer.train(specs)
    assert [r.error for r in begun] == [None, None, None] and all(r.metrics == {} for r in begun)
    assert [manager.get_recorder(r.run_id).status for r in begun] == ["SCHEDULED"] * 3

    results = trainer.end_train(begun)
    assert [r.run_id for r in results] == [r.run_id for r in begun]
    assert [r.error is None for r in results] == [True, False, True]
    assert "num_threads=0" in (results[1].error or "")
    assert [manager.get_recorder(r.run_id).status for r in results] == ["FINISHED", "FAILED", "FINISHED"]
    assert "num_threads=0" in manager.get_recorder(results[1].run_id).list_tags()["error"]
    assert manager.get_recorder(results[2].run_id).list_params()["model.num_leaves"] == "7"
    assert results[0].metrics and results[2].metrics

    # TrainerR builds before it starts a run: no run to report, and not the older FAILED run of the same spec
    (again,) = TrainerR(manager, build, experiment_name="sweep").train([specs[1]])
    assert again.run_id == "" and "num_threads=0" in (again.error or "")

    failing = DelayTrainerR(manager, build, experiment_name="sweep", fail_fast=True)
    with pytest.raises(ConfigError, match="num_threads=0"):
        failing.end_train(failing.train([specs[1], specs[0]]))


def test_feature_cache_tag_miss_then_hit(market: Path, manager: ExpManager, build: Any, tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache")
    trainer = TrainerR(manager, build, experiment_name="cache", cache=cache, fail_fast=True)
    first = trainer.train([TaskSpec.from_mapping(_spec(market, seed=0))])[0]
    files = sorted(p.name for p in cache.root.glob("*.arrow"))
    assert manager.get_recorder(first.run_id).list_tags()["feature_cache"] == "miss"

    spec = TaskSpec.from_mapping(_spec(market, seed=1))
    second = task_train(spec, build(spec), manager, experiment_name="cache", cache=cache)
    assert manager.get_recorder(second.run_id).list_tags()["feature_cache"] == "hit"
    assert sorted(p.name for p in cache.root.glob("*.arrow")) == files and len(files) == 3  # raw + infer + learn views
    assert second.timings["data"] < first.timings["data"]
