"""MLPModel (Qlib's DNNModelPytorch) on Alpha360 rows of a small synthetic market with a planted signal."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from app.core.errors import ConfigError
from app.models.base import load_model
from app.models.mlp import MLPModel, MLPNet
from app.models.torch_checkpoint import load_best_weights
from app.models.torch_training import seeded
from tests.unit.models.market import RecordingCurves
from tests.unit.models.torch_fixtures import (
    SynthData,
    daily_ic,
    nan_valid_labels,
    one_torch_thread,  # noqa: F401
    synth_data,
    without_valid,
    write_weights_model,
)

SMALL = {"hidden_sizes": (64,), "batch_size": 512, "device": "cpu"}


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> SynthData:
    return synth_data(tmp_path_factory)


def _mlp(**kw: object) -> MLPModel:
    args: dict[str, object] = {"n_epochs": 8, "early_stop": 3, **SMALL}
    args.update(kw)
    return MLPModel(**args)  # type: ignore[arg-type]


def test_net_is_qlibs_shape() -> None:
    with seeded(0):
        net = MLPNet(n_features=10, hidden_sizes=(8, 4), dropout=0.05)
    kinds = [type(m).__name__ for m in net.dnn_layers]
    assert kinds == ["Dropout", "Sequential", "Sequential", "Dropout", "Linear"]
    first = net.dnn_layers[1]
    assert isinstance(first, nn.Sequential)
    assert [type(m).__name__ for m in first] == ["Linear", "BatchNorm1d", "LeakyReLU"]
    assert first[2].negative_slope == 0.1
    assert set(net.state_dict()) >= {"dnn_layers.1.0.weight", "dnn_layers.1.1.running_mean", "dnn_layers.4.bias"}


def test_mlp_learns_the_planted_signal(data: SynthData) -> None:
    model, recorder = _mlp(), RecordingCurves()
    model.fit(data.tab360, recorder)
    scores = model.predict(data.tab360)
    assert scores.dtype == np.float32 and np.isfinite(scores).all()
    assert scores.index.equals(data.tab360.prepare("test", "feature", view="infer").index)
    assert daily_ic(scores, data.tab360) > 0.05
    assert len(recorder.calls) == model.fit_report.epochs_done  # type: ignore[union-attr]


def test_early_stopping_restores_the_best_checkpoint(data: SynthData, tmp_path: Path) -> None:
    model = _mlp(n_epochs=40, lr=0.01, early_stop=3, checkpoint_dir=str(tmp_path / "ckpt"))
    model.fit(data.tab360)
    report = model.fit_report
    assert report is not None and report.stopped_early and report.best_epoch is not None
    assert report.epochs_done == report.best_epoch + 3 + 1
    best = MLPModel.load(write_weights_model(tmp_path / "best", "mlp", model.params(),
                                             load_best_weights(tmp_path / "ckpt"), 360))  # fmt: skip
    pd.testing.assert_series_equal(model.predict(data.tab360), best.predict(data.tab360))
    # the learning-rate schedule (Qlib's ReduceLROnPlateau) is part of the resumable state
    state = json.loads((tmp_path / "ckpt" / "state.json").read_text())
    assert state["extra"]["scheduler"]["patience"] == 3


def test_without_valid_keeps_the_trained_weights(data: SynthData) -> None:
    ds = without_valid(data.tab360)
    model = _mlp(n_epochs=2)
    model.fit(ds)
    with seeded(model.seed):
        untrained = model.build_net(360).eval()
    x = torch.from_numpy(ds.prepare("test", "feature", view="infer").to_numpy(np.float32))
    with torch.no_grad():
        before = untrained(x).numpy()
    assert not np.allclose(model.predict(ds).to_numpy(), before)


def test_nan_validation_loss_does_not_crash(data: SynthData, caplog: pytest.LogCaptureFixture) -> None:
    model = _mlp(n_epochs=5, early_stop=2)
    model.fit(nan_valid_labels(data.tab360))
    assert model.fit_report is not None and model.fit_report.epochs_done == 2
    assert "validation loss is NaN" in caplog.text


def test_save_load_predict_identical(data: SynthData, tmp_path: Path) -> None:
    model = _mlp(n_epochs=1, hidden_sizes=(16, 8))
    model.fit(data.tab360)
    model.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["type"] == "mlp" and doc["params"]["hidden_sizes"] == [16, 8]
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, MLPModel) and loaded.hidden_sizes == (16, 8)
    pd.testing.assert_series_equal(loaded.predict(data.tab360), model.predict(data.tab360))


def test_same_seed_identical_predictions(data: SynthData) -> None:
    a, b = _mlp(n_epochs=2, seed=5), _mlp(n_epochs=2, seed=5)
    a.fit(data.tab360)
    b.fit(data.tab360)
    pd.testing.assert_series_equal(a.predict(data.tab360), b.predict(data.tab360))


def test_bf16_learns_on_cpu(data: SynthData) -> None:
    model = _mlp(amp="bf16")
    model.fit(data.tab360)
    assert daily_ic(model.predict(data.tab360), data.tab360) > 0.03


def test_resume_equals_uninterrupted(data: SynthData, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="app.models.torch_training")
    ckpt = str(tmp_path / "ckpt")
    _mlp(n_epochs=3, early_stop=10, lr_patience=1, checkpoint_dir=ckpt).fit(data.tab360)
    resumed, recorder = _mlp(n_epochs=5, early_stop=10, lr_patience=1, checkpoint_dir=ckpt), RecordingCurves()
    resumed.fit(data.tab360, recorder)
    assert recorder.steps == [3, 4] and "at epoch 3" in caplog.text
    full = _mlp(n_epochs=5, early_stop=10, lr_patience=1)
    full.fit(data.tab360)
    pd.testing.assert_series_equal(resumed.predict(data.tab360), full.predict(data.tab360))


def test_d_feat_checked(data: SynthData) -> None:
    with pytest.raises(ConfigError, match=r"360 feature columns but model.d_feat=157; set model.d_feat=360"):
        _mlp(d_feat=157).fit(data.tab360)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("hidden_sizes", "big", "hidden_sizes='big' [(]str[)] is not"), ("lr", "0.1", "lr='0.1' [(]str[)] is not float"),
     ("hidden_sizes", (0,), r"hidden_sizes=\(0,\) must be sizes >= 1"), ("activation", "relu", "activation='relu'"),
     ("eval_steps", 0, "eval_steps=0 must be >= 1"), ("batching", "qlib_nn", "batching='qlib_nn'")],
)  # fmt: skip
def test_bad_hyperparameters(data: SynthData, field: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError, match=f"MLPModel: {expected}"):
        _mlp(**{field: value}).fit(data.tab360)


def test_queue() -> None:
    assert _mlp(device="cpu").queue == "cpu" and _mlp(device="cuda:0").queue == "gpu"


def test_qlib_batching_draws_eval_steps_batches_per_epoch(data: SynthData) -> None:
    a, b = _mlp(n_epochs=2, batching="qlib", eval_steps=3), _mlp(n_epochs=2, batching="qlib", eval_steps=3)
    a.fit(data.tab360)
    b.fit(data.tab360)
    pd.testing.assert_series_equal(a.predict(data.tab360), b.predict(data.tab360))
    settings = a.settings()
    assert (settings.batching, settings.steps_per_epoch) == ("numpy_draw", 3)
    assert _mlp().settings().batching == "seeded"
