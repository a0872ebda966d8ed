"""Chaos run: a 12-task sweep on 2 Celery workers while worker processes and pool children are SIGKILLed at random
and the broker is killed and restarted once; prints what came of every task.

Usage (from the repository root): .venv/bin/python -m benchmarks.chaos [--kills 6] [--tasks 12] [--workers 2]
       [--seed N] [--lease-s 6] [--max-attempts 5] [--rounds 300] [--timeout 900] [--keep]

Everything is real and the script's own: a redis-server on a free port (no persistence, so the restart loses every
queued and unacked message), a SQLite task store and MLflow DB in a temp dir, ``celery -A app worker -c 1``
processes and the ``qtrain run -m ... hydra/launcher=celery`` client (quick LightGBM tasks on a small synthetic
market, tests/integration/celery_harness.py). Once the first task runs, a fault comes every 1-3 s: the broker
restart at a random place among ``--kills`` kills, each of a random worker's main process (its process group:
the worker and its child; restarted 1 s later, as a supervisor would) or of its pool child (Celery forks a new
one). Tasks get ``--max-attempts`` attempts, so a task killed that often still has one.

Figures: submitted, done, failed; duplicated (FINISHED runs beyond one per task: work that completed twice);
lost (tasks neither done nor failed when the client exits or the timeout passes); attempts beyond one per task
(the work the kills cost); the client's exit code and summary; per fault, the time until the task it interrupted
was done (a broker restart: until the next task was done after it), and the time from the last fault to the end.
Prints figures; asserts nothing. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from app.data.synth import SynthSpec, write_synth_market
from app.taskpool.base import TaskRecord
from tests.integration.celery_harness import BIN, Cluster, RedisServer, make_cluster, runs_of
from tests.small_specs import QUICK_LGBM, SEGMENTS


@dataclass
class Fault:
    kind: str  # "child", "main" or "broker"
    victim: str
    at: float  # time.time() of the fault (for the broker: when it was back)
    interrupted: list[str] = field(default_factory=list)  # the pool tasks that were running on the victim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=None, help="random seed of the fault schedule")
    parser.add_argument("--lease-s", type=float, default=6.0)
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=300, help="LightGBM boosting rounds per task")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the client")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, DBs)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="qtrain-chaos-"))
    print(f"chaos: {args.tasks} tasks, {args.workers} workers, {args.kills} kills + 1 broker restart, seed {seed}")
    broker = RedisServer(root / "redis")
    broker.start()
    cluster: Cluster | None = None
    try:
        write_synth_market(root / "market", SynthSpec(instruments=25, days=360, seed=8))
        cluster = make_cluster(root / "cluster", root / "market", 0, lease_s=args.lease_s, redis_url=broker.url)
        names = [f"w{i + 1}" for i in range(args.workers)]
        for name in names:
            cluster.start_worker(name, wait=False)
        for name in names:
            cluster.wait_ready(name)
        report(run(cluster, broker, names, args, rng), cluster, args)
    finally:
        if cluster is not None:
            cluster.stop_all()
        broker.kill()
        if args.keep:
            print(f"work directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@dataclass
class Outcome:
    started: float
    ended: float
    code: int | None
    out: str
    faults: list[Fault]


def run(
    cluster: Cluster, broker: RedisServer, names: list[str], args: argparse.Namespace, rng: random.Random
) -> Outcome:
    launcher = [f"hydra.launcher.max_attempts={args.max_attempts}"]
    model = [o for o in QUICK_LGBM if not o.startswith("model.num_boost_round=")] + [
        f"model.num_boost_round={args.rounds}"
    ]
    started = time.time()
    log = cluster.work / "client.log"
    with log.open("wb") as sink:  # a file, not a pipe: a full pipe would stall the client while faults go on
        client = subprocess.Popen(
            [str(BIN / "qtrain"), "run", "-m", SEGMENTS, *model, f"seed={','.join(map(str, range(args.tasks)))}",
             "hydra/launcher=celery", *launcher],
            cwd=cluster.work, env=cluster.env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    pool = cluster.pool
    plan = ["kill"] * args.kills
    plan.insert(rng.randrange(len(plan) + 1), "broker")
    faults: list[Fault] = []
    while client.poll() is None and not pool.list("qtrain", ["running"]):
        time.sleep(0.1)
    for step in plan:
        time.sleep(rng.uniform(1.0, 3.0))
        if client.poll() is not None or not unsettled(pool.list("qtrain")):
            break
        if step == "broker":
            broker.kill()
            time.sleep(3.0)
            broker.start()
            faults.append(Fault("broker", "redis", time.time()))
            continue
        faults.append(kill(cluster, rng.choice(names), rng.choice(["child", "main"]), pool.list("qtrain", ["running"])))
    try:
        client.wait(timeout=max(args.timeout - (time.time() - started), 1))
    except subprocess.TimeoutExpired:
        client.kill()
        client.wait()
    return Outcome(started, time.time(), client.returncode, log.read_text(errors="replace"), faults)


def kill(cluster: Cluster, name: str, kind: str, running: list[TaskRecord]) -> Fault:
    on_victim = [t.id for t in running if (t.worker or "").startswith(f"{name}@")]
    children = cluster.children(name)
    proc = cluster.workers[name]
    if kind == "child" and children:
        os.kill(children[0], signal.SIGKILL)
        return Fault("child", name, time.time(), on_victim)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    fault = Fault("main", name, time.time(), on_victim)
    proc.wait(timeout=30)
    time.sleep(1.0)
    cluster.start_worker(name, wait=False)  # joins once it is ready; the chaos goes on meanwhile
    return fault


def unsettled(tasks: list[TaskRecord]) -> list[TaskRecord]:
    return [t for t in tasks if t.status not in ("done", "failed", "cancelled")]


def report(outcome: Outcome, cluster: Cluster, args: argparse.Namespace) -> None:
    tasks = cluster.pool.list("qtrain")
    by_id = {t.id: t for t in tasks}
    finished = Counter(h for _, status, h in runs_of(cluster) if status == "FINISHED")
    done_at = sorted(t.finished_at.timestamp() for t in tasks if t.status == "done" and t.finished_at)
    summary = re.search(r"## sweep: (\d+) of (\d+) jobs finished", outcome.out)
    print(f"submitted   {len(tasks)}")
    print(f"done        {sum(t.status == 'done' for t in tasks)}")
    print(f"failed      {sum(t.status == 'failed' for t in tasks)}")
    print(f"duplicated  {sum(n - 1 for n in finished.values())} (FINISHED runs beyond one per task)")
    print(f"lost        {len(unsettled(tasks)) + max(args.tasks - len(tasks), 0)}")
    print(f"attempts    {sum(t.attempts for t in tasks)} for {len(tasks)} tasks")
    print(f"client      exit {outcome.code}; summary: {summary.group(0) if summary else 'none printed'}")
    outages = outcome.out.count("is unreachable (")
    print(f"            {outages} outage(s) reported, {outcome.out.count('is reachable again after')} recovery(ies)")
    if outcome.code != 0:
        print("client output (end):\n" + outcome.out[-3000:])
    print(f"wall time   {outcome.ended - outcome.started:.1f} s")
    print("faults:")
    recoveries = []
    for fault in outcome.faults:
        if fault.kind == "broker":
            after = [t for t in done_at if t > fault.at]
            took = after[0] - fault.at if after else None
            what = "until the next task was done"
        else:
            ends = [by_id[i].finished_at for i in fault.interrupted if i in by_id]
            took = max(e.timestamp() for e in ends) - fault.at if ends and all(ends) else None
            what = f"until its task {','.join(i[:8] for i in fault.interrupted)} was done" if ends else "(idle)"
        when = fault.at - outcome.started
        shown = f"{took:.1f} s {what}" if took is not None else what
        print(f"  {when:6.1f} s  {fault.kind:6} {fault.victim:5} recovered in {shown}")
        if took is not None:
            recoveries.append(took)
    if recoveries:
        print(f"time to recover: max {max(recoveries):.1f} s, median {statistics.median(recoveries):.1f} s")
    if outcome.faults and done_at:
        print(f"last fault to last task done: {done_at[-1] - outcome.faults[-1].at:.1f} s")


if __name__ == "__main__":
    main()
