"""save_objects/load_object: every supported type round-trips in an open format; nothing else is accepted."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.core.errors import ArtifactNotFoundError, ConfigError, TrackingError, UnsupportedObjectError
from app.tracking import Recorder
from app.tracking.backend import local_artifact_dir

ROOT = Path(__file__).resolve().parents[3]


def _pred() -> pd.Series:
    index = pd.MultiIndex.from_product(
        [pd.date_range("2021-01-04", periods=3), ["SH600000", "SZ000001"]], names=["datetime", "instrument"]
    )
    return pd.Series(np.linspace(-1, 1, 6), index=index, name="score")


def _model_dir(tmp_path: Path) -> Path:
    """A saved-model folder as app/models writes it: model.json + LightGBM text model + safetensors weights."""
    import lightgbm as lgb
    from safetensors.numpy import save_file

    directory = tmp_path / "saved"
    directory.mkdir()
    (directory / "model.json").write_text(json.dumps({"format": 1, "type": "lgbm", "params": {"num_leaves": 4}}))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    booster = lgb.train(
        {"objective": "regression", "num_leaves": 4, "verbose": -1, "num_threads": 1},
        lgb.Dataset(x, x @ np.array([1.0, -1.0, 0.5])),
        num_boost_round=3,
    )
    booster.save_model(str(directory / "model.txt"))
    save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(directory / "weights.safetensors"))
    return directory


def test_every_supported_type_round_trips(recorder: Recorder, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = _pred()
    frame = pred.to_frame().assign(label=1.5)
    unnamed = pd.Series([1, 2, 3], index=pd.Index(["a", "b", "c"], name="k"))
    int_named = pd.Series([0.5], name=7)
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    report = {"ic": 0.04, "icir": float("nan"), "by_year": {"2021": [0.1, np.float64(0.2)]}, "n": np.int64(3)}

    recorder.save_objects(
        pred=pred,
        frame=frame,
        unnamed=unnamed,
        int_named=int_named,
        report=report,
        days=[1, 2],
        ratio=0.5,
        flag=True,
        nothing=None,
        curve=fig,
        model=_model_dir(tmp_path),
        log="line 1\n",
        blob=b"\x00\xff",
        **{"config.yaml": "a: 1\n"},
    )
    plt.close(fig)
    assert recorder.list_artifacts() == sorted(
        [
            "pred.parquet",
            "frame.parquet",
            "unnamed.parquet",
            "int_named.parquet",
            "report.json",
            "days.json",
            "ratio.json",
            "flag.json",
            "nothing.json",
            "curve.png",
            "model",
            "log.txt",
            "blob.bin",
            "config.yaml",
        ]
    )
    assert recorder.list_artifacts("model") == ["model/model.json", "model/model.txt", "model/weights.safetensors"]

    loaded = recorder.load_object("pred")
    assert isinstance(loaded, pd.Series)
    pd.testing.assert_series_equal(loaded, pred)
    pd.testing.assert_frame_equal(recorder.load_object("frame.parquet"), frame)  # type: ignore[arg-type]
    pd.testing.assert_series_equal(recorder.load_object("unnamed"), unnamed)  # type: ignore[arg-type]
    pd.testing.assert_series_equal(recorder.load_object("int_named"), int_named)  # type: ignore[arg-type]
    assert recorder.load_object("report") == {"ic": 0.04, "icir": None, "by_year": {"2021": [0.1, 0.2]}, "n": 3}
    assert recorder.load_object("days") == [1, 2]
    assert recorder.load_object("ratio") == 0.5
    assert recorder.load_object("flag") is True
    assert recorder.load_object("nothing") is None
    png = recorder.load_object("curve")
    assert isinstance(png, bytes) and png.startswith(b"\x89PNG\r\n\x1a\n")
    assert recorder.load_object("log") == "line 1\n"
    assert recorder.load_object("blob") == b"\x00\xff"
    assert recorder.load_object("config.yaml") == "a: 1\n"

    model = recorder.load_object("model", dst_dir=tmp_path / "downloaded")
    assert isinstance(model, Path) and model.parent == tmp_path / "downloaded"
    assert json.loads((model / "model.json").read_text())["type"] == "lgbm"


def test_artifacts_are_readable_without_qtrain(recorder: Recorder, tmp_path: Path) -> None:
    """A consumer with only pandas / json / lightgbm / safetensors reads every artifact from the run's folder."""
    recorder.save_objects(pred=_pred(), report={"ic": 0.04}, model=_model_dir(tmp_path))
    recorder.save_objects(artifact_path="eval/2021", summary=pd.DataFrame({"ic": [0.01, 0.02]}))
    folder = local_artifact_dir(recorder.artifact_uri)
    assert folder is not None
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        import lightgbm
        import pandas as pd
        import safetensors.torch

        root = Path(sys.argv[1])
        pred = pd.read_parquet(root / "pred.parquet")
        assert list(pred.columns) == ["score"], pred.columns
        assert list(pred.index.names) == ["datetime", "instrument"], pred.index.names
        assert len(pred) == 6
        assert json.loads((root / "report.json").read_text()) == {"ic": 0.04}
        assert pd.read_parquet(root / "eval" / "2021" / "summary.parquet")["ic"].tolist() == [0.01, 0.02]
        booster = lightgbm.Booster(model_file=str(root / "model" / "model.txt"))
        assert booster.predict([[0.0, 0.0, 0.0]]).shape == (1,)
        weights = safetensors.torch.load_file(str(root / "model" / "weights.safetensors"))
        assert weights["w"].shape == (2, 3), weights
        assert json.loads((root / "model" / "model.json").read_text())["format"] == 1
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("app", "mlflow", "tests"))
        assert not leaked, leaked
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.parametrize(
    "obj", [object(), {1, 2}, np.arange(3), lambda x: x, pd.Timestamp("2021-01-01"), {"x": object()}]
)
def test_unsupported_objects_are_refused_and_nothing_is_uploaded(recorder: Recorder, obj: object) -> None:
    with pytest.raises(UnsupportedObjectError) as info:
        recorder.save_objects(ok={"a": 1}, thing=obj)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ConfigError)
    assert "never pickle" in str(info.value) or "JSON cannot store" in str(info.value)
    assert recorder.list_artifacts() == []


def test_a_path_must_be_a_saved_model_folder(recorder: Recorder, tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(UnsupportedObjectError, match=r"folder without model.json"):
        recorder.save_objects(model=tmp_path / "plain")
    with pytest.raises(UnsupportedObjectError, match="log_artifact"):
        recorder.save_objects(model=tmp_path / "missing")


def test_bad_names_and_unwritable_frames_are_config_errors(recorder: Recorder) -> None:
    with pytest.raises(ConfigError, match="artifact_path"):
        recorder.save_objects(**{"a/b": 1})
    with pytest.raises(ConfigError, match=r"cannot write mixed as parquet.*one type"):
        recorder.save_objects(mixed=pd.DataFrame({"a": [1, "x"]}))
    int_columns = pd.DataFrame({0: [1.0], 1: [2.0]})  # pandas' parquet metadata restores non-str labels
    recorder.save_objects(int_columns=int_columns)
    pd.testing.assert_frame_equal(recorder.load_object("int_columns"), int_columns)  # type: ignore[arg-type]


def test_subfolders_missing_and_ambiguous_names(recorder: Recorder) -> None:
    recorder.save_objects(artifact_path="eval", pred=_pred())
    assert recorder.list_artifacts() == ["eval"] and recorder.list_artifacts("eval") == ["eval/pred.parquet"]
    with pytest.raises(ConfigError, match="map to the same artifact names"):
        recorder.save_objects(pred=_pred(), **{"pred.parquet": _pred()})
    pd.testing.assert_series_equal(recorder.load_object("eval/pred"), _pred())  # type: ignore[arg-type]
    with pytest.raises(ArtifactNotFoundError, match=r"no artifact 'pred' \(under the root it holds: eval\)"):
        recorder.load_object("pred")
    recorder.save_objects(dup={"a": 1})
    recorder.save_objects(dup=pd.DataFrame({"a": [1]}))
    with pytest.raises(TrackingError, match=r"matches dup.parquet, dup.json"):
        recorder.load_object("dup")
    assert recorder.load_object("dup.json") == {"a": 1}


def test_log_artifact_uploads_files_as_they_are(recorder: Recorder, tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("# run notes\n")
    recorder.log_artifact(tmp_path / "notes.md", "docs")
    assert recorder.list_artifacts("docs") == ["docs/notes.md"]
    assert recorder.load_object("docs/notes.md") == "# run notes\n"


def test_tracking_code_never_pickles() -> None:
    banned = {"pickle", "cloudpickle", "dill", "joblib", "mlflow.pyfunc", "mlflow.sklearn", "mlflow.pytorch"}
    for path in (ROOT / "app" / "tracking").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            assert not banned & set(names), f"{path.name} imports {banned & set(names)}"
            assert not (isinstance(node, ast.Attribute) and node.attr in ("log_model", "to_pickle")), path.name
