"""Dispatch overhead of the task pool on Celery + Redis, and worker scaling on CPU-bound tasks.

Usage: python benchmarks/dispatch.py [--tasks 400] [--rounds 3] [--busy-tasks 12] [--busy-s 0.5]

Workers are real ``celery worker`` processes started by this script (``--worker``, internal) on Redis DBs 14
(broker) and 15 (results), which it flushes; the Celery configuration is qtrain's own
(``app.distributed.celery_config.make_app``: JSON, acks_late, prefetch 1, task events on), with the benchmark's
tasks registered instead of ``tasks/``.

(a) No-op throughput, one worker process, client, worker and Redis on this machine:

- bare Celery: the client sends N ``bench.noop`` tasks and waits for every result.
- through the pool: per task the client does what ``TrainerRM.submit`` does for a spec, minus building it:
  ``pool.submit`` (dedupe by hash, status waiting), then ``trainer_rm.send`` (``CeleryBroker.dispatch``: a
  ``qtrain.train`` message carrying (pool, task id), then ``mark_dispatched``); it then polls ``pool.stats``
  until all N are done, as ``TrainerRM.wait`` does. The worker's ``qtrain.train`` runs the production
  ``PoolWorker.run`` (claim under a lease and token, heartbeat thread, ``finish`` checked against the token,
  the outcome returned as the Celery result) with only the training step (``PoolWorker._execute``) replaced by
  an immediate "done": no spec building, no MLflow, no model. The task store is the embedded SQLite file
  (MongoDB cannot run on this machine), in a temp dir.
  Both paths write a Celery result; tasks/s = N / (first send .. last task seen done).

(b) CPU-bound scaling: M tasks, each a single-threaded numpy loop calibrated to ~``--busy-s`` seconds, sent to one
worker with ``-c 1`` and then with ``-c 2``; speed-up = wall(-c 1) / wall(-c 2), first send to last result.
BLAS/OpenMP thread pools are pinned to one thread in the workers, so each process uses one core.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REDIS = "redis://127.0.0.1:6379"
BROKER, BACKEND = f"{REDIS}/14", f"{REDIS}/15"
POOL = "bench"
RESULTS = Path(__file__).parent / "results"
SINGLE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")}


def busy_loop(iterations: int) -> float:
    """Single-threaded numpy work (element-wise ufuncs on 100k floats); returns a checksum."""
    import numpy as np

    x = np.linspace(0.0, 1.0, 100_000)
    for _ in range(iterations):
        x = np.sin(x) + 0.5 * np.cos(x)
    return float(x.sum())


def build(store_url: str) -> Any:
    """qtrain's Celery configuration on the benchmark's Redis DBs, with the benchmark tasks."""
    from app.core.settings import load_settings
    from app.distributed.celery_config import make_app

    settings = load_settings({"QTRAIN_BROKER_URL": BROKER, "QTRAIN_RESULT_BACKEND": BACKEND})
    bench = make_app(settings)
    bench.conf.update(include=[])  # not tasks/: this app's qtrain.train is the no-training stand-in below

    @bench.task(name="bench.noop")
    def noop() -> None:
        return None

    @bench.task(name="bench.busy")
    def busy(iterations: int) -> float:
        return busy_loop(iterations)

    @bench.task(name="qtrain.train", bind=True)
    def train(self: Any, pool: str, task_id: str) -> dict[str, Any]:
        return _pool_worker(store_url, self.request.hostname).run(pool, task_id).to_json()

    return bench


@functools.cache
def _pool_worker(store_url: str, hostname: str) -> Any:
    """The production PoolWorker with the training step replaced by an immediate "done"."""
    from app.taskpool import open_pool
    from app.workflow.pool_worker import AttemptOutcome, PoolWorker

    class NoTrainingWorker(PoolWorker):
        def _execute(self, task: Any, started: Any) -> AttemptOutcome:
            return AttemptOutcome("trained", task.id, "done", run_id="", metrics={})

    return NoTrainingWorker(open_pool(store_url), None, lambda spec: None, worker=hostname)  # type: ignore[arg-type]


def run_worker(name: str, concurrency: int, store_url: str) -> None:
    bench = build(store_url)
    bench.worker_main(
        ["worker", "-Q", "cpu", "-c", str(concurrency), "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
         "-l", "WARNING"]
    )  # fmt: skip


class Worker:
    """A benchmark worker subprocess in its own process group."""

    def __init__(self, bench: Any, name: str, concurrency: int, store_url: str, log: Path) -> None:
        self.name = f"{name}@{socket.gethostname()}"
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--worker", name, "--concurrency", str(concurrency), "--store", store_url],
                env={**os.environ, **SINGLE_THREAD}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while not bench.control.ping(destination=[self.name], timeout=0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"worker {self.name} did not start:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                return
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=20)
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


def bare_noop(bench: Any, n: int) -> float:
    started = time.perf_counter()
    results = [bench.send_task("bench.noop", queue="cpu", routing_key="cpu") for _ in range(n)]
    for result in results:
        result.get(timeout=120)
    return n / (time.perf_counter() - started)


def pool_noop(bench: Any, store_url: str, n: int, round_no: int) -> tuple[float, float]:
    """tasks/s end to end, and tasks/s of the client's submit + dispatch loop alone."""
    from app.distributed.broker import CeleryBroker
    from app.taskpool import open_pool
    from app.workflow.trainer_rm import send

    pool, broker = open_pool(store_url), CeleryBroker(bench)
    pool_name = f"{POOL}-{round_no}"
    started = time.perf_counter()
    for i in range(n):
        spec = {"bench": round_no, "i": i}
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        task, created = pool.submit(pool_name, spec, digest, queue="cpu", experiment="bench")
        assert created
        send(pool, broker, task)
    submitted = time.perf_counter()
    deadline = time.monotonic() + 300
    while (stats := pool.stats(pool_name))["done"] < n:
        if stats["failed"] or time.monotonic() > deadline:
            raise SystemExit(f"pool tasks did not finish: {stats}")
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    pool.close()
    return n / elapsed, n / (submitted - started)


def busy_wall(bench: Any, tasks: int, iterations: int) -> float:
    started = time.perf_counter()
    results = [bench.send_task("bench.busy", args=[iterations], queue="cpu", routing_key="cpu") for _ in range(tasks)]
    for result in results:
        result.get(timeout=600)
    return time.perf_counter() - started


def calibrate(seconds: float) -> tuple[int, float]:
    busy_loop(5)
    started = time.perf_counter()
    busy_loop(50)
    per_iteration = (time.perf_counter() - started) / 50
    iterations = max(1, round(seconds / per_iteration))
    started = time.perf_counter()
    busy_loop(iterations)
    return iterations, time.perf_counter() - started


def flush() -> None:
    import redis

    for url in (BROKER, BACKEND):
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()


def _load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.1f}" for x in load)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=400, help="no-op tasks per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy-tasks", type=int, default=12)
    parser.add_argument("--busy-s", type=float, default=0.5, help="target seconds of one CPU-bound task")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker, args.concurrency, args.store)
        return

    report: dict[str, Any] = {"cores": os.cpu_count(), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="qtrain-dispatch-") as tmp:
        store_url = f"sqlite:///{Path(tmp) / 'tasks.db'}"
        bench = build(store_url)
        flush()
        worker = Worker(bench, "bench-noop", 1, store_url, Path(tmp) / "noop.log")
        try:
            bare_noop(bench, 20)  # warm-up: connections, pool child imports, SQLite schema
            pool_noop(bench, store_url, 20, 0)
            bare, pooled, submit = [], [], []
            for r in range(1, args.rounds + 1):
                bare.append(bare_noop(bench, args.tasks))
                rate, submit_rate = pool_noop(bench, store_url, args.tasks, r)
                pooled.append(rate)
                submit.append(submit_rate)
        finally:
            worker.stop()
        report["noop"] = {"tasks": args.tasks, "rounds": args.rounds, "bare_per_s": bare, "pool_per_s": pooled,
                          "pool_submit_per_s": submit}  # fmt: skip
        b, p, s = statistics.median(bare), statistics.median(pooled), statistics.median(submit)
        print(f"no-op tasks, 1 worker process, {args.tasks} tasks x {args.rounds} rounds (median; all rounds):")
        print(f"  bare Celery          {b:7.1f} tasks/s   {' '.join(f'{x:.0f}' for x in bare)}")
        print(f"  through the pool     {p:7.1f} tasks/s   {' '.join(f'{x:.0f}' for x in pooled)}")
        print(f"  overhead ratio       {b / p:7.2f}x  (bare / pool); {1000 / p - 1000 / b:.1f} ms more per task")
        print(f"  client submit+dispatch alone {s:7.1f} tasks/s (SQLite store)")

        iterations, one = calibrate(args.busy_s)
        walls = {}
        for concurrency in (1, 2):
            flush()
            worker = Worker(bench, f"bench-busy{concurrency}", concurrency, store_url, Path(tmp) / "busy.log")
            try:
                busy_wall(bench, concurrency, iterations)  # warm-up: every pool child imports numpy
                walls[concurrency] = busy_wall(bench, args.busy_tasks, iterations)
            finally:
                worker.stop()
        flush()
    speedup = walls[1] / walls[2]
    report["busy"] = {"tasks": args.busy_tasks, "task_s": one, "wall_c1_s": walls[1], "wall_c2_s": walls[2],
                      "speedup": speedup}  # fmt: skip
    print(f"CPU-bound: {args.busy_tasks} tasks of {one:.2f} s (single-threaded numpy), {os.cpu_count()} cores:")
    print(f"  -c 1  {walls[1]:6.2f} s   -c 2  {walls[2]:6.2f} s   speed-up {speedup:.2f}x (ideal 2.00x)")
    report["load_after"] = os.getloadavg()
    print(f"load average (1/5/15 min) before {_load(report['load_before'])}, after {_load(report['load_after'])}:"
          " other work on the machine distorts these figures")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dispatch.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
