"""Recorder.deferred_artifacts: one staging folder, read back while open, uploaded in one call, also on failure."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from app.core.errors import TrackingError, UnsupportedObjectError
from app.tracking import ExpManager, Recorder
from app.tracking.backend import local_artifact_dir


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str | None]]]:
    """Every ``MlflowClient.log_artifacts`` call as (local dir, artifact path); the calls still go through."""
    calls: list[tuple[str, str | None]] = []
    real = MlflowClient.log_artifacts

    def counting(self: MlflowClient, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        calls.append((local_dir, artifact_path))
        real(self, run_id, local_dir, artifact_path)

    monkeypatch.setattr(MlflowClient, "log_artifacts", counting)
    yield calls


def _pred(scale: float = 1.0) -> pd.Series:
    index = pd.MultiIndex.from_product(
        [pd.date_range("2021-01-04", periods=3), ["SH600000", "SZ000001"]], names=["datetime", "instrument"]
    )
    return pd.Series(np.linspace(-1, 1, 6) * scale, index=index, name="score")


def _model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "saved-model"
    directory.mkdir(parents=True)
    (directory / "model.json").write_text(json.dumps({"format": 1, "type": "lgbm"}))
    (directory / "model.txt").write_text("tree\n")
    return directory


def _save_everything(recorder: Recorder, tmp_path: Path) -> None:
    recorder.save_objects(pred=_pred(), label=_pred(2.0).rename("LABEL0").to_frame())
    recorder.save_objects(model=_model_dir(tmp_path))
    recorder.save_objects(artifact_path="sig_analysis", ic=pd.DataFrame({"ic": [0.1, 0.2]}), note="ok")
    recorder.save_objects(artifact_path="portfolio_analysis/deep", port_analysis_1day={"ret": 0.1})
    (tmp_path / "notes.md").write_text("# notes\n")
    recorder.log_artifact(tmp_path / "notes.md", "docs")


def _tree(recorder: Recorder) -> dict[str, bytes]:
    root = local_artifact_dir(recorder.artifact_uri)
    assert root is not None
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_everything_goes_up_in_one_call_with_the_same_tree(
    manager: ExpManager, tmp_path: Path, uploads: list[tuple[str, str | None]]
) -> None:
    with manager.start(experiment_name="unit", recorder_name="eager") as eager:
        _save_everything(eager, tmp_path / "eager")
    eager_calls = len(uploads)
    uploads.clear()
    with manager.start(experiment_name="unit", recorder_name="deferred") as deferred:
        with deferred.deferred_artifacts():
            _save_everything(deferred, tmp_path / "deferred")
            assert uploads == []
        assert len(uploads) == 1 and uploads[0][1] is None
    assert eager_calls > 1
    eager_tree, deferred_tree = _tree(eager), _tree(deferred)
    assert sorted(deferred_tree) == sorted(eager_tree)
    assert "model/model.json" in deferred_tree and "portfolio_analysis/deep/port_analysis_1day.json" in deferred_tree
    for name in ("sig_analysis/note.txt", "model/model.txt", "docs/notes.md"):
        assert deferred_tree[name] == eager_tree[name]
    pd.testing.assert_series_equal(deferred.load_object("pred"), _pred())  # type: ignore[arg-type]


def test_staged_objects_are_listed_and_loaded_before_the_upload(
    recorder: Recorder, tmp_path: Path, uploads: list[tuple[str, str | None]]
) -> None:
    recorder.save_objects(pred=_pred(), old={"v": 1})
    uploads.clear()
    with recorder.deferred_artifacts():
        _save_everything(recorder, tmp_path)
        recorder.save_objects(pred=_pred(3.0))  # replaces the uploaded pred and the staged one
        assert recorder.list_artifacts() == [
            "docs", "label.parquet", "model", "old.json", "portfolio_analysis", "pred.parquet", "sig_analysis",
        ]  # fmt: skip
        assert recorder.list_artifacts("sig_analysis") == ["sig_analysis/ic.parquet", "sig_analysis/note.txt"]
        pd.testing.assert_series_equal(recorder.load_object("pred"), _pred(3.0))  # type: ignore[arg-type]
        assert recorder.load_object("old") == {"v": 1}  # not staged: read from the run
        assert recorder.load_object("sig_analysis/note") == "ok"
        assert recorder.load_object("portfolio_analysis/deep/port_analysis_1day") == {"ret": 0.1}
        model = recorder.load_object("model", dst_dir=tmp_path / "copy")
        assert isinstance(model, Path) and model.parent == tmp_path / "copy"
        assert json.loads((model / "model.json").read_text())["type"] == "lgbm"
        assert uploads == []
    assert len(uploads) == 1
    pd.testing.assert_series_equal(recorder.load_object("pred"), _pred(3.0))  # type: ignore[arg-type]
    assert recorder.load_object("docs/notes.md") == "# notes\n"


def test_a_failing_block_still_uploads_what_it_staged(
    manager: ExpManager, uploads: list[tuple[str, str | None]]
) -> None:
    with (
        pytest.raises(ValueError, match="record broke"),
        manager.start(experiment_name="unit") as recorder,
        recorder.deferred_artifacts(),
    ):
        recorder.save_objects(pred=_pred())
        raise ValueError("record broke")
    failed = manager.get_recorder(recorder.id)
    assert failed.status == "FAILED"
    assert {"pred.parquet", "traceback.txt"} <= set(failed.list_artifacts())
    assert "record broke" in str(failed.load_object("traceback"))
    assert len(uploads) == 2  # the staged folder, then the traceback the manager adds


def test_an_upload_error_does_not_hide_the_blocks_error(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(self: MlflowClient, *args: object, **kwargs: object) -> None:
        raise MlflowException("artifact store is down")

    monkeypatch.setattr(MlflowClient, "log_artifacts", refuse)
    with pytest.raises(KeyError, match="the real error"), recorder.deferred_artifacts():
        recorder.save_objects(pred=_pred())
        raise KeyError("the real error")
    assert "could not upload the staged artifacts" in caplog.text
    with pytest.raises(TrackingError, match="artifact store is down"), recorder.deferred_artifacts():
        recorder.save_objects(pred=_pred())


def test_refused_objects_stage_nothing_and_nesting_joins_the_outer_block(
    recorder: Recorder, uploads: list[tuple[str, str | None]]
) -> None:
    with recorder.deferred_artifacts():
        with pytest.raises(UnsupportedObjectError):
            recorder.save_objects(ok={"a": 1}, thing=object())
        assert recorder.list_artifacts() == []
        with recorder.deferred_artifacts():
            recorder.save_objects(inner={"a": 1})
        assert uploads == []
        recorder.save_objects(outer={"b": 2})
    assert len(uploads) == 1
    assert recorder.list_artifacts() == ["inner.json", "outer.json"]
    with recorder.deferred_artifacts():
        pass
    assert len(uploads) == 1  # nothing staged, nothing uploaded
