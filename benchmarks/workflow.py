"""End-to-end wall time of the default workflow (LightGBM + Alpha158 + signal/IC/backtest records) on 100 x 1500.

Usage: python benchmarks/workflow.py [--instruments 100] [--days 1500]

The task is `conf/config.yaml` as `qtrain run` composes it, with `data.store.root` pointed at a sample market in a
temp dir. Each measurement is a fresh process, like a `qtrain run`: "cold" starts with a new tracking DB and an
empty feature cache, "warm" reuses both. A warm-up process runs first so numba's one-off kernel compilation is
not counted; making the sample market is not counted either (Qlib's data download is not in its figure).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

QLIB_REFERENCE = "27-30 s"  # Qlib 0.9.7, the same workflow (qrun, LightGBM Alpha158) on 100 x 1500, this machine


def child(root: Path, work: Path) -> None:
    """One `qtrain run`-like process: imports, tracking store, compose + build, task_train; prints JSON."""
    started = time.perf_counter()
    import lightgbm  # noqa: F401  (loaded lazily by the model; counted with the imports here)
    import mlflow  # noqa: F401  (loaded lazily by the tracking store; counted with the imports here)
    from hydra import compose, initialize_config_dir

    from app.config import build_components, conf_dir, task_spec_from_config
    from app.dataset.cache import FeatureCache
    from app.tracking.manager import ExpManager
    from app.workflow.train import task_train

    imported = time.perf_counter()
    manager = ExpManager(f"sqlite:///{work / 'mlflow.db'}", work / "artifacts")  # migrates a new DB (~3 s)
    tracking = time.perf_counter()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"data.store.root={root}"])
    spec = task_spec_from_config(cfg)
    components = build_components(spec)
    built = time.perf_counter()
    cache = FeatureCache(work / "cache")
    result = task_train(spec, components, manager, experiment_name="bench", cache=cache)
    done = time.perf_counter()
    tags = manager.get_recorder(result.run_id).list_tags()
    print(json.dumps({
        "imports": imported - started, "tracking": tracking - imported, "compose": built - tracking,
        "task": done - built, "total": done - started, **result.timings,
        "feature_cache": tags["feature_cache"], "rank_ic": result.metrics.get("Rank IC", float("nan")),
        "best_iteration": getattr(components.model, "best_iteration", None),
    }))  # fmt: skip


def _run(root: Path, work: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(root), str(work)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"child failed:\n{out.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _line(name: str, r: dict[str, Any]) -> str:
    stages = sum(float(r[k]) for k in ("data", "fit", "records"))
    s = {k: float(v) for k, v in r.items() if isinstance(v, float)}
    return (
        f"{name:<5} total {s['total']:5.1f}s = imports {s['imports']:4.1f}s + tracking store {s['tracking']:4.1f}s"
        f" + compose/build {s['compose']:4.1f}s + task_train {s['task']:5.1f}s [data {s['data']:5.2f}s, fit "
        f"{s['fit']:5.2f}s, records {s['records']:5.2f}s, logging/other {s['task'] - stages:4.2f}s]  "
        f"feature_cache={r['feature_cache']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--days", type=int, default=1500)
    parser.add_argument("--child", nargs=2, metavar=("STORE", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]))
        return
    from app.data.describe import ensure_sample_market

    with tempfile.TemporaryDirectory(prefix="qtrain-bench-") as tmp:
        root = Path(tmp) / "store"
        ensure_sample_market(root, args.instruments, args.days)
        _run(root, Path(tmp) / "warmup")  # numba kernels into their on-disk cache, if not already there
        cold = _run(root, Path(tmp) / "bench")
        warm = _run(root, Path(tmp) / "bench")
    print(f"default workflow (lgbm, alpha158, signal/sig_ana/port_ana) on {args.instruments} x {args.days}:")
    print(_line("cold", cold))
    print(_line("warm", warm))
    print(f"test Rank IC {float(cold['rank_ic']):.4f} (best iteration {cold['best_iteration']})")
    print(f"Qlib 0.9.7 reference for the same workflow and size on this machine: {QLIB_REFERENCE}")


if __name__ == "__main__":
    main()
