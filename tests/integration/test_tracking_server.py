"""Workers and client on an MLflow tracking server with proxied artifacts (``mlflow server --serve-artifacts``):
every artifact goes through the server, none to a worker's or the client's disk, and each run's artifacts can be
fetched from the server alone."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from app.core.settings import load_settings
from tests.integration.celery_harness import BIN, Cluster, finish, free_port, runs_of, sweep_args, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'backend.db'}", "--serve-artifacts",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((root / "server.log").read_text()[-3000:]) from None
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_artifacts_go_through_the_tracking_server(
    tracking_server: str, cluster_factory: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = cluster_factory(0)
    cluster.env["MLFLOW_TRACKING_URI"] = tracking_server
    cluster.start_worker("w1")
    code, out, err = finish(cluster.qtrain(*sweep_args(seeds=(0, 1))), timeout=240)
    assert code == 0, err[-3000:] + cluster.worker_log("w1")
    assert "## sweep: 2 of 2 jobs finished" in out
    wait_for(lambda: sorted(s for _, s, _ in runs_of(cluster)) == ["FINISHED"] * 2, 60, "both runs to end")

    from mlflow import MlflowClient

    client = MlflowClient(tracking_server)
    for run_id, _, _ in runs_of(cluster):
        run = client.get_run(run_id)
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
        names = {a.path for a in client.list_artifacts(run_id)}
        assert {"pred.parquet", "spec.json", "model"} <= names, names

        def figures(run_id: str = run_id) -> list[str]:  # drawn by the worker after the task's result is recorded
            return [a.path for a in client.list_artifacts(run_id, "sig_analysis") if a.path.endswith(".png")]

        wait_for(lambda: len(figures()) == 2, 60, f"the figures of run {run_id}")
        local = Path(client.download_artifacts(run_id, "pred.parquet", str(tmp_path / run_id)))
        assert len(pd.read_parquet(local)) > 0
    # nothing was written next to the worker or the client: the server holds every artifact
    assert not list(cluster.work.rglob("mlartifacts")) and not list(cluster.work.rglob("mlruns"))


def test_a_local_sweep_on_a_server_prints_each_runs_ui_page_and_names_runs(
    tracking_server: str, cluster_factory: Callable[..., Cluster]
) -> None:
    cluster = cluster_factory(0)
    cluster.env["MLFLOW_TRACKING_URI"] = tracking_server
    args = [arg for arg in sweep_args(seeds=(1, 2)) if arg != "hydra/launcher=celery"]
    code, out, err = finish(cluster.qtrain(*args, "experiment_name=ui"), timeout=240)
    assert code == 0, err[-3000:]

    from mlflow import MlflowClient

    client = MlflowClient(tracking_server)
    experiment = client.get_experiment_by_name("ui")
    assert experiment is not None and experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.info.run_name.rsplit("-", 1)[0] for run in runs) == ["lgbm-alpha158-seed1", "lgbm-alpha158-seed2"]
    assert all(run.info.run_name.endswith(run.data.tags["task_hash"][:6]) for run in runs)
    pages = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("see it in the MLflow UI: ")]
    assert sorted(pages) == sorted(
        f"{tracking_server}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"
        "?workflowType=machine_learning"  # MLflow 3.17's UI opens it in model-training mode, not GenAI
        for run in runs
    )
    with urllib.request.urlopen(pages[0], timeout=10) as page:  # the server's UI answers there
        assert page.status == 200


def test_a_tracking_server_leaves_the_artifact_root_to_it() -> None:
    server = load_settings({"MLFLOW_TRACKING_URI": "http://infra:5000"}, Path("/w"))
    assert server.artifact_root is None
    s3 = load_settings({"MLFLOW_TRACKING_URI": "http://infra:5000", "QTRAIN_ARTIFACT_ROOT": "s3://b/q"}, Path("/w"))
    assert s3.artifact_root == "s3://b/q"
    local = load_settings({"MLFLOW_TRACKING_URI": "sqlite:///m.db"}, Path("/w"))
    assert local.artifact_root == Path("/w/.qtrain/mlartifacts")
    assert load_settings({"QTRAIN_ARTIFACT_ROOT": "arts"}, Path("/w")).artifact_root == Path("/w/arts")
