"""Qlib 0.9.7's own TrainerR on a LightGBM Alpha158 seed sweep: the reference side of benchmarks/sweep.py.

Usage: python trainer_sweep.py DATA_DIR MARKET OUT.json --seeds 0 1 ... [--num-threads 1]
       [--train START END --valid START END --test START END] [--benchmark SH000300]

One task per seed, as Qlib's benchmark workflow (workflow_config_lightgbm_Alpha158.yaml) configures it: DatasetH
over Alpha158 (learn = DropnaLabel + CSZScoreNorm(label)), LGBModel with the benchmark's parameters, records
SignalRecord + SigAnaRecord + PortAnaRecord (TopkDropout 50/5, Qlib's exchange defaults). All tasks go to
``qlib.model.trainer.TrainerR(experiment_name=...).train(tasks)``, which builds each task's dataset and model itself.
Writes OUT.json: wall seconds of the whole train call and each task's IC / Rank IC / excess return with cost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BENCHMARK_PARAMS = {
    "colsample_bytree": 0.8879, "learning_rate": 0.2, "subsample": 0.8789, "lambda_l1": 205.6999,
    "lambda_l2": 580.9768, "max_depth": 8, "num_leaves": 210,
}  # fmt: skip


def backtest_end(data_dir: str, end: str) -> str:
    """Qlib's backtest needs the bar after its last day: the test end, or the day before the calendar's last."""
    days = (Path(data_dir) / "calendars" / "day.txt").read_text().split()
    return days[-2] if end >= days[-1] else end


def task(args: argparse.Namespace, seed: int) -> dict:
    handler = {
        "class": "Alpha158", "module_path": "qlib.contrib.data.handler",
        "kwargs": {"start_time": args.train[0], "end_time": args.test[1], "fit_start_time": args.train[0],
                   "fit_end_time": args.train[1], "instruments": args.market},
    }  # fmt: skip
    port = {
        "strategy": {"class": "TopkDropoutStrategy", "module_path": "qlib.contrib.strategy",
                     "kwargs": {"signal": "<PRED>", "topk": 50, "n_drop": 5}},
        "backtest": {"start_time": args.test[0], "end_time": backtest_end(args.data_dir, args.test[1]),
                     "account": 100000000,
                     "benchmark": args.benchmark,
                     "exchange_kwargs": {"limit_threshold": 0.095, "deal_price": "close", "open_cost": 0.0005,
                                         "close_cost": 0.0015, "min_cost": 5}},
    }  # fmt: skip
    return {
        "model": {"class": "LGBModel", "module_path": "qlib.contrib.model.gbdt",
                  "kwargs": {"loss": "mse", "num_threads": args.num_threads, "seed": seed, **BENCHMARK_PARAMS}},
        "dataset": {"class": "DatasetH", "module_path": "qlib.data.dataset",
                    "kwargs": {"handler": handler,
                               "segments": {"train": args.train, "valid": args.valid, "test": args.test}}},
        "record": [
            {"class": "SignalRecord", "module_path": "qlib.workflow.record_temp"},
            {"class": "SigAnaRecord", "module_path": "qlib.workflow.record_temp",
             "kwargs": {"ana_long_short": False, "ann_scaler": 252}},
            {"class": "PortAnaRecord", "module_path": "qlib.workflow.record_temp", "kwargs": {"config": port}},
        ],
    }  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("market")
    parser.add_argument("out")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--train", nargs=2, default=["2015-01-05", "2018-12-31"])
    parser.add_argument("--valid", nargs=2, default=["2019-01-02", "2019-12-31"])
    parser.add_argument("--test", nargs=2, default=["2020-01-02", "2020-12-15"])
    parser.add_argument("--benchmark", default="SH000300")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    from _common import init_qlib
    from qlib.model.trainer import TrainerR

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # TrainerR records runs in MLflow's file store
    init_qlib(args.data_dir)
    from qlib.workflow.recorder import MLflowRecorder

    start_run = MLflowRecorder.start_run

    def start_run_logging_synchronously(self: MLflowRecorder) -> object:
        # Qlib logs metrics on a background thread (AsyncCaller); on MLflow's file store a record that reads the
        # run meanwhile finds a half-written metric file ("Metric 'Rank IC' is malformed"), so log in line.
        run = start_run(self)
        self.async_log = None
        return run

    MLflowRecorder.start_run = start_run_logging_synchronously
    imported = time.perf_counter()
    recorders = TrainerR(experiment_name="sweep").train([task(args, s) for s in args.seeds])
    trained = time.perf_counter()
    results = []
    for seed, rec in zip(args.seeds, recorders, strict=True):
        metrics = rec.list_metrics()
        results.append({
            "seed": seed, "IC": metrics.get("IC"), "Rank IC": metrics.get("Rank IC"),
            "excess_with_cost": metrics.get("1day.excess_return_with_cost.annualized_return"),
        })  # fmt: skip
    Path(args.out).write_text(json.dumps({
        "import_init_s": imported - started, "train_s": trained - imported, "total_s": trained - started,
        "tasks": results,
    }, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
