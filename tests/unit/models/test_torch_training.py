"""The shared torch training loop on small in-memory data: devices, AMP, early stopping, checkpoints, resume."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from app.core.errors import ConfigError
from app.models.torch_checkpoint import load_best_weights, load_last_weights
from app.models.torch_data import ArraySource, Batches, BatchPlan, NumpyDrawPlan, NumpyShufflePlan, TorchLoaderPlan
from app.models.torch_training import (
    Plateau,
    TrainSettings,
    check_amp,
    device_queue,
    masked_mse,
    predict_scores,
    resolve_device,
    seeded,
    train,
)
from tests.unit.models.market import RecordingCurves
from tests.unit.models.torch_fixtures import one_torch_thread  # noqa: F401

NO_CUDA = not torch.cuda.is_available()


def _data(n: int, *, seed: int, scale: float = 1.0) -> ArraySource:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    w = np.linspace(-1, 1, 8, dtype=np.float32)
    y = scale * (x @ w) + 0.3 * rng.normal(size=n).astype(np.float32)
    return ArraySource(x, y)


def _net(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    with seeded(seed):
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 1), nn.Flatten(0))


def _settings(**kw: object) -> TrainSettings:
    args: dict[str, object] = {"n_epochs": 5, "batch_size": 32, "lr": 0.01, "early_stop": 3, "device": "cpu"}
    args.update(kw)
    return TrainSettings(**args)  # type: ignore[arg-type]


def _same(a: nn.Module | dict[str, torch.Tensor], b: nn.Module | dict[str, torch.Tensor]) -> bool:
    sa = a.state_dict() if isinstance(a, nn.Module) else a
    sb = b.state_dict() if isinstance(b, nn.Module) else b
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- devices and AMP ------------------------------------------------------------------------------------------
def test_resolve_device_names() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cpu" if NO_CUDA else "cuda")
    for bad in ("gpu", "cuda:x", "mps", ""):
        with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
            resolve_device(bad)


@pytest.mark.skipif(not NO_CUDA, reason="needs a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match=rf"model.device='{spec}': this machine has no CUDA device"):
        resolve_device(spec)
    recorder = RecordingCurves()
    with pytest.raises(ConfigError, match="no CUDA device"):
        train(_net(), _data(64, seed=0), None, _settings(device=spec), recorder=recorder)
    assert recorder.calls == []  # refused before the first epoch


def test_device_queue() -> None:
    assert device_queue("cpu") == "cpu"
    assert device_queue("cuda:1") == "gpu"  # never raises, even without CUDA here
    assert device_queue("auto") == ("cpu" if NO_CUDA else "gpu")


def test_amp_modes() -> None:
    cpu = torch.device("cpu")
    assert check_amp("off", cpu) is None
    assert check_amp("bf16", cpu) is torch.bfloat16
    assert check_amp("fp16", cpu) is torch.float16
    with pytest.raises(ConfigError, match=r"model\.amp='fp32' is not an AMP mode; use one of off, bf16, fp16"):
        check_amp("fp32", cpu)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_trains_on_cpu(amp: str) -> None:
    # torch >= 2.3 autocasts float16 on the CPU too and has a CPU GradScaler, so fp16 is allowed there.
    net = _net()
    report = train(net, _data(512, seed=0), _data(256, seed=1), _settings(amp=amp, n_epochs=6))
    assert report.train_loss[-1] < report.train_loss[0] * 0.5
    scores = predict_scores(net, _data(100, seed=2), batch_size=64, amp=amp)
    assert scores.dtype == np.float32 and scores.shape == (100,) and np.isfinite(scores).all()


# -- loss -----------------------------------------------------------------------------------------------------
def test_masked_mse_ignores_nan_labels() -> None:
    pred = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    loss = masked_mse(pred, torch.tensor([0.0, float("nan"), 1.0]))
    assert loss.item() == pytest.approx((1 + 4) / 2)
    empty = masked_mse(pred, torch.full((3,), float("nan")))
    empty.backward()
    assert empty.item() == 0.0 and pred.grad is not None and torch.equal(pred.grad, torch.zeros(3))


# -- early stopping -------------------------------------------------------------------------------------------
def test_early_stopping_restores_the_best_epoch(tmp_path: Path) -> None:
    # valid labels are 0.3x the train relation: the valid loss falls, then rises as the net fits the train scale
    net, recorder = _net(), RecordingCurves()
    settings = _settings(n_epochs=50, lr=0.003, early_stop=4, checkpoint_dir=str(tmp_path))
    report = train(net, _data(512, seed=0), _data(256, seed=1, scale=0.3), settings, recorder=recorder)
    valid = recorder.curve("valid.loss")
    assert report.stopped_early and report.best_epoch is not None and report.best_epoch > 0
    assert report.epochs_done == report.best_epoch + 4 + 1 == len(valid)
    assert recorder.steps == list(range(report.epochs_done))
    assert int(np.argmin(valid)) == report.best_epoch and report.best_valid_loss == min(valid)
    assert _same(net, load_best_weights(tmp_path))
    assert not _same(net, load_last_weights(tmp_path))
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["best_epoch"] == report.best_epoch and state["stopped"] is True
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"best-{report.best_epoch:06d}.safetensors", f"resume-{report.epochs_done:06d}.safetensors",
                     "state.json"]  # fmt: skip


def test_without_valid_the_last_epoch_is_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="app.models.torch_training")
    net, untrained = _net(), _net()
    report = train(net, _data(256, seed=0), None, _settings(n_epochs=3, checkpoint_dir=str(tmp_path)))
    assert report.best_epoch is None and report.epochs_done == 3 and report.valid_loss == ()
    assert not _same(net, untrained)  # Qlib would have restored these
    assert _same(net, load_last_weights(tmp_path))
    assert "no valid segment: keeping the weights of the last epoch (2)" in caplog.text


def test_nan_validation_loss_does_not_crash(caplog: pytest.LogCaptureFixture) -> None:
    valid = ArraySource(np.ones((64, 8), np.float32), np.full(64, np.nan, np.float32))
    net, recorder = _net(), RecordingCurves()
    report = train(net, _data(256, seed=0), valid, _settings(n_epochs=10, early_stop=2), recorder=recorder)
    assert report.epochs_done == 2 and report.stopped_early and report.best_epoch is None
    assert all(np.isnan(recorder.curve("valid.loss")))
    assert "the validation loss is NaN; counted as no improvement" in caplog.text
    assert "keeping the weights of the last epoch" in caplog.text
    assert not _same(net, _net())


# -- determinism and resume -----------------------------------------------------------------------------------
def test_same_seed_same_result_and_global_rng_untouched() -> None:
    before = torch.get_rng_state()
    nets = [_net(dropout=0.2) for _ in range(2)]
    for net in nets:
        train(net, _data(256, seed=0), _data(128, seed=1), _settings(seed=7))
    assert torch.equal(torch.get_rng_state(), before)
    assert _same(nets[0], nets[1])
    other = _net(dropout=0.2)
    train(other, _data(256, seed=0), _data(128, seed=1), _settings(seed=8))
    assert not _same(nets[0], other)


@pytest.mark.parametrize("plateau", [None, Plateau(patience=1)])
def test_resume_equals_an_uninterrupted_fit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, plateau: Plateau | None
) -> None:
    caplog.set_level(logging.INFO, logger="app.models.torch_training")
    train_data, valid_data = _data(256, seed=0), _data(128, seed=1, scale=0.5)
    full = _net(dropout=0.2)
    full_report = train(full, train_data, valid_data, _settings(n_epochs=6, early_stop=10, plateau=plateau))

    first = _net(dropout=0.2)
    train(first, train_data, valid_data, _settings(n_epochs=3, early_stop=10, plateau=plateau,
                                                   checkpoint_dir=str(tmp_path)))  # fmt: skip
    resumed, recorder = _net(dropout=0.2), RecordingCurves()
    report = train(resumed, train_data, valid_data, _settings(n_epochs=6, early_stop=10, plateau=plateau,
                   checkpoint_dir=str(tmp_path)), recorder=recorder)  # fmt: skip
    assert report.resumed_at == 3 and recorder.steps == [3, 4, 5]
    assert f"resuming from checkpoint {tmp_path} at epoch 3" in caplog.text
    assert report.valid_loss == full_report.valid_loss[3:] and report.best_epoch == full_report.best_epoch
    assert _same(resumed, full)


def test_resume_refuses_another_configuration(tmp_path: Path) -> None:
    train(_net(), _data(64, seed=0), None, _settings(n_epochs=1, checkpoint_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match=r"was written by another configuration \(lr: 0.01 -> 0.02\)"):
        train(_net(), _data(64, seed=0), None, _settings(n_epochs=2, lr=0.02, checkpoint_dir=str(tmp_path)),
              fingerprint={"lr": 0.02})  # fmt: skip


def test_finished_checkpoint_is_not_retrained(tmp_path: Path) -> None:
    settings = _settings(n_epochs=2, checkpoint_dir=str(tmp_path))
    first = _net()
    train(first, _data(64, seed=0), _data(32, seed=1), settings)
    again, recorder = _net(), RecordingCurves()
    report = train(again, _data(64, seed=0), _data(32, seed=1), settings, recorder=recorder)
    assert recorder.calls == [] and report.resumed_at == 2 and _same(first, again)


def test_no_training_samples_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"segments\.train has no training samples"):
        train(_net(), ArraySource(np.empty((0, 8), np.float32), np.empty(0, np.float32)), None, _settings())


def test_predict_scores_keeps_order_and_dtype() -> None:
    net = _net()
    data = _data(70, seed=3)
    scores = predict_scores(net, data, batch_size=16)
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(data.x)).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-6)
    assert scores.dtype == np.float32


@pytest.mark.filterwarnings("ignore:.*pin_memory.*:UserWarning")
def test_cuda_data_path_serves_the_same_batches_from_workers() -> None:
    # The DataLoader (workers, pinned memory) is what CUDA training iterates; without a GPU, read it directly.
    data = _data(100, seed=4)
    plan = BatchPlan(100, 32, shuffle=True, drop_last=True, seed=3)
    batches = Batches(data, plan, torch.device("cuda"), num_workers=2, seed=3)
    assert batches.loader is not None
    for epoch in (0, 1):
        plan.epoch = epoch
        expected = [data.take(ids) for ids in plan]
        served = list(batches.loader)
        assert len(served) == len(expected) == 3
        for (x, y), (ex, ey) in zip(served, expected, strict=True):
            assert torch.equal(x, torch.from_numpy(ex)) and torch.equal(y, torch.from_numpy(ey))
    plan.epoch = 0
    first = [ids.copy() for ids in plan]
    plan.epoch = 1
    assert not all(np.array_equal(a, b) for a, b in zip(first, plan, strict=True))


# -- Qlib's random streams (batching: qlib) -------------------------------------------------------------------
@pytest.fixture
def numpy_global_rng() -> Iterator[None]:
    state = np.random.get_state()
    yield
    np.random.set_state(state)


@pytest.mark.usefixtures("numpy_global_rng")
def test_numpy_plans_replay_qlibs_global_numpy_calls() -> None:
    np.random.seed(5)
    expected = []
    for _ in range(3):  # pytorch_gru.py's train_epoch
        indices = np.arange(70)
        np.random.shuffle(indices)
        expected.append([indices[i : i + 16] for i in range(0, 64, 16)])
    plan = NumpyShufflePlan(70, 16, seed=5)
    for epoch, batches in enumerate(expected):
        plan.epoch = epoch
        assert len(plan) == 4
        got = list(plan)
        assert all(np.array_equal(a, b) for a, b in zip(got, batches, strict=True))
        assert all(np.array_equal(a, b) for a, b in zip(plan, batches, strict=True))  # the same epoch again
    np.random.seed(9)
    steps = [np.random.choice(50, 8) for _ in range(6)]  # pytorch_nn.py's fit, one batch per step
    draw = NumpyDrawPlan(50, 8, seed=9, steps=3)
    for epoch in (0, 1):
        draw.epoch = epoch
        assert len(draw) == 3
        assert all(np.array_equal(a, b) for a, b in zip(draw, steps[3 * epoch : 3 * epoch + 3], strict=True))
    draw.epoch = 3
    with pytest.raises(RuntimeError, match="epoch 3 requested after 2 drawn"):
        list(draw)


def test_torch_loader_plan_replays_qlibs_dataloaders() -> None:
    # pytorch_gru_ts.py per epoch: train on the shuffled loader (dropout draws from the same RNG), re-score the
    # shuffled loader, score the sequential validation loader.
    samples = torch.arange(103)
    train_loader: DataLoader[torch.Tensor] = DataLoader(samples, batch_size=16, shuffle=True, drop_last=True)  # type: ignore[arg-type]
    valid_loader: DataLoader[torch.Tensor] = DataLoader(torch.arange(40), batch_size=16, drop_last=True)  # type: ignore[arg-type]
    with seeded(11):
        expected, dropout = [], []
        for _ in range(3):
            batches = []
            for batch in train_loader:
                batches.append(batch.numpy())
                dropout.append(torch.rand(3))
            expected.append(batches)
            for _ in train_loader:
                pass
            for _ in valid_loader:
                pass
    plan = TorchLoaderPlan(103, 16, burn=3)
    with seeded(11):
        for epoch, batches in enumerate(expected):
            plan.epoch = epoch
            got = []
            for ids in plan:
                got.append(ids)
                assert torch.equal(torch.rand(3), dropout[epoch * 6 + len(got) - 1])
            assert len(got) == len(plan) == 6
            assert all(np.array_equal(a, b) for a, b in zip(got, batches, strict=True))


@pytest.mark.parametrize(("batching", "steps"), [("numpy_shuffle", None), ("torch_loader", None), ("numpy_draw", 5)])
def test_qlib_streams_resume_equal_an_uninterrupted_fit(tmp_path: Path, batching: str, steps: int | None) -> None:
    train_data, valid_data = _data(256, seed=0), _data(128, seed=1, scale=0.5)
    kw: dict[str, object] = {"early_stop": 10, "batching": batching, "steps_per_epoch": steps}
    numpy_before, torch_before = np.random.get_state(), torch.get_rng_state()
    full = _net(dropout=0.2)
    full_report = train(full, train_data, valid_data, _settings(n_epochs=6, **kw))
    assert torch.equal(torch.get_rng_state(), torch_before)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_before, strict=True))
    seeded_net = _net(dropout=0.2)
    train(seeded_net, train_data, valid_data, _settings(n_epochs=6, early_stop=10))
    assert not _same(full, seeded_net)

    first = _net(dropout=0.2)
    train(first, train_data, valid_data, _settings(n_epochs=3, checkpoint_dir=str(tmp_path), **kw))
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["extra"]["plan"]["drawn"] == 3
    resumed = _net(dropout=0.2)
    report = train(resumed, train_data, valid_data, _settings(n_epochs=6, checkpoint_dir=str(tmp_path), **kw))
    assert report.resumed_at == 3 and report.valid_loss == full_report.valid_loss[3:]
    assert _same(resumed, full)


def test_numpy_draw_needs_steps_per_epoch() -> None:
    with pytest.raises(ConfigError, match="batching numpy_draw needs steps_per_epoch >= 1, not None"):
        train(_net(), _data(64, seed=0), None, _settings(batching="numpy_draw"))
    with pytest.raises(ConfigError, match="batching 'qlib' is not one of seeded, numpy_shuffle"):
        train(_net(), _data(64, seed=0), None, _settings(batching="qlib"))
