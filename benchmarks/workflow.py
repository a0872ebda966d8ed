"""The default `qtrain run` end to end (LightGBM + Alpha158 + signal/IC/backtest records) vs Qlib 0.9.7, on 100 x 1500.

Usage: python benchmarks/workflow.py [--instruments 100] [--days 1500] [--repeat 3] [--skip-qlib]

Each measurement is a whole `qtrain run` process on a sample market made in a temp dir, as a user runs it:
"cold" starts with a new tracking DB and an empty feature cache, "warm" reuses both (the feature cache then
also holds LightGBM's binned data). Stages come from the run's metrics (`time_data_s`, `time_fit_s` with
`time_boost_s`, `time_records_s`); "to first stage" is from the process start to the start of the data stage
(read from the run's log line for that stage). The reference is
the same task through Qlib's own `TrainerR` (tests/qlib_ref/trainer_sweep.py, one seed), whole process, in the
reference venv. numba's one-off kernel compilation is paid by a warm-up process first and not counted; making
the sample market is not counted either (Qlib's data download is not in its figure).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sweep import qlib_sweep  # benchmarks/ is on sys.path when this script runs

BIN = Path(sys.executable).parent


def qtrain_run(work: Path, market: Path) -> dict[str, Any]:
    """One `qtrain run` process in ``work``; its wall time and its run's stage metrics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QTRAIN_", "MLFLOW_"))}
    env.update(QTRAIN_HOME=str(work / ".qtrain"), QTRAIN_DATA_DIR=str(market))
    work.mkdir(parents=True, exist_ok=True)
    started_ms = time.time() * 1000
    started = time.perf_counter()
    done = subprocess.run([str(BIN / "qtrain"), "run"], cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"qtrain run failed:\n{done.stderr[-4000:]}")
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("qtrain")
    assert exp is not None
    run = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    m = run.data.metrics
    first_stage = _data_stage_start(done.stdout + done.stderr) - started_ms / 1000
    return {
        "wall": wall, "data": m["time_data_s"], "fit": m["time_fit_s"], "boost": m["time_boost_s"],
        "records": m["time_records_s"], "first_stage": first_stage, "rank_ic": m.get("Rank IC", float("nan")),
        "cache": run.data.tags.get("feature_cache"),
    }  # fmt: skip


def _data_stage_start(log: str) -> float:
    """Epoch seconds at which the data stage started, from the log line ``[time][...] - stage <data> took Xs``."""
    for text in log.splitlines():
        found = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\].*stage <data> took ([0-9.]+)s", text)
        if found:
            stamp = datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S").timestamp() + int(found[2]) / 1000
            return stamp - float(found[3])
    raise SystemExit("no 'stage <data>' line in the qtrain run output")


def line(name: str, runs: list[dict[str, Any]]) -> str:
    def med(key: str) -> float:
        return statistics.median(float(r[key]) for r in runs)

    walls = sorted(r["wall"] for r in runs)
    spread = f"{walls[0]:.1f}-{walls[-1]:.1f}" if len(walls) > 1 else f"{walls[0]:.1f}"
    stages = med("data") + med("fit") + med("records")
    return (
        f"{name:<5} median {med('wall'):5.1f} s ({spread} s, {len(runs)} runs): "
        f"to first stage {med('first_stage'):4.1f} s"
        f" + data {med('data'):4.2f} s + fit {med('fit'):4.2f} s (boosting {med('boost'):4.2f} s) + records"
        f" {med('records'):4.2f} s + the rest {med('wall') - med('first_stage') - stages:4.2f} s"
        f"  [feature_cache={runs[0]['cache']}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--days", type=int, default=1500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-qlib", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qtrain-bench-workflow-") as tmp:
        market = Path(tmp) / "market"
        subprocess.run([str(BIN / "qtrain"), "data", "synth", "--to", str(market), "--instruments",
                        str(args.instruments), "--days", str(args.days)], check=True, capture_output=True)  # fmt: skip
        qtrain_run(Path(tmp) / "warmup", market)  # numba kernels into their on-disk cache, if not already there
        cold = [qtrain_run(Path(tmp) / f"cold{i}", market) for i in range(args.repeat)]
        warm = [qtrain_run(Path(tmp) / "cold0", market) for _ in range(args.repeat)]
        ref = None if args.skip_qlib else qlib_sweep(market, [0], Path(tmp), threads=0)
    print(f"default `qtrain run` (lgbm, alpha158, signal/sig_ana/port_ana) on {args.instruments} x {args.days}:")
    print(line("cold", cold))
    print(line("warm", warm))
    print(f"test Rank IC {float(cold[0]['rank_ic']):.4f}")
    if ref is not None:
        print(
            f"Qlib 0.9.7 TrainerR, the same task: {ref['wall']:.1f} s (test Rank IC {ref['tasks'][0]['Rank IC']:.4f})"
        )
        cold_s = statistics.median(r["wall"] for r in cold)
        warm_s = statistics.median(r["wall"] for r in warm)
        print(f"qtrain vs Qlib: cold {ref['wall'] / cold_s:.1f}x, warm {ref['wall'] / warm_s:.1f}x faster")


if __name__ == "__main__":
    main()
