"""R: lazily built from settings, run status on normal exit / exception / Ctrl-C, delegation to the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.errors import ConfigError, NoActiveRunError
from app.core.settings import Settings, load_settings
from app.tracking import ExpManager
from app.tracking.facade import RecorderFacade


def _facade(tracking_uri: str, tmp_path: Path, calls: list[int] | None = None) -> RecorderFacade:
    def settings() -> Settings:
        if calls is not None:
            calls.append(1)
        env = {"MLFLOW_TRACKING_URI": tracking_uri, "QTRAIN_ARTIFACT_ROOT": str(tmp_path / "arts")}
        return load_settings(env, cwd=tmp_path)

    return RecorderFacade(settings=settings)


def test_r_builds_its_manager_from_settings_on_first_use(tracking_uri: str, tmp_path: Path) -> None:
    calls: list[int] = []
    r = _facade(tracking_uri, tmp_path, calls)
    assert calls == []
    with r.start(experiment_name="facade", recorder_name="ok") as rec:
        r.log_params(model={"kwargs": {"lr": 0.1}})
        r.log_metrics({"ic": 0.02}, step=1)
        r.set_tags(stage="test")
        r.save_objects(report={"ic": 0.02})
        assert r.load_object("report") == {"ic": 0.02}
        assert r.get_recorder() is rec
    assert calls == [1]
    assert rec.status == "FINISHED"
    assert rec.list_params() == {"model.kwargs.lr": "0.1"}
    assert rec.list_tags()["stage"] == "test"
    assert rec.artifact_uri.startswith(f"{tmp_path}/arts/facade/")
    assert r.get_recorder(recorder_name="ok", experiment_name="facade").id == rec.id
    assert list(r.search_records("facade")["run_id"]) == [rec.id]
    assert "facade" in r.list_experiments()
    assert list(r.list_recorders("facade")) == [rec.id]


def test_an_exception_fails_the_run_and_keeps_the_traceback(manager: ExpManager) -> None:
    r = RecorderFacade(manager)

    def train() -> None:
        raise ValueError("boom: bad segment")

    with pytest.raises(ValueError, match="boom"), r.start(experiment_name="facade") as rec:
        r.log_metrics(loss=1.0)
        train()
    assert rec.status == "FAILED"
    assert rec.list_tags()["error"] == "ValueError: boom: bad segment"
    text = rec.load_object("traceback")
    assert isinstance(text, str)
    assert text.startswith("Traceback") and "in train" in text and "ValueError: boom" in text
    assert manager.active_recorder is None


def test_ctrl_c_kills_the_run(manager: ExpManager) -> None:
    r = RecorderFacade(manager)
    with pytest.raises(KeyboardInterrupt), r.start(experiment_name="facade") as rec:
        raise KeyboardInterrupt
    assert rec.status == "KILLED"
    assert "error" not in rec.list_tags()


def test_resume_through_r(manager: ExpManager) -> None:
    r = RecorderFacade(manager)
    with r.start(experiment_name="facade") as first:
        r.log_metrics(loss=1.0, step=0)
    with r.start(run_id=first.id) as again:
        r.log_metrics(loss=0.5, step=1)
    assert again.id == first.id
    assert [p.value for p in first.get_metric_history("loss")] == [1.0, 0.5]


def test_calls_outside_a_run_say_what_to_do(manager: ExpManager) -> None:
    r = RecorderFacade(manager)
    with pytest.raises(NoActiveRunError, match="no active run"):
        r.log_metrics(loss=1.0)
    with pytest.raises(NoActiveRunError):
        r.save_objects(x=1)


def test_misconfiguration_is_a_clear_error(tmp_path: Path) -> None:
    bad_uri = RecorderFacade(settings=lambda: load_settings({"MLFLOW_TRACKING_URI": "bogus://x"}, cwd=tmp_path))
    with pytest.raises(ConfigError, match=r"MLFLOW_TRACKING_URI='bogus://x'.*R\.configure"):
        bad_uri.log_metrics(x=1.0)
    bad_env = RecorderFacade(settings=lambda: load_settings({"QTRAIN_ARTIFACT_ROOT": " "}, cwd=tmp_path))
    with pytest.raises(ConfigError, match="R cannot read its settings: QTRAIN_ARTIFACT_ROOT is set but empty"):
        bad_env.list_experiments()


def test_configure_swaps_the_manager_but_not_mid_run(manager: ExpManager, tracking_uri: str, tmp_path: Path) -> None:
    r = RecorderFacade()
    r.configure(manager)
    assert r.manager is manager
    r.start_exp(experiment_name="facade")
    with pytest.raises(ConfigError, match="still active"):
        r.configure(None)
    r.end_exp()
    r.configure(ExpManager(tracking_uri, tmp_path / "other"))
    assert r.manager is not manager


def test_default_r_reads_get_settings(tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.settings import get_settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("QTRAIN_ARTIFACT_ROOT", str(tmp_path / "from-env"))
    get_settings.cache_clear()
    try:
        r = RecorderFacade()
        assert r.manager.uri == tracking_uri
        assert r.manager.artifact_root == f"{tmp_path}/from-env"
    finally:
        get_settings.cache_clear()
