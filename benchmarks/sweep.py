"""An 8-task LightGBM Alpha158 seed sweep on the sample market: qtrain (one process; 1 and 2 Celery workers) vs
pyqlib 0.9.7's TrainerR, side by side in one run.

Usage: python benchmarks/sweep.py [--tasks 8] [--instruments 100] [--days 1500] [--repeat 3] [--skip-qlib]
       [--skip-celery]

Every side trains the same tasks: the default `qtrain run` config (Qlib's LightGBM Alpha158 benchmark: DatasetH,
LGBModel parameters, Signal/SigAna/PortAna records) with seeds 0..N-1, on one sample market
made in a temp dir. Each side starts with no features computed (Qlib's TrainerR computes them for every task;
qtrain once per sweep) and a tracking store that exists; numba's kernels are compiled once before timing.

* qtrain, one process: `qtrain run -m seed=0,...` (basic launcher), whole process; LightGBM on all cores (as
  Qlib's benchmark config, `--threads N` to change), and so is Qlib's side.
* qtrain on Celery: `hydra/launcher=celery` to one worker (`-c 1`, LightGBM on 1 thread), then to two, both
  warm (started and ready before the clock starts; each sweep under its own experiment: nothing is deduplicated).
* Qlib: `tests/qlib_ref/trainer_sweep.py` in the reference venv (`.qlib-venv`, built as tests/qlib_ref/README.md
  says): `TrainerR(experiment_name=...).train(tasks)`, whole process.

Per-job overhead = what a job costs beyond LightGBM's boosting (metric `time_boost_s` of each run): for one
process, each job's share of the wall time between its `[sweep k/N]` line and the next; for workers, each run's
MLflow duration. For the Celery sweeps it also prints the time from the command to the first task's run (the
client's serial part) and the workers' span (first run's start to last run's end), and the 2-worker ratio of both
the whole sweep and the span. qtrain's sweeps run ``--repeat`` times (each one-process repeat from no features
again, each Celery repeat under a new experiment on the same warm workers) and the figures are medians: on a shared
2-core VM one sweep's wall time moves by ±30 % from one minute to the next. Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QLIB_PYTHON = ROOT / ".qlib-venv" / "bin" / "python"
REDIS = "redis://127.0.0.1:6379"


def environment(work: Path, market: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QTRAIN_", "MLFLOW_"))}
    env.update(
        QTRAIN_HOME=str(work / ".qtrain"),
        QTRAIN_DATA_DIR=str(market),
        QTRAIN_BROKER_URL=f"{REDIS}/14",
        QTRAIN_RESULT_BACKEND=f"{REDIS}/15",
        QTRAIN_TASK_STORE=f"sqlite:///{work / 'tasks.db'}",
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        QTRAIN_WORKER_THREADS="1",
    )
    return env


def qtrain_sweep(
    env: dict[str, str], work: Path, seeds: list[int], experiment: str, threads: int, *extra: str
) -> dict[str, Any]:
    """Run one `qtrain run -m` sweep; returns wall seconds and the times its `[sweep k/N]` lines appeared."""
    cmd = [str(BIN / "qtrain"), "run", "-m", f"seed={','.join(map(str, seeds))}",
           f"model.num_threads={threads or 'null'}", f"experiment_name={experiment}", *extra]  # fmt: skip
    started, started_at = time.perf_counter(), time.time()
    proc = subprocess.Popen(cmd, cwd=work, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    marks, lines = [], []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("[sweep "):
            marks.append(time.perf_counter() - started)
    if proc.wait() != 0:
        raise SystemExit(f"qtrain sweep failed:\n{''.join(lines[-40:])}")
    return {"wall": time.perf_counter() - started, "marks": marks, "started_at": started_at}


def runs(env: dict[str, str], experiment: str) -> list[dict[str, Any]]:
    """The experiment's runs: seed, boosting seconds, MLflow duration, metrics."""
    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, experiment
    out = []
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        m = run.data.metrics
        out.append({
            "seed": int(run.data.params["seed"]), "boost": m["time_boost_s"],
            "duration": (run.info.end_time - run.info.start_time) / 1000, "IC": m.get("IC"),
            "start": run.info.start_time / 1000, "end": run.info.end_time / 1000,
            "Rank IC": m.get("Rank IC"), "excess": m.get("1day.excess_return_with_cost.annualized_return"),
        })  # fmt: skip
    return sorted(out, key=lambda r: r["seed"])


class Workers:
    """`celery -A app worker -Q cpu -c 1` processes, each started and ready."""

    def __init__(self, env: dict[str, str], work: Path) -> None:
        self.env, self.work, self.procs = env, work, []  # type: ignore[var-annotated]

    def start(self, name: str) -> None:
        log = self.work / f"worker-{name}.log"
        proc = subprocess.Popen(
            [str(BIN / "celery"), "-A", "app", "worker", "-Q", "cpu", "-c", "1", "-n", f"{name}@%h",
             "--without-gossip", "--without-mingle", "-l", "INFO"],
            cwd=self.work, env=self.env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.procs.append(proc)
        deadline = time.monotonic() + 120
        while b"ready." not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker {name} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()


def per_job_overhead_local(sweep: dict[str, Any], rs: list[dict[str, Any]]) -> list[float]:
    marks = [*sweep["marks"], sweep["wall"]]
    return [marks[i + 1] - marks[i] - rs[i]["boost"] for i in range(len(rs))]


def qlib_sweep(market: Path, seeds: list[int], work: Path, threads: int) -> dict[str, Any]:
    out = work / "qlib.json"
    started = time.perf_counter()
    cmd = [str(QLIB_PYTHON), str(ROOT / "tests" / "qlib_ref" / "trainer_sweep.py"), str(market), "synth", str(out),
           "--seeds", *map(str, seeds), "--num-threads", str(threads or os.cpu_count() or 1)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    if done.returncode != 0:
        raise SystemExit(f"Qlib's TrainerR failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["wall"] = time.perf_counter() - started
    return result


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--days", type=int, default=1500)
    parser.add_argument("--repeat", type=int, default=3, help="qtrain sweeps per side; figures are medians")
    parser.add_argument("--skip-qlib", action="store_true")
    parser.add_argument("--skip-celery", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="LightGBM threads, one process and Qlib (0: all)")
    args = parser.parse_args()
    seeds = list(range(args.tasks))
    with tempfile.TemporaryDirectory(prefix="qtrain-bench-sweep-") as tmp:
        work = Path(tmp)
        market = work / "market"
        subprocess.run([str(BIN / "qtrain"), "data", "synth", "--to", str(market), "--instruments",
                        str(args.instruments), "--days", str(args.days)], check=True, capture_output=True)  # fmt: skip
        env = environment(work, market)
        # not timed: numba's kernels compiled, the tracking DB created (features then dropped: each side computes)
        warm = {**env, "QTRAIN_HOME": str(work / "warmup")}
        subprocess.run([str(BIN / "qtrain"), "run", "record=[signal]"], cwd=work, env=warm, check=True,
                       capture_output=True)  # fmt: skip
        load = os.getloadavg()[0]
        print(f"sweep of {len(seeds)} LightGBM Alpha158 tasks (seeds 0..{len(seeds) - 1}) on "
              f"{args.instruments} x {args.days}; load {load:.2f} at the start")  # fmt: skip

        local_walls, overheads, firsts, boosts = [], [], [], []
        for rep in range(args.repeat):
            shutil.rmtree(work / ".qtrain" / "cache", ignore_errors=True)  # every repeat computes the features
            local = qtrain_sweep(env, work, seeds, f"bench_local{rep}", args.threads)
            local_runs = runs(env, f"bench_local{rep}")
            overhead = per_job_overhead_local(local, local_runs)
            local_walls.append(local["wall"])
            overheads.append(med(overhead[1:]))
            firsts.append(overhead[0])
            boosts.append(sum(r["boost"] for r in local_runs))
            print(f"  one process, repeat {rep + 1}: {local['wall']:.1f} s, per-job overhead median "
                  f"{overheads[-1]:.2f} s", flush=True)  # fmt: skip
        local_wall = med(local_walls)
        threads = f"{args.threads} thread(s)" if args.threads else "all cores"
        print(f"qtrain, one process, LightGBM on {threads}: {local_wall:6.1f} s (median of {args.repeat})\n"
              f"  (boosting {med(boosts):5.1f} s; per-job overhead median "
              f"{med(overheads):.2f} s after the first (repeats: {', '.join(f'{o:.2f}' for o in overheads)}), "
              f"first job {med(firsts):.2f} s incl. start and features; "
              f"amortised {(local_wall - med(boosts)) / len(seeds):.2f} s)")  # fmt: skip

        walls: dict[int, float] = {}
        worker_spans: dict[int, float] = {}
        if not args.skip_celery:
            workers = Workers(env, work)
            try:
                for count in (1, 2):
                    for i in range(count):
                        workers.start(f"bench{count}-{i}")
                    sweeps, task_over, leads, spans = [], [], [], []
                    for rep in range(args.repeat):
                        name = f"bench_celery{count}_{rep}"
                        sweep = qtrain_sweep(env, work, seeds, name, 1, "hydra/launcher=celery")
                        celery_runs = runs(env, name)
                        sweeps.append(sweep["wall"])
                        task_over += [r["duration"] - r["boost"] for r in celery_runs]
                        leads.append(min(r["start"] for r in celery_runs) - sweep["started_at"])
                        spans.append(max(r["end"] for r in celery_runs) - min(r["start"] for r in celery_runs))
                    walls[count], worker_spans[count] = med(sweeps), med(spans)
                    plural = "s" if count > 1 else ""
                    print(f"qtrain, {count} worker{plural} (-c 1, LightGBM on 1 thread): {walls[count]:6.1f} s "
                          f"(median; repeats {', '.join(f'{w:.1f}' for w in sweeps)})\n"
                          f"  (per-task overhead beyond boosting: median {med(task_over):.2f} s; from the command to "
                          f"the first task's run {med(leads):.2f} s; the workers' span, first run's start to last "
                          f"run's end, {worker_spans[count]:.1f} s)")  # fmt: skip
                    workers.stop()
            finally:
                workers.stop()
            print(f"2 workers vs 1        : {walls[1] / walls[2]:.2f}x whole sweep, "
                  f"{worker_spans[1] / worker_spans[2]:.2f}x the workers' span")  # fmt: skip

        if not args.skip_qlib:
            if not QLIB_PYTHON.exists():
                raise SystemExit(f"{QLIB_PYTHON} is missing; build it as tests/qlib_ref/README.md says")
            ref = qlib_sweep(market, seeds, work, args.threads)
            print(f"Qlib 0.9.7 TrainerR, LightGBM on {threads}: {ref['wall']:6.1f} s\n"
                  f"  (qlib.init {ref['import_init_s']:.1f} s, "
                  f"{ref['train_s'] / len(seeds):.1f} s per task)")  # fmt: skip
            print(f"qtrain one process vs Qlib TrainerR: {ref['wall'] / local_wall:.1f}x faster")
            if walls:
                print(f"qtrain 2 workers vs Qlib TrainerR  : {ref['wall'] / walls[2]:.1f}x faster")
            for q, r in zip(ref["tasks"], local_runs, strict=True):
                print(f"  seed {r['seed']}: Rank IC qtrain {r['Rank IC']:.4f} / Qlib {q['Rank IC']:.4f}")
        print(f"load {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
