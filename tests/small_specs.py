"""Task specs and `qtrain run` overrides for the small synthetic markets the end-to-end tests train on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# qtrain run overrides: segments inside a 360-day market from 2015-01-05, and a LightGBM that fits in seconds
SEGMENTS = "data.segments={train:[2015-01-05,2015-10-30],valid:[2015-11-02,2015-12-31],test:[2016-01-04,2016-05-31]}"
QUICK_LGBM = [
    "model.num_boost_round=20",
    "model.num_leaves=15",
    "model.lambda_l1=0",
    "model.lambda_l2=1",
    "model.num_threads=1",
    "record.port_ana.config.topk=5",
    "record.port_ana.config.n_drop=1",
]


def small_spec(root: Path, segments: dict[str, list[str]], *, seed: int = 0, **model: Any) -> dict[str, Any]:
    """A resolved task spec (the shape `qtrain run` produces): Alpha158 with two windows, a quick LightGBM,
    the three records with a 5-stock portfolio."""
    return {
        "seed": seed,
        "data": {
            "store": {"_target_": "app.data.store.QlibStore", "root": str(root)},
            "market": "synth",
            "segments": segments,
        },
        "dataset": {
            "_target_": "app.dataset.handler.DatasetSpec",
            "segments": segments,
            "handler": {
                "_target_": "app.dataset.handler.DataHandler",
                "features": {"_target_": "app.features.handlers.alpha158", "rolling_windows": [5, 20]},
                "market": "synth",
                "start_time": segments["train"][0],
                "end_time": segments["test"][1],
                "fit_start_time": segments["train"][0],
                "fit_end_time": segments["train"][1],
                "learn_processors": [
                    {"_target_": "app.dataset.processors.DropnaLabel"},
                    {"_target_": "app.dataset.processors.CSZScoreNorm", "fields_group": "label"},
                ],
            },
        },
        "model": {
            "_target_": "app.models.lgbm.LightGBMModel",
            "num_boost_round": 20,
            "num_threads": 1,
            "num_leaves": 15,
            "seed": seed,
            **model,
        },
        "records": [
            {"_target_": "app.evaluation.records.SignalRecord"},
            {"_target_": "app.evaluation.records.SigAnaRecord"},
            {
                "_target_": "app.evaluation.records.PortAnaRecord",
                "config": {"_target_": "app.evaluation.backtest.BacktestConfig", "topk": 5, "n_drop": 1},
            },
        ],
    }


def qtrain_in(work: Path, market: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``qtrain ARGS`` run in ``work`` (made if missing) on ``market``, with no other QTRAIN_/MLFLOW_ setting."""
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QTRAIN_", "MLFLOW_"))}
    env["QTRAIN_DATA_DIR"] = str(market)
    qtrain = Path(sys.executable).with_name("qtrain")
    return subprocess.run([str(qtrain), *args], cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
