"""GRUModel (time-series and tabular Alpha360) on a small synthetic market with a planted signal."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from app.core.errors import ConfigError, NotFittedError
from app.models.base import load_model
from app.models.gru import GRUModel, GRUNet
from app.models.torch_checkpoint import load_best_weights, load_last_weights
from app.models.torch_data import WindowSource
from app.models.torch_model import tabular_training_data
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

SMALL = {"hidden_size": 16, "num_layers": 1, "batch_size": 256, "device": "cpu"}


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> SynthData:
    return synth_data(tmp_path_factory)


def _ts(**kw: object) -> GRUModel:
    args: dict[str, object] = {"time_series": True, "d_feat": 20, "n_epochs": 3, "lr": 0.005, **SMALL}
    args.update(kw)
    return GRUModel(**args)  # type: ignore[arg-type]


def _weights_model(model: GRUModel, weights: dict[str, torch.Tensor], directory: Path, n_features: int) -> GRUModel:
    return GRUModel.load(write_weights_model(directory, "gru", model.params(), weights, n_features))


def test_time_series_gru_learns_the_planted_signal(data: SynthData) -> None:
    model = _ts(n_epochs=4)
    model.fit(data.ts20)
    scores = model.predict(data.ts20)
    test = data.ts20.prepare_ts("test", view="infer")
    assert scores.name == "score" and scores.dtype == np.float32
    assert scores.index.equals(test.index) and np.isfinite(scores).all()
    assert daily_ic(scores, data.ts20) > 0.03


def test_tabular_alpha360_gru_learns_the_planted_signal(data: SynthData) -> None:
    model = GRUModel(time_series=False, d_feat=6, n_epochs=3, lr=0.002, **SMALL)  # type: ignore[arg-type]
    model.fit(data.tab360)
    scores = model.predict(data.tab360)
    assert scores.index.equals(data.tab360.prepare("test", "feature", view="infer").index)
    assert daily_ic(scores, data.tab360) > 0.03


def test_tabular_reshape_is_qlibs() -> None:
    with seeded(0):
        net = GRUNet(d_feat=6, hidden_size=4, num_layers=1, dropout=0.0, tabular=True)
    rows = torch.randn(3, 360)
    steps = rows.reshape(3, 6, 60).permute(0, 2, 1)  # Alpha360: CLOSE59..CLOSE0, OPEN59..OPEN0, ...
    assert torch.equal(steps[:, -1, 0], rows[:, 59]) and torch.equal(steps[:, 0, 1], rows[:, 60])
    net.tabular = False
    expected = net(steps)
    net.tabular = True
    assert torch.allclose(net(rows), expected)


def test_early_stopping_ends_on_the_best_checkpoint(data: SynthData, tmp_path: Path) -> None:
    model = _ts(n_epochs=20, lr=0.02, early_stop=2, checkpoint_dir=str(tmp_path / "ckpt"))
    recorder = RecordingCurves()
    model.fit(data.ts20, recorder)
    report = model.fit_report
    assert report is not None and report.stopped_early and report.best_epoch is not None
    assert report.epochs_done == report.best_epoch + 2 + 1 == len(recorder.calls)
    assert recorder.steps == list(range(report.epochs_done))
    assert set(recorder.calls[0][0]) == {"train.loss", "valid.loss"}
    best = _weights_model(model, load_best_weights(tmp_path / "ckpt"), tmp_path / "best", 20)
    pd.testing.assert_series_equal(model.predict(data.ts20), best.predict(data.ts20))
    last = _weights_model(model, load_last_weights(tmp_path / "ckpt"), tmp_path / "last", 20)
    assert not model.predict(data.ts20).equals(last.predict(data.ts20))


def test_without_valid_keeps_the_trained_weights(data: SynthData, tmp_path: Path) -> None:
    ds = without_valid(data.ts20)
    model, recorder = _ts(n_epochs=2, checkpoint_dir=str(tmp_path / "ckpt")), RecordingCurves()
    model.fit(ds, recorder)
    assert [set(m) for m, _ in recorder.calls] == [{"train.loss"}] * 2
    with seeded(model.seed):
        untrained_weights = model.build_net(20).state_dict()
    untrained = _weights_model(model, untrained_weights, tmp_path / "untrained", 20)
    last = _weights_model(model, load_last_weights(tmp_path / "ckpt"), tmp_path / "last", 20)
    scores = model.predict(ds)
    assert not np.allclose(scores, untrained.predict(ds))  # Qlib restores the untrained weights here
    pd.testing.assert_series_equal(scores, last.predict(ds))


def test_nan_validation_loss_does_not_crash(data: SynthData, caplog: pytest.LogCaptureFixture) -> None:
    ds = nan_valid_labels(data.ts20)
    model = _ts(n_epochs=5, early_stop=2)
    model.fit(ds)
    assert model.fit_report is not None and model.fit_report.epochs_done == 2
    assert "validation loss is NaN" in caplog.text
    assert np.isfinite(model.predict(ds)).all()


def test_save_load_predict_identical(data: SynthData, tmp_path: Path) -> None:
    model = _ts(n_epochs=1)
    model.fit(data.ts20)
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "weights.safetensors"]
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, GRUModel) and loaded == model
    pd.testing.assert_series_equal(loaded.predict(data.ts20), model.predict(data.ts20))


def test_same_seed_identical_predictions(data: SynthData) -> None:
    a, b, c = _ts(n_epochs=1, seed=3), _ts(n_epochs=1, seed=3), _ts(n_epochs=1, seed=4)
    for m in (a, b, c):
        m.fit(data.ts20)
    pd.testing.assert_series_equal(a.predict(data.ts20), b.predict(data.ts20))
    assert not a.predict(data.ts20).equals(c.predict(data.ts20))


def test_bf16_learns_on_cpu(data: SynthData) -> None:
    model = _ts(n_epochs=4, amp="bf16")
    model.fit(data.ts20)
    report = model.fit_report
    assert report is not None and report.train_loss[-1] < report.train_loss[0]
    assert daily_ic(model.predict(data.ts20), data.ts20) > 0.02


def test_fp16_runs_on_cpu(data: SynthData) -> None:
    model = _ts(n_epochs=2, amp="fp16")  # CPU float16 autocast + CPU GradScaler (torch >= 2.3)
    model.fit(data.ts20)
    assert np.isfinite(model.predict(data.ts20)).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_fails_before_training(data: SynthData) -> None:
    model, recorder = _ts(device="cuda"), RecordingCurves()
    assert model.queue == "gpu"
    with pytest.raises(ConfigError, match=r"model\.device='cuda': this machine has no CUDA device"):
        model.fit(data.ts20, recorder)
    assert recorder.calls == []
    assert _ts(device="auto").queue == "cpu" and _ts(device="cpu").queue == "cpu"


def test_d_feat_mismatch(data: SynthData) -> None:
    with pytest.raises(ConfigError, match=r"20 features per step but model.d_feat=6; set model.d_feat=20"):
        _ts(d_feat=6).fit(data.ts20)
    with pytest.raises(ConfigError, match=r"360 feature columns do not split into d_feat=7 .*model.d_feat=6"):
        GRUModel(time_series=False, d_feat=7, **SMALL).fit(data.tab360)  # type: ignore[arg-type]


def test_time_series_needs_step_len(data: SynthData) -> None:
    with pytest.raises(ConfigError, match=r"set dataset\.step_len"):
        _ts(d_feat=360).fit(data.tab360)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("hidden_size", "big", "hidden_size='big' (str) is not int"), ("amp", "fp8", "amp='fp8'"),
     ("time_series", 1, "time_series=1 (int) is not bool"), ("dropout", 1.5, "dropout=1.5 must be in [0, 1)"),
     ("early_stop", 0, "early_stop=0 must be >= 1"), ("batching", "torch", "batching='torch'")],
)  # fmt: skip
def test_bad_hyperparameters(data: SynthData, field: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError, match=rf"GRUModel: {expected.replace('(', '[(]').replace(')', '[)]')}"):
        _ts(**{field: value}).fit(data.ts20)


def test_predict_before_fit() -> None:
    with pytest.raises(NotFittedError, match="GRUModel is not fitted"):
        _ts().save(Path("unused"))


def test_resume_from_checkpoint_equals_uninterrupted(
    data: SynthData, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.models.torch_training")
    ckpt = str(tmp_path / "ckpt")
    _ts(n_epochs=3, early_stop=10, checkpoint_dir=ckpt).fit(data.ts20)
    resumed, recorder = _ts(n_epochs=5, early_stop=10, checkpoint_dir=ckpt), RecordingCurves()
    resumed.fit(data.ts20, recorder)
    assert recorder.steps == [3, 4]
    assert f"resuming from checkpoint {ckpt} at epoch 3" in caplog.text
    full = _ts(n_epochs=5, early_stop=10)
    full.fit(data.ts20)
    pd.testing.assert_series_equal(resumed.predict(data.ts20), full.predict(data.ts20))
    with pytest.raises(ConfigError, match=r"another configuration \(hidden_size: 16 -> 8\)"):
        _ts(n_epochs=6, hidden_size=8, checkpoint_dir=ckpt).fit(data.ts20)


def test_qlib_batching_numbers_windows_as_qlib(data: SynthData) -> None:
    windows = data.ts20.prepare_ts("train", view="learn")
    source = WindowSource(windows, qlib_order=True)
    assert source.order is not None
    qlib_index = windows.index[source.order]  # TSDataSampler's order: instrument, then date
    assert qlib_index.swaplevel().is_monotonic_increasing and len(qlib_index) == len(windows)
    x, y = source.take(np.array([0, 1, len(source) - 1]))
    expected = windows.take(source.order[[0, 1, len(source) - 1]])
    assert np.array_equal(x, expected.x, equal_nan=True) and np.array_equal(y, expected.y[:, 0], equal_nan=True)


def test_qlib_batching_is_reproducible_and_not_the_seeded_stream(data: SynthData) -> None:
    # (equality with Qlib itself: tests/differential/test_torch_vs_qlib.py)
    a, b, c = (_ts(n_epochs=1, dropout=0.2, num_layers=2, batching=m) for m in ("qlib", "qlib", "seeded"))
    for m in (a, b, c):
        m.fit(data.ts20)
    assert a.settings().batching == "torch_loader"
    assert GRUModel(time_series=False, batching="qlib").settings().batching == "numpy_shuffle"
    pd.testing.assert_series_equal(a.predict(data.ts20), b.predict(data.ts20))
    assert not a.predict(data.ts20).equals(c.predict(data.ts20))


def test_qlib_batching_drops_nan_label_rows_as_qlibs_dropna(data: SynthData) -> None:
    ds = nan_valid_labels(data.tab360)
    _, kept, _ = tabular_training_data(ds, "GRUModel")
    _, dropped, _ = tabular_training_data(ds, "GRUModel", drop_nan_labels=True)
    assert kept is not None and dropped is not None
    assert len(kept) == len(ds.prepare("valid", "feature", view="learn")) > 0 and len(dropped) == 0
