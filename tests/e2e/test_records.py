"""Train a small model, run the three records inside an MLflow run, and read every artifact back without qtrain."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from app.cli.main import main
from app.config.compose import build_components
from app.data.store import QlibStore
from app.data.synth import SynthSpec, write_synth_market
from app.dataset.handler import DataHandler, DatasetSpec
from app.dataset.processors import CSZScoreNorm, DropnaLabel
from app.evaluation.backtest import BacktestConfig
from app.evaluation.records import PortAnaRecord, RecordContext, SigAnaRecord, SignalRecord
from app.features.handlers import alpha158
from app.models.lgbm import LightGBMModel
from app.tracking.manager import ExpManager
from app.workflow.spec import TaskSpec
from app.workflow.train import task_train
from tests.small_specs import small_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[QlibStore, DatasetSpec, Path]:
    root = tmp_path_factory.mktemp("records")
    write_synth_market(root / "store", SynthSpec(instruments=30, days=320, seed=4, signal=2.0))
    store = QlibStore(root / "store")
    cal = store.calendar()
    d = [str(cal[i].date()) for i in (0, 200, 201, 250, 251, len(cal) - 1)]
    handler = DataHandler(
        features=alpha158(rolling_windows=(5, 20)), market="synth", start_time=d[0], end_time=d[5],
        fit_start_time=d[0], fit_end_time=d[1], learn_processors=[DropnaLabel(), CSZScoreNorm(fields_group="label")],
    )  # fmt: skip
    spec = DatasetSpec(handler=handler, segments={"train": d[0:2], "valid": d[2:4], "test": d[4:6]})
    return store, spec, root


def _records() -> list[SignalRecord | SigAnaRecord | PortAnaRecord]:
    return [SignalRecord(), SigAnaRecord(ana_long_short=True), PortAnaRecord(config=BacktestConfig(topk=5, n_drop=1))]


def _count_uploads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Artifact paths of every ``MlflowClient.log_artifacts`` call (the calls still go through)."""
    calls: list[str] = []
    real = MlflowClient.log_artifacts

    def counting(self: MlflowClient, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        calls.append(artifact_path or "")
        real(self, run_id, local_dir, artifact_path)

    monkeypatch.setattr(MlflowClient, "log_artifacts", counting)
    return calls


def test_records_in_a_run_and_plain_readers(
    setup: tuple[QlibStore, DatasetSpec, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, spec, root = setup
    dataset = spec.build(store)
    model = LightGBMModel(num_boost_round=30, num_threads=1, num_leaves=15)
    manager = ExpManager(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts")
    uploads = _count_uploads(monkeypatch)
    with manager.start(experiment_name="records") as recorder:
        model.fit(dataset, recorder)
        with recorder.deferred_artifacts():
            model.save(root / "model")
            recorder.save_objects(model=root / "model")
            metrics: dict[str, float] = {}
            for record in _records():
                metrics |= record.generate(RecordContext(model, dataset, store, recorder))
            assert uploads == []  # the records read pred/label back from the staging folder
        run_id = recorder.id
    assert uploads == [""]  # model and every record artifact in one upload of the whole tree
    assert {"IC", "ICIR", "Rank IC", "Rank ICIR", "Long-Short Ann Return"} <= set(metrics)
    assert "1day.excess_return_with_cost.annualized_return" in metrics
    logged = manager.get_recorder(run_id).list_metrics()
    assert logged["IC"] == pytest.approx(metrics["IC"])
    assert manager.get_recorder(run_id).status == "FINISHED"
    artifacts = set(manager.get_recorder(run_id).list_artifacts())
    assert artifacts == {"pred.parquet", "label.parquet", "model", "sig_analysis", "portfolio_analysis"}
    assert set(manager.get_recorder(run_id).list_artifacts("sig_analysis")) == {
        f"sig_analysis/{name}"
        for name in ("ic.parquet", "quantile_returns.parquet", "ic_plot.png", "quantile_plot.png")
    }
    assert set(manager.get_recorder(run_id).list_artifacts("portfolio_analysis")) == {
        f"portfolio_analysis/{name}"
        for name in ("report_normal_1day.parquet", "positions_normal_1day.parquet", "port_analysis_1day.json",
                     "excess_return_plot.png")
    }  # fmt: skip

    local = manager.get_recorder(run_id).download_artifact("")
    script = textwrap.dedent(
        f"""
        import json, sys, pandas as pd, lightgbm as lgb
        from pathlib import Path
        root = Path({str(local)!r})
        pred = pd.read_parquet(root / "pred.parquet"); label = pd.read_parquet(root / "label.parquet")
        assert list(pred.columns) == ["score"] and pred.index.names == ["datetime", "instrument"]
        ic = pd.read_parquet(root / "sig_analysis" / "ic.parquet")
        report = pd.read_parquet(root / "portfolio_analysis" / "report_normal_1day.parquet")
        assert {{"return", "cost", "bench", "turnover", "account"}} <= set(report.columns)
        pd.read_parquet(root / "portfolio_analysis" / "positions_normal_1day.parquet")
        metrics = json.loads((root / "portfolio_analysis" / "port_analysis_1day.json").read_text())
        assert "1day.excess_return_with_cost.max_drawdown" in metrics
        for png in ["sig_analysis/ic_plot.png", "portfolio_analysis/excess_return_plot.png"]:
            assert (root / png).read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
        booster = lgb.Booster(model_file=str(root / "model" / "model.txt"))
        assert json.loads((root / "model" / "model.json").read_text())["type"] == "lgbm"
        assert "app" not in sys.modules and not any(m.startswith("app.") for m in sys.modules)
        print(len(pred), len(ic), len(report), booster.num_trees())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]


def test_task_train_uploads_the_model_and_records_in_one_call(
    setup: tuple[QlibStore, DatasetSpec, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, spec, _ = setup
    segments = {name: [str(pd.Timestamp(day).date()) for day in span] for name, span in spec.segments.items()}
    task = TaskSpec.from_mapping(small_spec(store.root, segments))
    manager = ExpManager(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    uploads = _count_uploads(monkeypatch)
    result = task_train(task, build_components(task), manager, experiment_name="one-upload")
    assert len(uploads) == 2  # spec.json when the task is logged, then model + records together
    recorder = manager.get_recorder(result.run_id)
    assert set(recorder.list_artifacts()) == {
        "spec.json", "model", "pred.parquet", "label.parquet", "sig_analysis", "portfolio_analysis",
    }  # fmt: skip
    assert recorder.list_metrics()["time_records_s"] == pytest.approx(result.timings["records"])


def test_failing_record_ends_failed_with_traceback(setup: tuple[QlibStore, DatasetSpec, Path]) -> None:
    store, spec, root = setup
    manager = ExpManager(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts")
    dataset = spec.build(store)
    model = LightGBMModel(num_boost_round=5, num_threads=1)
    model.fit(dataset)
    with (
        pytest.raises(Exception, match="nowhere"),
        manager.start(experiment_name="records") as recorder,
        recorder.deferred_artifacts(),
    ):
        SignalRecord().generate(RecordContext(model, dataset, store, recorder))
        PortAnaRecord(config=BacktestConfig(benchmark="NOWHERE")).generate(
            RecordContext(model, dataset, store, recorder)
        )
    failed = manager.get_recorder(recorder.id)
    assert failed.status == "FAILED"
    assert "NOWHERE" in failed.list_tags()["error"]
    assert {"traceback.txt", "pred.parquet", "label.parquet"} <= set(failed.list_artifacts())  # staged ones kept


def test_cli_evaluate_report_register(
    setup: tuple[QlibStore, DatasetSpec, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    store, spec, root = setup
    dataset = spec.build(store)
    model = LightGBMModel(num_boost_round=20, num_threads=1)
    model.fit(dataset)
    pred = model.predict(dataset, "test").rename("score").reset_index()
    pred.to_parquet(tmp_path / "pred.parquet")
    args = ["evaluate", "--pred", str(tmp_path / "pred.parquet"), "--data", str(store.root), "--market", "synth"]
    assert main([*args, "--topk", "5", "--n-drop", "1", "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "1day.excess_return_with_cost.information_ratio" in printed and "Rank ICIR" in printed
    assert set(json.loads((tmp_path / "m.json").read_text())) >= {"IC", "1day.excess_return_without_cost.mean"}

    bad = pd.DataFrame({"datetime": ["2020-01-02"], "instrument": ["X"]})
    bad.to_parquet(tmp_path / "bad.parquet")
    assert main(["evaluate", "--pred", str(tmp_path / "bad.parquet"), "--data", str(store.root)]) == 2
    assert "missing column(s) score" in capsys.readouterr().err

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("QTRAIN_ARTIFACT_ROOT", str(root / "artifacts"))
    assert main(["report", "records", "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert "mean ± std per configuration" in out and "Rank ICIR" in out and "FINISHED" in out
    assert main(["report", "nope"]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err
    manager = ExpManager(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts")
    finished = manager.search_records(["records"], filter_string="attributes.status = 'FINISHED'")
    run_id = str(finished["run_id"].iloc[0])
    assert main(["register", run_id, "--name", "lgbm-demo"]) == 0
    assert "registered lgbm-demo version 1" in capsys.readouterr().out
