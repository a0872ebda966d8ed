"""GRU and MLP training: qtrain (``batching: qlib``) against Qlib 0.9.7's own models, same frame, same seed.

Qlib's side (tests/qlib_ref/torch_models.py) trains ``pytorch_gru_ts.GRU`` on a ``TSDatasetH``,
``pytorch_gru.GRU`` and ``pytorch_nn.DNNModelPytorch`` on a ``DatasetH``, all over a ``StaticDataLoader`` of
the parquet file qtrain reads too (60 instruments x 100 days, 4 float32 features, no processors; a late listing
and ~3% absent rows, which the windows fill as Qlib does). Three epochs each (the MLP: three evaluations of five
random steps), dropout on, seed 7, one torch thread on both sides. ``gru_stop`` validates on days whose labels
are anti-correlated with the training relation, so its validation loss rises after the first epoch: it
early-stops after the third and ends on the first epoch's weights, on both sides.

What is asserted, per model:

- the freshly built network's state dict is Qlib's (sum and sum of squares of every tensor, exactly);
- the trained weights are Qlib's bit for bit;
- the per-epoch training loss (mean of the epoch's training-batch losses) and validation loss agree to
  rtol 1e-6 (observed: a few 1e-8; qtrain pools squared errors over the batches where Qlib averages the batch
  means, and Qlib's time-series loss is computed in float64 through its float64 sample weights);
- the test predictions are identical (the time-series GRU predicts in Qlib's batches too: the CPU GRU kernels'
  last bits depend on which windows share a batch, ~1e-8 in qtrain's own order).

Not compared: Qlib's own logged train curve for the GRUs (it re-scores the training data in eval mode after each
epoch; qtrain logs the training batches' loss) and Qlib's MLP validation IC (logged only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from app.dataset.dataset import Dataset, TSDataset
from app.dataset.views import ProcessedViews
from app.models.gru import GRUModel
from app.models.mlp import MLPModel
from app.models.torch_model import TorchModel
from app.models.torch_training import seeded
from tests.conftest import run_reference

pytestmark = [pytest.mark.qlib, pytest.mark.slow]

SEED, STEP_LEN, BATCH = 7, 10, 256
N_INSTRUMENTS, N_DAYS, N_FEATURES = 60, 100, 4  # Qlib's MLP validation IC skips days with < 50 instruments
DAYS = [str(d.date()) for d in pd.bdate_range("2021-01-04", periods=N_DAYS)]
SEGMENTS = {"train": [DAYS[0], DAYS[39]], "valid": [DAYS[40], DAYS[59]], "test": [DAYS[60], DAYS[79]]}
STOP_SEGMENTS = {**SEGMENTS, "valid": [DAYS[80], DAYS[99]]}  # anti-correlated labels
GRU: dict[str, Any] = {"hidden_size": 16, "num_layers": 2, "dropout": 0.1, "n_epochs": 3, "lr": 1e-3,
                       "batch_size": BATCH, "early_stop": 20}  # fmt: skip
MLP: dict[str, Any] = {"lr": 2e-3, "batch_size": BATCH, "weight_decay": 2e-4}
STOP: dict[str, Any] = {"early_stop": 2, "lr": 1e-2}  # fast enough to unlearn the anti-correlated days at once

# name: (Qlib kind, Qlib kwargs, qtrain model, segments)
CASES: dict[str, tuple[str, dict[str, Any], TorchModel, dict[str, list[str]]]] = {
    "gru_ts": (
        "gru_ts",
        {"d_feat": N_FEATURES, **GRU, "n_jobs": 0, "GPU": -1, "seed": SEED},
        GRUModel(time_series=True, d_feat=N_FEATURES, **GRU, seed=SEED, batching="qlib", device="cpu"),
        SEGMENTS,
    ),
    "gru": (
        "gru",
        {"d_feat": 2, **GRU, "GPU": -1, "seed": SEED},  # 4 columns = 2 fields x 2 steps
        GRUModel(time_series=False, d_feat=2, **GRU, seed=SEED, batching="qlib", device="cpu"),
        SEGMENTS,
    ),
    "gru_stop": (
        "gru",
        {"d_feat": 2, **GRU | STOP, "GPU": -1, "seed": SEED},
        GRUModel(time_series=False, d_feat=2, **GRU | STOP, seed=SEED, batching="qlib", device="cpu"),
        STOP_SEGMENTS,
    ),
    "mlp": (
        "mlp",
        {**MLP, "max_steps": 15, "eval_steps": 5, "early_stop_rounds": 50, "optimizer": "adam", "GPU": -1,
         "seed": SEED, "pt_model_kwargs": {"input_dim": N_FEATURES, "layers": [32]}},
        MLPModel(**MLP, hidden_sizes=(32,), dropout=0.05, n_epochs=3, eval_steps=5, early_stop=50, lr_patience=10,
                 seed=SEED, batching="qlib", device="cpu"),
        SEGMENTS,
    ),
}  # fmt: skip


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    dates = pd.to_datetime(DAYS)
    idx = pd.MultiIndex.from_product(
        [dates, [f"S{i:02d}" for i in range(N_INSTRUMENTS)]], names=["datetime", "instrument"]
    )
    x = rng.normal(size=(len(idx), N_FEATURES)).astype(np.float32)
    signal = x @ np.array([0.5, -0.3, 0.2, 0.0], dtype=np.float32)
    sign = np.where(idx.get_level_values("datetime") >= dates[80], -1.0, 1.0)
    y = (sign * signal + 0.5 * rng.normal(size=len(idx))).astype(np.float32)
    cols = pd.MultiIndex.from_tuples([("feature", f"F{i}") for i in range(N_FEATURES)] + [("label", "LABEL0")])
    frame = pd.DataFrame(np.column_stack([x, y]), index=idx, columns=cols)
    keep = rng.random(len(idx)) > 0.03
    keep &= ~((idx.get_level_values("instrument") == "S59") & (idx.get_level_values("datetime") < dates[15]))
    return frame[keep]


def _summary(state: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    return {k: [float(v.double().sum()), float((v.double() ** 2).sum())] for k, v in state.items()}


@pytest.fixture(scope="module")
def reference(qlib_python: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """Qlib's results for every case, and the frame both sides read (from the same parquet file)."""
    work = tmp_path_factory.mktemp("torch_vs_qlib")
    frame = _frame()
    frame.set_axis([":".join(c) for c in frame.columns], axis=1).to_parquet(work / "in.parquet")
    models = {
        name: {"kind": kind, "kwargs": kwargs, "segments": segments}
        for name, (kind, kwargs, _, segments) in CASES.items()
    }
    config = {"segments": SEGMENTS, "step_len": STEP_LEN, "threads": 1, "models": models}
    (work / "config.json").write_text(json.dumps(config))
    run_reference(qlib_python, "torch_models.py", work / "in.parquet", work / "config.json", work)
    back = pd.read_parquet(work / "in.parquet")
    back.columns = pd.MultiIndex.from_tuples([tuple(c.split(":", 1)) for c in back.columns])
    return work, back


@pytest.mark.parametrize("name", list(CASES))
def test_training_matches_qlib(reference: tuple[Path, pd.DataFrame], name: str) -> None:
    work, frame = reference
    _, _, model, segments = CASES[name]
    theirs = json.loads((work / f"{name}.json").read_text())
    views = ProcessedViews.build(frame, [], [], fit_start=segments["train"][0], fit_end=segments["train"][1])
    time_series = isinstance(model, GRUModel) and model.time_series
    ds = TSDataset(views, segments, step_len=STEP_LEN) if time_series else Dataset(views, segments)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with seeded(SEED):
            assert _summary(model.build_net(N_FEATURES).state_dict()) == theirs["init"]
        model.fit(ds)
        scores = model.predict(ds, "test")
    finally:
        torch.set_num_threads(threads)

    report = model.fit_report
    assert report is not None
    np.testing.assert_allclose(report.train_loss, theirs["train_batches"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(report.valid_loss, theirs["valid"], rtol=1e-6, atol=0)
    qlib_weights = np.load(work / f"{name}_weights.npz")
    ours = {k: v.numpy() for k, v in model._fitted().state_dict().items()}
    assert sorted(ours) == sorted(qlib_weights.files)
    for key in qlib_weights.files:
        assert np.array_equal(ours[key], qlib_weights[key]), f"{name}: trained {key} differs from Qlib's"

    qlib_scores = pd.read_parquet(work / f"{name}_pred.parquet")["score"]
    assert len(qlib_scores) == len(scores) and qlib_scores.index.sort_values().equals(scores.index.sort_values())
    assert np.array_equal(scores.to_numpy(), qlib_scores.reindex(scores.index).to_numpy())

    if name == "gru_stop":
        valid = list(report.valid_loss)
        assert report.stopped_early and report.epochs_done == 3 and report.best_epoch == 0
        assert len(theirs["valid"]) == 3 and int(np.argmin(theirs["valid"])) == 0 and valid == sorted(valid)
    else:
        assert not report.stopped_early and report.epochs_done == 3 and report.best_epoch == 2
