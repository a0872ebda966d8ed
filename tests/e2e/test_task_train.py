"""task_train and TrainerR on a small market: one FINISHED run per task, failures recorded, order kept."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from app.config.compose import build_components
from app.core.errors import ConfigError
from app.data.synth import SynthSpec, write_synth_market
from app.tracking.manager import ExpManager
from app.workflow.spec import TaskSpec
from app.workflow.train import task_train
from app.workflow.trainer import TrainerR
from tests.small_specs import small_spec

pytestmark = pytest.mark.slow


def _spec(root: Path, **model: Any) -> dict[str, Any]:
    segments = {"train": ["2015-01-05", "2015-10-30"], "valid": ["2015-11-02", "2015-12-31"],
                "test": ["2016-01-04", "2016-03-31"]}  # fmt: skip
    return small_spec(root, segments, **model)


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("task") / "store"
    write_synth_market(root, SynthSpec(instruments=25, days=330, seed=5, signal=2.0))
    return root


def test_task_train_records_one_run(market: Path, tmp_path: Path) -> None:
    manager = ExpManager(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    spec = TaskSpec.from_mapping(_spec(market))
    result = task_train(spec, build_components(spec), manager, experiment_name="task")
    recorder = manager.get_recorder(result.run_id)
    assert recorder.status == "FINISHED"
    assert {"IC", "1day.excess_return_with_cost.annualized_return"} <= set(result.metrics)
    assert recorder.list_params()["model.num_leaves"] == "15"
    assert recorder.list_tags()["task_hash"] == spec.hash and recorder.list_tags()["model"] == "lgbm"
    assert {"spec.json", "model", "pred.parquet"} <= set(recorder.list_artifacts())
    assert recorder.load_object("spec") == spec.body
    assert "valid.l2" in recorder.list_metrics()


def test_trainer_records_failures_and_keeps_order(market: Path, tmp_path: Path) -> None:
    manager = ExpManager(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    good = _spec(market)
    bad = copy.deepcopy(good)
    bad["records"][2]["config"]["benchmark"] = "NOWHERE"
    other = _spec(market, num_leaves=7)
    specs = [TaskSpec.from_mapping(s) for s in (good, bad, other)]
    results = TrainerR(manager, build_components, experiment_name="sweep").train(specs)
    assert [r.error is None for r in results] == [True, False, True]
    assert "NOWHERE" in (results[1].error or "")
    assert manager.get_recorder(results[1].run_id).status == "FAILED"
    assert manager.get_recorder(results[2].run_id).list_params()["model.num_leaves"] == "7"
    with pytest.raises(Exception, match="NOWHERE"):
        TrainerR(manager, build_components, experiment_name="sweep", fail_fast=True).train(specs[1:])


def test_bad_model_key_fails_before_any_run(market: Path) -> None:
    spec = TaskSpec.from_mapping(_spec(market, num_leavs=3))
    with pytest.raises(ConfigError, match=r"model: .*'num_leavs'.*did you mean num_leaves"):
        build_components(spec)


class _SlowOpening(ExpManager):
    """An ExpManager whose store counts as still opening until ``opened`` is set (as while MLflow imports)."""

    opened = False

    @property
    def is_open(self) -> bool:
        return self.opened


def test_stages_run_before_the_store_is_open_and_land_in_the_run(market: Path, tmp_path: Path) -> None:
    from app.workflow.train import LazyRun

    manager = _SlowOpening(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", background=True)
    spec = TaskSpec.from_mapping(_spec(market))
    created: list[str] = []
    real_open = LazyRun.open

    def open_and_note(self: LazyRun) -> Any:
        if self._recorder is None:
            created.append(f"run created with {len(self._held)} calls held")
        return real_open(self)

    LazyRun.open = open_and_note  # type: ignore[method-assign]
    try:
        result = task_train(spec, build_components(spec), manager, experiment_name="lazy")
    finally:
        LazyRun.open = real_open  # type: ignore[method-assign]
    # tags, the data and fit timings and the curves were held while the store was "opening", then logged
    assert created and int(created[0].split()[3]) >= 4
    recorder = manager.get_recorder(result.run_id)
    assert recorder.status == "FINISHED"
    assert {"time_data_s", "time_fit_s", "time_records_s", "valid.l2", "IC"} <= set(recorder.list_metrics())
    assert len(recorder.get_metric_history("valid.l2")) > 1
    assert recorder.list_tags()["model"] == "lgbm" and recorder.list_tags()["feature_cache"] == "off"
    assert recorder.list_params()["model.num_leaves"] == "15"


def test_a_failure_before_the_run_exists_still_ends_in_a_failed_run(market: Path, tmp_path: Path) -> None:
    manager = _SlowOpening(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", background=True)
    spec = TaskSpec.from_mapping(_spec(market))
    components = build_components(spec)

    def broken_fit(*args: object) -> None:
        raise ValueError("the fit broke")

    object.__setattr__(components.model, "fit", broken_fit)
    with pytest.raises(ValueError, match="the fit broke") as failure:
        task_train(spec, components, manager, experiment_name="lazy")
    runs = manager.search_records(["lazy"])
    assert list(runs["status"]) == ["FAILED"]
    recorder = manager.get_recorder(str(runs["run_id"].iloc[0]))
    assert type(failure.value).__name__ in recorder.list_tags()["error"]
    assert "traceback.txt" in recorder.list_artifacts()
    assert recorder.list_tags()["task_hash"] == spec.hash


def test_a_store_that_cannot_open_fails_at_first_use(tmp_path: Path) -> None:
    from app.core.errors import TrackingError

    (tmp_path / "mlflow.db").write_text("not a database")
    manager = ExpManager(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", background=True)
    with pytest.raises(TrackingError, match="cannot open tracking DB"):
        manager.list_experiments()
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(TrackingError, match="cannot create the folder"):
        ExpManager(f"sqlite:///{blocked / 'sub' / 'mlflow.db'}", background=True)  # at once, no MLflow needed


def test_figures_drawn_later_land_in_the_run(market: Path, tmp_path: Path) -> None:
    from app.evaluation.records import wait_for_plots

    manager = ExpManager(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    spec = TaskSpec.from_mapping(_spec(market))
    results = TrainerR(manager, build_components, experiment_name="later", draw_plots_later=True).train([spec])
    assert results[0].error is None and "IC" in results[0].metrics
    wait_for_plots()
    recorder = manager.get_recorder(results[0].run_id)
    names = {"sig_analysis/ic.parquet", "sig_analysis/ic_plot.png", "sig_analysis/quantile_plot.png"}
    assert names <= set(recorder.list_artifacts("sig_analysis"))
    assert "portfolio_analysis/excess_return_plot.png" in recorder.list_artifacts("portfolio_analysis")
    png = recorder.load_object("sig_analysis/ic_plot.png")
    assert isinstance(png, bytes) and png.startswith(b"\x89PNG")
    assert recorder.status == "FINISHED"


def test_figures_drawn_in_the_drawing_process_are_the_same_pngs(market: Path, tmp_path: Path) -> None:
    from app.evaluation import drawing
    from app.evaluation.records import wait_for_plots

    manager = ExpManager(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    spec = TaskSpec.from_mapping(_spec(market))
    figures = [
        "sig_analysis/ic_plot.png",
        "sig_analysis/quantile_plot.png",
        "portfolio_analysis/excess_return_plot.png",
    ]
    pngs = {}
    for in_process in (False, True):
        drawing.use_drawing_process(in_process)
        try:
            trainer = TrainerR(manager, build_components, experiment_name="drawn", draw_plots_later=True)
            run_id = trainer.train([spec])[0].run_id
            wait_for_plots()
            if in_process:
                assert drawing._state["pool"] is not None  # the figures really went to the child
        finally:
            drawing.use_drawing_process(False)
        recorder = manager.get_recorder(run_id)
        pngs[in_process] = [recorder.load_object(name) for name in figures]
    assert drawing._state["pool"] is None
    assert all(isinstance(png, bytes) and png.startswith(b"\x89PNG") for png in pngs[True])
    assert pngs[True] == pngs[False]


def test_with_the_store_open_the_run_is_created_on_a_thread_and_gets_every_call(market: Path, tmp_path: Path) -> None:
    import threading

    manager = ExpManager(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    real_start = manager.start
    threads: list[str] = []

    def noting_start(**kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real_start(**kwargs)

    manager.start = noting_start  # type: ignore[method-assign]
    spec = TaskSpec.from_mapping(_spec(market))
    result = task_train(spec, build_components(spec), manager, experiment_name="early")
    assert threads == ["qtrain-run-open"]
    recorder = manager.get_recorder(result.run_id)
    assert recorder.status == "FINISHED" and recorder.list_tags()["qtrain.stage"] == "done"
    assert {"time_data_s", "time_fit_s", "time_records_s", "valid.l2", "IC"} <= set(recorder.list_metrics())
    assert recorder.list_tags()["model"] == "lgbm" and recorder.list_params()["model.num_leaves"] == "15"
    # with a callback for the run id (the task pool's), the run is created on the caller's thread
    threads.clear()
    task_train(spec, build_components(spec), manager, experiment_name="early", on_run=lambda run_id: None)
    assert threads == ["MainThread"]
