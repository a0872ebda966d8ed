#!/usr/bin/env python
"""Qlib's torch models trained on a given frame: the reference side of tests/differential/test_torch_vs_qlib.py.

Usage (inside .qlib-venv):
    python torch_models.py IN.parquet CONFIG.json OUT_DIR

IN.parquet: index (datetime, instrument), flat float32 columns ``feature:<name>`` / ``label:<name>``; it is fed
unchanged (no processors) to ``DataHandlerLP(data_loader=StaticDataLoader(frame))``. CONFIG.json:
``{"segments": {"train": [s, e], "valid": [s, e], "test": [s, e]}, "step_len": L, "threads": 1,
"models": {NAME: {"kind": "gru_ts" | "gru" | "mlp", "kwargs": {...}, "segments": {...}}}}`` (a model's own
``segments``, optional, replace the top-level ones for that model) where ``gru_ts`` is
``pytorch_gru_ts.GRU`` on ``TSDatasetH``, ``gru`` is ``pytorch_gru.GRU`` on ``DatasetH`` and ``mlp`` is
``pytorch_nn.DNNModelPytorch`` on ``DatasetH``; ``kwargs`` go to the model's constructor unchanged, except
that the MLP's ``scheduler="default"`` (or none given) is replaced by the identical ReduceLROnPlateau that
Qlib 0.9.7 fails to build on torch >= 2.10 (see ``_train_mlp``).

Per model it writes ``NAME.json``, ``NAME_weights.npz`` (the trained state dict) and ``NAME_pred.parquet``
(test predictions, index (datetime, instrument), column ``score``). The JSON holds, per epoch (per evaluation
for the MLP):

- ``train_batches``: the mean loss of the training batches of the epoch (recorded as the GRUs train; the
  MLP's own ``evals_result["train"]`` is the same quantity);
- ``valid``: the validation loss (GRUs: ``test_epoch``'s mean of the batch losses; MLP: ``evals_result``);
- ``train_rescored`` (GRUs): Qlib's own train curve, the training data re-scored in eval mode after the epoch;
- ``init``: sum and sum of squares of every tensor of the freshly constructed network's state dict.

Qlib's metric logging (``R``) is replaced by a no-op, so no experiment is needed; ``qlib.init`` is not called.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


class _NoRecorder:
    def log_metrics(self, *args: Any, **kwargs: Any) -> None:
        pass

    def get_recorder(self, *args: Any, **kwargs: Any) -> _NoRecorder:
        return self


def _dataset(frame: pd.DataFrame, segments: dict, step_len: int, time_series: bool) -> Any:
    from qlib.data.dataset import DatasetH, TSDatasetH
    from qlib.data.dataset.handler import DataHandlerLP
    from qlib.data.dataset.loader import StaticDataLoader

    handler = DataHandlerLP(data_loader=StaticDataLoader(frame.copy()), infer_processors=[], learn_processors=[])
    segments = {k: tuple(v) for k, v in segments.items()}
    if time_series:
        return TSDatasetH(handler=handler, segments=segments, step_len=step_len)
    return DatasetH(handler=handler, segments=segments)


def _init_summary(net: Any) -> dict[str, list[float]]:
    return {k: [float(v.double().sum()), float((v.double() ** 2).sum())] for k, v in net.state_dict().items()}


def _weights(net: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}


def _train_gru(kind: str, kwargs: dict, dataset: Any) -> tuple[dict, pd.Series]:
    if kind == "gru_ts":
        from qlib.contrib.model.pytorch_gru_ts import GRU
    else:
        import qlib.contrib.model.pytorch_gru as module

        module.R = _NoRecorder()  # type: ignore[assignment]
        GRU = module.GRU
    model = GRU(**kwargs)
    net = model.GRU_model if kind == "gru_ts" else model.gru_model
    out: dict[str, list] = {"train_batches": [], "valid": [], "train_rescored": [], "init": _init_summary(net)}
    batch_losses: list[float] = []
    loss_fn, train_epoch, test_epoch = model.loss_fn, model.train_epoch, model.test_epoch

    def recording_loss_fn(*args: Any) -> Any:
        loss = loss_fn(*args)
        if net.training:
            batch_losses.append(float(loss.item()))
        return loss

    def recording_train_epoch(*args: Any) -> None:
        batch_losses.clear()
        train_epoch(*args)
        out["train_batches"].append(float(np.mean(batch_losses)))

    def recording_test_epoch(*args: Any) -> tuple[float, float]:
        loss, score = test_epoch(*args)
        # fit scores the training data first, then the validation data, every epoch
        key = "train_rescored" if len(out["train_rescored"]) == len(out["valid"]) else "valid"
        out[key].append(float(loss))
        return loss, score

    model.loss_fn, model.train_epoch, model.test_epoch = recording_loss_fn, recording_train_epoch, recording_test_epoch
    model.fit(dataset)
    pred = model.predict(dataset) if kind == "gru_ts" else model.predict(dataset, segment="test")
    out["weights"] = _weights(net)
    return out, pred


def _train_mlp(kwargs: dict, dataset: Any) -> tuple[dict, pd.Series]:
    import qlib.contrib.model.pytorch_nn as module
    import torch

    module.R = _NoRecorder()  # type: ignore[assignment]
    if kwargs.get("scheduler", "default") == "default":
        # Qlib's default scheduler, built as Qlib builds it for torch > 2.6. Qlib's own version test compares
        # strings ("2.13.0" <= "2.6.0" holds), so on torch >= 2.10 it passes the removed `verbose` argument and
        # the constructor raises TypeError.
        kwargs = kwargs | {"scheduler": lambda optimizer: torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=0.5, patience=10, threshold=0.0001, threshold_mode="rel", cooldown=0,
            min_lr=0.00001, eps=1e-08)}  # fmt: skip
    model = module.DNNModelPytorch(**kwargs)
    evals: dict[str, list] = {}
    init = _init_summary(model.dnn_model)
    model.fit(dataset, evals_result=evals, verbose=False)
    out = {"train_batches": [float(v) for v in evals["train"]], "valid": [float(v) for v in evals["valid"]],
           "init": init, "lr_end": model.get_lr(), "weights": _weights(model.dnn_model)}  # fmt: skip
    return out, model.predict(dataset, segment="test")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, config_file, out_dir = argv
    import torch

    config = json.loads(Path(config_file).read_text())
    torch.set_num_threads(int(config.get("threads", 1)))
    frame = pd.read_parquet(src)
    frame.columns = pd.MultiIndex.from_tuples([tuple(c.split(":", 1)) for c in frame.columns])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, spec in config["models"].items():
        kind = spec["kind"]
        segments = spec.get("segments", config["segments"])
        dataset = _dataset(frame, segments, config["step_len"], time_series=kind == "gru_ts")
        if kind == "mlp":
            curves, pred = _train_mlp(spec["kwargs"], dataset)
        else:
            curves, pred = _train_gru(kind, spec["kwargs"], dataset)
        np.savez(out / f"{name}_weights.npz", **curves.pop("weights"))
        (out / f"{name}.json").write_text(json.dumps(curves, indent=1))
        if list(pred.index.names) != ["datetime", "instrument"]:
            raise SystemExit(f"{name}: unexpected prediction index {pred.index.names}")
        frame_pred = pd.DataFrame({"score": pred.to_numpy(dtype=np.float32)}, index=pred.index)
        frame_pred.to_parquet(out / f"{name}_pred.parquet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
