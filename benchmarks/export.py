"""`qtrain data features` (Alpha158 raw view to parquet) against pyqlib's Alpha158 handler build, same store.

Usage: python benchmarks/export.py [--instruments 100 --days 1500 --repeat 3 --qlib-python .qlib-venv/bin/python]

Every figure is the wall time of a whole fresh process (interpreter start, imports, compute, write):
- qtrain cold: empty feature cache (features computed, cached, exported);
- qtrain warm: the feature cache filled by the cold run (loaded, exported);
- pyqlib: ``tests/qlib_ref/alpha158.py`` (Qlib 0.9.7 with its expression/dataset caches off) on the same store.
numba's kernels are compiled into their on-disk cache by an untimed export first. The best of ``--repeat``
runs is reported for each, and the ratio pyqlib / qtrain. The two parquet files are also compared: same
rows, columns and float32 values (up to Qlib's own float noise, reported as the max abs difference).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QTRAIN = Path(sys.executable).with_name("qtrain")


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--days", type=int, default=1500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--qlib-python", type=Path, default=ROOT / ".qlib-venv" / "bin" / "python")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd

    from app.data.store import QlibStore
    from app.data.synth import SynthSpec, write_synth_market

    work = Path(tempfile.mkdtemp(prefix="qtrain-export-bench-"))
    try:
        store_dir = work / "store"
        write_synth_market(store_dir, SynthSpec(instruments=args.instruments, days=args.days, seed=0))
        cal = QlibStore(store_dir).calendar()
        start, end = str(cal[0].date()), str(cal[-1].date())
        env = {**os.environ, "QTRAIN_CACHE_DIR": str(work / "cache")}
        ours = work / "qtrain.parquet"
        export = [str(QTRAIN), "data", "features", "--data", str(store_dir), "--market", "all", "--handler",
                  "alpha158", "--view", "raw", "--start", start, "--end", end, "--out", str(ours)]  # fmt: skip
        _timed([*export, "--no-cache"], env)  # untimed: numba's one-off compilation, if its cache is cold

        cold, warm, ref = [], [], []
        theirs = work / "qlib.parquet"
        reference = [str(args.qlib_python), str(ROOT / "tests" / "qlib_ref" / "alpha158.py"),
                     str(store_dir), "all", start, end, str(theirs)]  # fmt: skip
        for _ in range(args.repeat):
            shutil.rmtree(work / "cache", ignore_errors=True)
            cold.append(_timed(export, env))
            warm.append(_timed(export, env))
            ref.append(_timed(reference, dict(os.environ)) if args.qlib_python.exists() else float("nan"))

        a, b = pd.read_parquet(ours), pd.read_parquet(theirs) if theirs.exists() else None
        print(f"store: {args.instruments} instruments x {args.days} days; export {len(a)} rows x {a.shape[1]} cols, "
              f"{ours.stat().st_size / 1e6:.0f} MB, dtypes {sorted(set(map(str, a.dtypes)))}")  # fmt: skip
        print(f"{'':24}{'best':>8}{'runs':>28}")
        for name, runs in (("qtrain export, cold", cold), ("qtrain export, warm", warm), ("pyqlib Alpha158", ref)):
            print(f"{name:24}{min(runs):7.2f}s   " + " ".join(f"{r:.2f}" for r in runs))
        if b is not None:
            print(f"ratio pyqlib / qtrain: cold {min(ref) / min(cold):.1f}x, warm {min(ref) / min(warm):.1f}x")
            same_shape = a.index.equals(b.index) and list(a.columns) == list(b.columns)
            diff = float(np.nanmax(np.abs(a.to_numpy(np.float64) - b.to_numpy(np.float64)))) if same_shape else None
            nan_same = same_shape and bool((a.isna().to_numpy() == b.isna().to_numpy()).all())
            print(f"same rows and columns as pyqlib: {same_shape}; same NaNs: {nan_same}; max abs diff: {diff}")
        else:
            print(f"pyqlib not run: {args.qlib_python} is missing (see tests/qlib_ref/README.md)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
