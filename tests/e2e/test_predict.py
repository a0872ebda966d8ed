"""Inference from finished runs: `qtrain predict` reproduces a run's pred.parquet bit for bit (LightGBM and the
torch MLP), on sub-ranges, another store and later dates; the MLflow model loads through pyfunc and predicts the
same; `qtrain register` makes registry versions; bad input is a one-line error (exit 2) before any work."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from app.cli.main import main
from app.config.compose import build_components
from app.core.errors import ArtifactNotFoundError
from app.data.store import QlibStore
from app.data.synth import SynthSpec, write_synth_market
from app.models.base import load_model
from app.tracking.logged_model import find_logged_model, register_logged_model
from app.tracking.manager import ExpManager
from app.workflow.inference import predict_run
from app.workflow.spec import TaskSpec
from app.workflow.train import begin_task_train, task_train
from tests.small_specs import small_spec

pytestmark = pytest.mark.slow

SEGMENTS = {"train": ["2015-01-05", "2015-10-30"], "valid": ["2015-11-02", "2015-12-31"],
            "test": ["2016-01-04", "2016-03-31"]}  # fmt: skip
MLP = {"_target_": "app.models.mlp.MLPModel", "hidden_sizes": [16], "n_epochs": 2, "batch_size": 512,
       "device": "cpu", "seed": 0}  # fmt: skip
# the MLP's features are robust-z-scored with statistics of the train segment: a processor fitted in training
NN_PROCESSORS = [
    {"_target_": "app.dataset.processors.RobustZScoreNorm", "fields_group": "feature", "clip_outlier": True,
     "fit_start_time": SEGMENTS["train"][0], "fit_end_time": SEGMENTS["train"][1]},
    {"_target_": "app.dataset.processors.Fillna", "fields_group": "feature"},
]  # fmt: skip


def _spec(root: Path, model: str) -> dict[str, Any]:
    spec = small_spec(root, SEGMENTS)
    spec["records"] = [{"_target_": "app.evaluation.records.SignalRecord"}]
    if model == "mlp":
        spec["model"] = dict(MLP)
        spec["dataset"]["handler"]["infer_processors"] = copy.deepcopy(NN_PROCESSORS)
    return spec


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 25-instrument market and one finished run per model (lgbm, mlp) in one tracking store."""
    base = tmp_path_factory.mktemp("predict")
    root = base / "store"
    write_synth_market(root, SynthSpec(instruments=25, days=330, seed=5, signal=2.0))
    uri, artifacts = f"sqlite:///{base / 'mlflow.db'}", base / "artifacts"
    manager = ExpManager(uri, artifacts)
    runs = {}
    for model in ("lgbm", "mlp"):
        spec = TaskSpec.from_mapping(_spec(root, model))
        runs[model] = task_train(spec, build_components(spec), manager, experiment_name="predict").run_id
    return {"root": root, "uri": uri, "artifacts": artifacts, "manager": manager, "runs": runs}


@pytest.fixture
def cli_env(trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["uri"])
    monkeypatch.setenv("QTRAIN_ARTIFACT_ROOT", str(trained["artifacts"]))
    monkeypatch.setenv("QTRAIN_HOME", str(tmp_path / "home"))


def _stored(trained: dict[str, Any], model: str) -> pd.DataFrame:
    frame: pd.DataFrame = trained["manager"].get_recorder(trained["runs"][model]).load_object("pred")
    return frame


@pytest.mark.parametrize("model", ["lgbm", "mlp"])
def test_predict_reproduces_the_runs_predictions_bit_for_bit(
    trained: dict[str, Any], cli_env: None, tmp_path: Path, model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pred.parquet"
    assert main(["predict", trained["runs"][model], "--out", str(out)]) == 0
    assert f"to {out}" in capsys.readouterr().out
    stored = _stored(trained, model)
    assert len(stored) > 1000
    pd.testing.assert_frame_equal(pd.read_parquet(out), stored, check_exact=True)
    # the file is the run's own artifact format: read back by the same loader, Series metadata and all
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(_artifact(trained, model)), check_exact=True)


def _artifact(trained: dict[str, Any], model: str) -> Path:
    recorder = trained["manager"].get_recorder(trained["runs"][model])
    return recorder.download_artifact("pred.parquet")


@pytest.mark.parametrize("model", ["lgbm", "mlp"])
def test_predict_on_a_sub_range_is_the_stored_rows_of_that_range(trained: dict[str, Any], model: str) -> None:
    manager, run_id = trained["manager"], trained["runs"][model]
    scores = predict_run(manager, run_id, build_components, start="2016-02-01", end="2016-02-29")
    stored = _stored(trained, model)["score"]
    dates = stored.index.get_level_values("datetime")
    expected = stored[(dates >= "2016-02-01") & (dates <= "2016-02-29")]
    assert len(expected) > 100
    pd.testing.assert_series_equal(scores, expected, check_exact=True)


@pytest.mark.parametrize("model", ["lgbm", "mlp"])
def test_another_store_and_later_dates_use_the_processors_fitted_in_training(
    trained: dict[str, Any], tmp_path: Path, model: str
) -> None:
    manager, run_id, root = trained["manager"], trained["runs"][model], trained["root"]
    copy_root = tmp_path / "copy"
    shutil.copytree(root, copy_root)
    # another store (the same data): features recomputed there, processors fitted on the run's store
    again = predict_run(manager, run_id, build_components, data=copy_root)
    pd.testing.assert_series_equal(again, _stored(trained, model)["score"], check_exact=True)

    # dates after the run's handler window: as if training had built its dataset up to them
    last = QlibStore(root).calendar()[-1]
    later = predict_run(manager, run_id, build_components, start="2016-04-01")
    assert later.index.get_level_values("datetime").max() == last and later.notna().all()
    spec = TaskSpec.from_mapping(_spec(root, model))
    components = build_components(spec)
    handler = dataclasses.replace(components.dataset.handler, end_time=str(last.date()))
    segments = {**SEGMENTS, "test": ["2016-04-01", str(last.date())]}
    wider = dataclasses.replace(components.dataset, handler=handler, segments=segments)
    recorder = manager.get_recorder(run_id)
    trained_model = load_model(recorder.load_object("model", dst_dir=tmp_path / "m"))
    expected = trained_model.predict(wider.build(components.store), "test")
    pd.testing.assert_series_equal(later, expected, check_exact=True)


@pytest.mark.parametrize("model", ["lgbm", "mlp"])
def test_the_logged_mlflow_model_loads_through_pyfunc_and_predicts_the_same(
    trained: dict[str, Any], model: str
) -> None:
    import mlflow.pyfunc

    manager, run_id = trained["manager"], trained["runs"][model]
    client = manager.client
    logged = find_logged_model(client, run_id)
    assert [o.model_id for o in client.get_run(run_id).outputs.model_outputs] == [logged.model_id]
    assert logged.source_run_id == run_id and str(logged.status).endswith("READY")
    mlflow.set_tracking_uri(trained["uri"])
    try:
        pyfunc = mlflow.pyfunc.load_model(f"models:/{logged.model_id}")
    finally:
        mlflow.set_tracking_uri(None)
    inputs = [c.name for c in pyfunc.metadata.get_input_schema().inputs]
    assert inputs[:2] == ["datetime", "instrument"] and len(inputs) > 20
    spec = TaskSpec.from_mapping(_spec(trained["root"], model))
    components = build_components(spec)
    features = components.dataset.build(components.store).prepare("test", "feature")
    scores = pyfunc.predict(features.reset_index())
    stored = _stored(trained, model)
    assert list(scores.columns) == ["score"]
    assert scores["score"].to_numpy().tobytes() == stored["score"].to_numpy().tobytes()
    shuffled = features.reset_index().sample(frac=1.0, random_state=0)  # any row order: scores row for row
    again = pyfunc.predict(shuffled)
    assert (
        again["score"].to_numpy().tobytes()
        == stored["score"].reindex(pd.MultiIndex.from_frame(shuffled[["datetime", "instrument"]])).to_numpy().tobytes()
    )


def test_register_creates_a_version_of_the_logged_model(
    trained: dict[str, Any], cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = trained["runs"]["lgbm"]
    assert main(["register", run_id, "alpha-lgbm"]) == 0
    assert "registered alpha-lgbm version 1" in capsys.readouterr().out
    assert main(["register", run_id, "--name", "alpha-lgbm"]) == 0
    assert "version 2" in capsys.readouterr().out
    client = trained["manager"].client
    version = client.get_model_version("alpha-lgbm", "2")
    logged = find_logged_model(client, run_id)
    assert version.run_id == run_id and version.source == logged.artifact_location
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [
        {"name": "alpha-lgbm", "version": 1},
        {"name": "alpha-lgbm", "version": 2},
    ]


def test_register_works_whatever_mlflows_process_wide_uri(trained: dict[str, Any], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)  # MLFLOW_TRACKING_URI unset: MLflow's default store is not this one
    client = trained["manager"].client
    assert register_logged_model(client, trained["runs"]["mlp"], "alpha-mlp") == 1
    assert client.get_model_version("alpha-mlp", "1").run_id == trained["runs"]["mlp"]


def test_bad_input_is_one_line_and_exit_2_before_any_work(
    trained: dict[str, Any], cli_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level("DEBUG")
    out = tmp_path / "p.parquet"
    run_id = trained["runs"]["lgbm"]

    def refused(*args: str) -> str:
        assert main(["predict", *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and not out.exists()
        assert not [r for r in caplog.records if r.name.startswith(("app.features", "app.dataset"))]  # no work
        return err

    assert "no run 'nope'" in refused("nope")
    scheduled = begin_task_train(TaskSpec.from_mapping(_spec(trained["root"], "lgbm")), trained["manager"],
                                 experiment_name="predict")  # fmt: skip
    assert "has no model artifact" in refused(scheduled)
    assert "outside the calendar" in refused(run_id, "--start", "2030-01-02")
    assert "outside the calendar" in refused(run_id, "--start", "2016-01-04", "--end", "2031-01-01")
    assert "start 2016-03-01 is after end" in refused(run_id, "--start", "2016-03-01", "--end", "2016-02-01")
    assert "is not a market store" in refused(run_id, "--data", str(tmp_path / "nowhere"))
    assert main(["register", scheduled, "m"]) == 2
    assert f"run {scheduled} has no artifact 'model'" in capsys.readouterr().err
    with pytest.raises(ArtifactNotFoundError, match=f"run {scheduled} has no logged MLflow model"):
        find_logged_model(trained["manager"].client, scheduled)
