"""Time of the records stage (signal, sig_ana, port_ana) on ~20k test predictions, 100 instruments x 240 days.

Usage: python benchmarks/records.py [--instruments 100] [--days 240] [--repeat 3] [--profile]

A synthetic store (`qtrain data synth`) is written once under benchmarks/results/ and reused. Predictions are the
next-day return plus noise (seeded), so IC and the backtest have something to find; the "model" hands them back,
the way a trained model's predict would. Each repeat is a new MLflow run on a fresh SQLite tracking store (its
creation is not counted), with the records inside `Recorder.deferred_artifacts()` as `_train_in_run` runs them;
the one upload as the block ends is the "upload" line. `--profile` prints where one more run spends its time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from app.data.store import QlibStore
from app.data.synth import SynthSpec, write_synth_market
from app.evaluation.backtest import BacktestConfig
from app.evaluation.records import PortAnaRecord, RecordContext, SigAnaRecord, SignalRecord
from app.tracking.backend import prepare_tracking_store
from app.tracking.manager import ExpManager


@dataclass
class FixedModel:
    """Stands in for a trained model: ``predict`` returns the prepared test predictions."""

    pred: pd.Series

    def predict(self, dataset: Any, segment: str) -> pd.Series:
        return self.pred


@dataclass
class FixedDataset:
    """Stands in for the dataset: the raw test label."""

    label: pd.DataFrame

    def prepare(self, segment: str, col_set: str, view: str = "raw") -> pd.DataFrame:
        return self.label


def _market(instruments: int, days: int) -> tuple[QlibStore, pd.Series, pd.DataFrame]:
    root = Path(__file__).parent / "results" / f"synth_{instruments}x{days}"
    if not (root / "calendars" / "day.txt").is_file():
        write_synth_market(root, SynthSpec(instruments=instruments, days=days + 2, seed=0))
    store = QlibStore(root)
    close = store.load_frame(["close"], market="synth")["close"]
    ret = close.groupby(level="instrument").pct_change().groupby(level="instrument").shift(-1)
    ret = ret[ret.index.get_level_values("datetime") < store.calendar()[-1]].dropna()
    rng = np.random.default_rng(0)
    pred = pd.Series(ret.to_numpy() + rng.normal(0, 0.05, len(ret)), index=ret.index, name="score")
    label = ret.rename("LABEL0").to_frame()
    return store, pred, label


@contextlib.contextmanager
def _timed(times: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    times[name] = time.perf_counter() - started


def _one_run(template: Path, work: Path, store: QlibStore, pred: pd.Series, label: pd.DataFrame) -> dict[str, float]:
    work.mkdir()
    (work / "mlflow.db").write_bytes(template.read_bytes())
    manager = ExpManager(f"sqlite:///{work / 'mlflow.db'}", work / "artifacts")
    records = [SignalRecord(), SigAnaRecord(), PortAnaRecord(config=BacktestConfig())]
    times: dict[str, float] = {}
    with manager.start(experiment_name="bench-records") as recorder:
        ctx = RecordContext(FixedModel(pred), FixedDataset(label), store, recorder)  # type: ignore[arg-type]
        started = time.perf_counter()
        with recorder.deferred_artifacts():
            for record in records:
                with _timed(times, record.name):
                    record.generate(ctx)
            upload_started = time.perf_counter()
        times["upload"] = time.perf_counter() - upload_started
        times["total"] = time.perf_counter() - started
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--days", type=int, default=240)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print the top 25 functions of one more run")
    args = parser.parse_args()

    store, pred, label = _market(args.instruments, args.days)
    with tempfile.TemporaryDirectory(prefix="qtrain-bench-records-") as tmp:
        template = Path(tmp) / "template.db"
        prepare_tracking_store(f"sqlite:///{template}", Path(tmp) / "unused")
        _one_run(template, Path(tmp) / "warmup", store, pred, label)  # imports, numba/matplotlib first use
        runs = [_one_run(template, Path(tmp) / f"run{i}", store, pred, label) for i in range(args.repeat)]
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(_one_run, template, Path(tmp) / "profiled", store, pred, label)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    print(f"records on {len(pred)} predictions ({args.instruments} instruments x {args.days} days), median of "
          f"{args.repeat} runs (min - max):")  # fmt: skip
    for key in ("signal", "sig_ana", "port_ana", "upload", "total"):
        values = [r[key] for r in runs]
        print(f"  {key:<9} {statistics.median(values):6.3f}s  ({min(values):.3f} - {max(values):.3f})")


if __name__ == "__main__":
    main()
