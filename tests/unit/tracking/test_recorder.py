"""Recorder: params, batched metrics, NaN/inf, tags, lifecycle and resume, on a real SQLite MLflow store."""

from __future__ import annotations

import logging
import math
import socket
import time

import pytest

from app.core.errors import ConfigError, NoActiveRunError, RecorderNotFoundError, TrackingError
from app.models.base import CurveRecorder
from app.tracking import ExpManager, Recorder


def test_params_are_flattened_and_truncated_in_mlflow(recorder: Recorder) -> None:
    recorder.log_params({"model": {"kwargs": {"lr": 0.05, "num_leaves": 63}}}, seed=7, note="z" * 7000)
    params = recorder.list_params()
    assert params["model.kwargs.lr"] == "0.05"
    assert params["model.kwargs.num_leaves"] == "63"
    assert params["seed"] == "7"
    assert len(params["note"]) == 6000


def test_changing_a_param_is_surfaced_with_the_fix(recorder: Recorder) -> None:
    recorder.log_params(lr=0.1)
    recorder.log_params(lr=0.1)  # the same value again is fine (e.g. a resumed run)
    with pytest.raises(TrackingError, match="write-once"):
        recorder.log_params(lr=0.2)


def test_1000_metrics_in_one_call_are_all_stored_with_their_step(recorder: Recorder) -> None:
    metrics = {f"m{i:04d}": float(i) for i in range(1000)}
    began = time.perf_counter()
    recorder.log_metrics(metrics, step=5)
    elapsed = time.perf_counter() - began
    assert recorder.list_metrics() == metrics
    assert [(p.step, p.value) for p in recorder.get_metric_history("m0999")] == [(5, 999.0)]
    # one log_metric call per metric takes ~5 s for 1000 on SQLite; one log_batch ~0.1 s
    assert elapsed < 1.5


def test_more_than_one_batch_of_metrics_is_chunked(recorder: Recorder) -> None:
    recorder.log_metrics({f"k{i}": 1.0 for i in range(2500)})
    assert len(recorder.list_metrics()) == 2500


def test_curves_keep_their_steps(recorder: Recorder) -> None:
    curve: CurveRecorder = recorder  # the models' callback protocol
    for epoch in range(4):
        curve.log_metrics({"train.loss": 1.0 / (epoch + 1)}, step=epoch)
    recorder.log_metrics(step=9, ic=0.03)  # Qlib's keyword spelling
    history = recorder.get_metric_history("train.loss")
    assert [p.step for p in history] == [0, 1, 2, 3]
    assert history[-1].value == pytest.approx(0.25)
    assert recorder.list_metrics()["ic"] == pytest.approx(0.03)
    assert recorder.get_metric_history("never") == []


def test_whole_series_are_logged_with_their_steps_across_batches(recorder: Recorder) -> None:
    curve: CurveRecorder = recorder
    curve.log_series({"train.l2": [1.0 / (i + 1) for i in range(700)], "valid.l2": [2.0, float("inf"), 1.5]})
    train = recorder.get_metric_history("train.l2")
    assert [p.step for p in train] == list(range(700)) and train[-1].value == pytest.approx(1 / 700)
    assert [(p.step, p.value) for p in recorder.get_metric_history("valid.l2")] == [(0, 2.0), (2, 1.5)]


def test_nan_is_stored_and_inf_is_skipped(recorder: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="app.tracking.values"):
        recorder.log_metrics({"ic": float("nan"), "ratio": math.inf, "drawdown": -math.inf, "ok": 1.0})
    stored = recorder.list_metrics()
    assert math.isnan(stored["ic"])
    assert "ratio" not in stored and "drawdown" not in stored
    assert stored["ok"] == 1.0
    assert "ratio, drawdown" in caplog.text


def test_metric_errors_are_raised_not_swallowed(recorder: Recorder) -> None:
    with pytest.raises(ConfigError, match="metric 'loss'"):
        recorder.log_metrics(loss="high")  # type: ignore[arg-type]
    with pytest.raises(TrackingError, match="Names may only contain"):
        recorder.log_metrics({"bad key!": 1.0})
    with pytest.raises(ConfigError, match="both in the mapping and as keywords"):
        recorder.log_metrics({"a": 1.0}, a=2.0)
    assert recorder.list_metrics() == {}


def test_start_tags_hostname_git_commit_and_task_hash(manager: ExpManager) -> None:
    rec = manager.start_exp(experiment_name="tags", task_hash="h123")
    rec.set_tags(stage="fit", blob="q" * 9000)
    manager.end_exp()
    tags = rec.list_tags()
    assert tags["hostname"] == socket.gethostname()
    assert tags["git_commit"] == "unknown"  # the fixture's source_dir is tmp_path, not a checkout
    assert tags["task_hash"] == "h123"
    assert tags["stage"] == "fit"
    assert len(tags["blob"]) == 8000
    assert rec.name  # MLflow names unnamed runs


def test_resume_by_run_id_continues_the_same_run(manager: ExpManager) -> None:
    first = manager.start_exp(experiment_name="resume", recorder_name="r")
    first.log_metrics(loss=1.0, step=0)
    manager.end_exp("FAILED")
    assert first.status == "FAILED"

    again = manager.start_exp(run_id=first.id)  # the experiment comes from the run
    assert again.id == first.id and again.status == "RUNNING"
    again.log_metrics(loss=0.5, step=1)
    manager.end_exp()
    assert first.status == "FINISHED"
    assert [p.step for p in first.get_metric_history("loss")] == [0, 1]


def test_resume_by_name_and_new_runs(manager: ExpManager) -> None:
    a = manager.start_exp(experiment_name="byname", recorder_name="daily")
    manager.end_exp()
    b = manager.start_exp(experiment_name="byname", recorder_name="daily", resume=True)
    manager.end_exp()
    c = manager.start_exp(experiment_name="byname", recorder_name="daily")
    manager.end_exp()
    d = manager.start_exp(experiment_name="byname", recorder_name="other", resume=True)
    manager.end_exp()
    assert b.id == a.id
    assert c.id != a.id
    assert d.name == "other" and d.id not in (a.id, c.id)
    assert len(manager.get_exp(experiment_name="byname").list_recorders()) == 3


def test_resume_errors_name_the_run(manager: ExpManager) -> None:
    with pytest.raises(ConfigError, match="resume=True needs recorder_name"):
        manager.start_exp(experiment_name="x", resume=True)
    with pytest.raises(RecorderNotFoundError, match="no run with id 'deadbeef'"):
        manager.start_exp(experiment_name="x", run_id="deadbeef")
    with pytest.raises(RecorderNotFoundError, match="no run 'deadbeef'"):
        manager.start_exp(run_id="deadbeef")
    other = manager.start_exp(experiment_name="y")
    manager.end_exp()
    with pytest.raises(RecorderNotFoundError, match="belongs to experiment"):
        manager.start_exp(experiment_name="x", run_id=other.id)
    assert manager.active_recorder is None


def test_lifecycle_errors(manager: ExpManager) -> None:
    manager.start_exp(experiment_name="life")
    with pytest.raises(ConfigError, match="still active"):
        manager.start_exp(experiment_name="life")
    with pytest.raises(ConfigError, match="use one of FINISHED, FAILED, KILLED"):
        manager.get_recorder().end_run("DONE")
    manager.end_exp()
    with pytest.raises(NoActiveRunError):
        manager.get_recorder()
    unstarted = manager.get_exp(experiment_name="life").create_recorder("later")
    with pytest.raises(NoActiveRunError, match="call start_run"):
        _ = unstarted.id


def test_info_and_artifact_uri(recorder: Recorder, artifact_root: object) -> None:
    info = recorder.info
    assert info["id"] == recorder.id and info["name"] == "r1" and info["status"] == "RUNNING"
    assert recorder.artifact_uri.startswith(f"{artifact_root}/unit/{recorder.id}")
