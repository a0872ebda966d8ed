#!/usr/bin/env python
"""Qlib 0.9.7 benchmark workflow tasks (what ``qrun`` runs for one task), results written as parquet/JSON.

Usage (inside .qlib-venv):
    python workflow.py CONFIG.json OUT_DIR [--dump-features] [--set-ordered-features] [--set-ordered-positions]

CONFIG.json has the layout of Qlib's ``examples/benchmarks/*/workflow_config_*.yaml`` (``qlib_init`` with
``provider_uri`` and ``region``; a ``task`` with ``model``, ``dataset`` and ``record``, each ``class`` /
``module_path`` / ``kwargs``, and the YAML files' ``<MODEL>``, ``<DATASET>`` and ``<PRED>`` placeholders), except
that ``tasks`` maps names to several tasks, run one after the other in one process (tasks with the same dataset
config share one DatasetH), plus ``numpy_seed``: NumPy's global RNG is seeded with it right before each
``model.fit`` (DEnsembleModel draws its feature-selection permutations and choices from that RNG, never seeded).

Each task runs as ``qlib.model.trainer.task_train`` runs it: model and dataset from ``init_instance_by_config``,
``model.fit(dataset)``, placeholders filled, every record's ``generate()`` in one recorder (MLflow's file store in
a temp dir; metrics logged in line rather than on Qlib's logging thread, same values). Not done: pickling the
model and the dataset into the run.

Two Qlib orders depend on the interpreter's string hash seed (PYTHONHASHSEED), so Qlib's results change with it
from one process to the next; both are fixed here unless the option says otherwise:
  * DEnsembleModel returns each sub-model's features as ``pd.Index(set(names))``; LightGBM's column sampling
    (``colsample_bytree``) and its split ties depend on column order. The features Qlib picked (its draws,
    unchanged) are put in the dataset's column order before the next sub-model trains
    (``--set-ordered-features``: keep Qlib's set order).
  * ``Position.get_stock_list`` is ``list(set(position) - {...})``: the order in which the backtest adds up the
    holdings' values and sends the strategy's sell orders (the cash of each sell is added in that order), which
    moves the account value and everything computed from it by an ulp or so. The list is sorted by instrument
    (``--set-ordered-positions``: keep Qlib's set order).

Writes OUT_DIR/<task name>/ (for a single ``task``: OUT_DIR/):
  pred.parquet, label.parquet   SignalRecord's pred.pkl (column score) and label.pkl, index (datetime, instrument)
  metrics.json                  the last value of every metric the recorder holds (IC, ICIR, Rank IC, Rank ICIR,
                                1day.*, l2.train, ...; NaN as null), and "curves": {name: [value per step]} for
                                the stepped ones
  report.parquet                PortAnaRecord's report_normal_1day (index datetime)
  model.json                    {"boosters": [{"num_trees", "best_iteration", "features"}], "sub_weights"}
  booster_K.txt                 each LightGBM booster's model_to_string() (K = 0 for LGBModel)
  with --dump-features:
  train.parquet, valid.parquet  the learn view (DK_L) of the segment: the feature columns, then the label column
  test.parquet                  the infer view (DK_I) of test: the feature columns
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import init_qlib, write_parquet


def _flat(df):
    out = df.copy()
    out.columns = [str(c[-1]) if isinstance(c, tuple) else str(c) for c in out.columns]
    out.index = out.index.set_names(["datetime", "instrument"])
    return out


def _in_column_order(feature_selection):
    def wrapped(self, df_train, loss_values):
        picked = feature_selection(self, df_train, loss_values)
        columns = df_train["feature"].columns
        return columns[columns.isin(picked)]

    return wrapped


def _float(v: object) -> float | None:
    f = float(v)  # type: ignore[arg-type]
    return None if math.isnan(f) else f


def run_task(task: dict, dataset: object, numpy_seed: int, out: Path, dump_features: bool) -> dict[str, float]:
    """One task in its own recorder; writes OUT (see the module docstring) and returns the stage seconds."""
    import numpy as np
    from qlib.contrib.model.double_ensemble import DEnsembleModel
    from qlib.data.dataset.handler import DataHandlerLP
    from qlib.utils import fill_placeholder, init_instance_by_config
    from qlib.workflow import R

    out.mkdir(parents=True, exist_ok=True)
    seconds = {}
    with R.start(experiment_name="workflow"):
        rec = R.get_recorder()
        model = init_instance_by_config(task["model"])
        started = time.perf_counter()
        np.random.seed(numpy_seed)
        model.fit(dataset)
        seconds["fit"] = time.perf_counter() - started
        task = fill_placeholder(task, {"<MODEL>": model, "<DATASET>": dataset})
        records = task.get("record", [])
        for record in [records] if isinstance(records, dict) else records:
            r = init_instance_by_config(
                record,
                recorder=rec,
                default_module="qlib.workflow.record_temp",
                try_kwargs={"model": model, "dataset": dataset},
            )
            r.generate()
        seconds["records"] = time.perf_counter() - started - seconds["fit"]

        write_parquet(rec.load_object("pred.pkl"), out / "pred.parquet")
        write_parquet(rec.load_object("label.pkl"), out / "label.parquet")
        report = rec.load_object("portfolio_analysis/report_normal_1day.pkl").copy()
        report.index.name = "datetime"
        write_parquet(report, out / "report.parquet")
        metrics: dict[str, object] = {k: _float(v) for k, v in rec.list_metrics().items()}
        curves = {}
        for name in metrics:
            history = rec.client.get_metric_history(rec.id, name)
            if len(history) > 1:
                curves[name] = [m.value for m in sorted(history, key=lambda m: m.step)]
        metrics["curves"] = curves
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")

    ensemble = isinstance(model, DEnsembleModel)
    boosters = model.ensemble if ensemble else [model.model]
    features = [[str(f) for f in names] for names in model.sub_features] if ensemble else [None]
    summary = []
    for k, (booster, names) in enumerate(zip(boosters, features, strict=True)):
        (out / f"booster_{k}.txt").write_text(booster.model_to_string())
        summary.append({"num_trees": booster.num_trees(), "best_iteration": booster.best_iteration, "features": names})
    doc = {"boosters": summary, "sub_weights": [float(w) for w in getattr(model, "sub_weights", [1.0])]}
    (out / "model.json").write_text(json.dumps(doc, indent=1) + "\n")

    if dump_features:
        for segment in ("train", "valid"):
            df = dataset.prepare(segment, col_set=["feature", "label"], data_key=DataHandlerLP.DK_L)
            write_parquet(_flat(df), out / f"{segment}.parquet")
        test = dataset.prepare("test", col_set="feature", data_key=DataHandlerLP.DK_I)
        write_parquet(_flat(test), out / "test.parquet")
    return seconds


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("out_dir")
    parser.add_argument("--dump-features", action="store_true")
    parser.add_argument("--set-ordered-features", action="store_true")
    parser.add_argument("--set-ordered-positions", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    config = json.loads(Path(args.config).read_text())
    out = Path(args.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    provider = str(Path(config["qlib_init"]["provider_uri"]).expanduser().resolve())
    # Qlib's experiment manager takes a file lock at a path relative to the working directory
    workdir = tempfile.TemporaryDirectory(prefix="qlib_ref_workflow_")
    os.chdir(workdir.name)
    try:
        return _run(config, provider, out, args, started)
    finally:
        os.chdir(out)
        workdir.cleanup()


def _run(config: dict, provider: str, out: Path, args: argparse.Namespace, started: float) -> int:
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    init_qlib(provider, region=config["qlib_init"].get("region", "cn"))

    import warnings

    from qlib.backtest.position import Position
    from qlib.contrib.model.double_ensemble import DEnsembleModel
    from qlib.utils import init_instance_by_config
    from qlib.workflow.recorder import MLflowRecorder

    warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
    start_run = MLflowRecorder.start_run

    def start_run_logging_in_line(self: MLflowRecorder) -> object:
        # Qlib logs metrics on a background thread; on MLflow's file store a record that reads the run meanwhile
        # can find a half-written metric file.
        run = start_run(self)
        self.async_log = None
        return run

    MLflowRecorder.start_run = start_run_logging_in_line
    if not args.set_ordered_positions:
        stock_list = Position.get_stock_list
        Position.get_stock_list = lambda self: sorted(stock_list(self))
    if not args.set_ordered_features:
        DEnsembleModel.feature_selection = _in_column_order(DEnsembleModel.feature_selection)

    tasks = config["tasks"] if "tasks" in config else {"": config["task"]}
    datasets: dict[str, object] = {}
    timings = []
    for name, task in tasks.items():
        key = json.dumps(task["dataset"], sort_keys=True)
        t0 = time.perf_counter()
        if key not in datasets:
            datasets[key] = init_instance_by_config(task["dataset"])
        seconds = {"data": time.perf_counter() - t0}
        seconds |= run_task(task, datasets[key], int(config["numpy_seed"]), out / name, args.dump_features)
        timings.append(f"{name or 'task'}: " + ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items()))
    print(f"workflow: {'; '.join(timings)}; total {time.perf_counter() - started:.1f}s -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
