"""Alpha158 + label: cold and cached build times and peak memory, for 100 x 1500 and 300 x 3000 markets.

Usage: python benchmarks/alpha158.py [--sizes 100x1500,300x3000]

Each measurement runs in a fresh process (so "cold" includes loading the data and numba's compiled
kernels from its on-disk cache, but not the one-off compilation, which is done first in a warm-up process).
Peak memory is the measuring process's max RSS. Markets are written once under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from app.data.store import QlibStore
from app.dataset.cache import FeatureCache
from app.dataset.handler import DataHandler
from app.features.handlers import alpha158
imported = time.perf_counter() - t0
store = QlibStore(sys.argv[1]); cal = store.calendar()
handler = DataHandler(features=alpha158(), market="all", start_time=str(cal[0].date()), end_time=str(cal[-1].date()),
                      fit_start_time=str(cal[0].date()), fit_end_time=str(cal[len(cal) // 2].date()))
cache = FeatureCache(sys.argv[2]) if sys.argv[2] != "-" else None
t1 = time.perf_counter()
frame = handler.raw(store, cache)
elapsed = time.perf_counter() - t1
print(json.dumps({"seconds": elapsed, "import": imported, "rows": len(frame), "cols": frame.shape[1],
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run(store: Path, cache: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(store), cache], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100x1500,300x3000")
    args = parser.parse_args()
    from app.data.synth import SynthSpec, write_synth_market

    for size in args.sizes.split(","):
        n, t = (int(x) for x in size.split("x"))
        store = RESULTS / f"synth_{n}x{t}"
        if not (store / "calendars" / "day.txt").is_file():
            write_synth_market(store, SynthSpec(instruments=n, days=t, seed=0))
        started = time.perf_counter()
        _run(store, "-")  # warm-up: compiles numba kernels into their cache if needed
        warmup = time.perf_counter() - started
        cold = _run(store, "-")
        with tempfile.TemporaryDirectory() as tmp:
            building = _run(store, tmp)
            cached = _run(store, tmp)
        print(
            f"{n:>4} x {t:<5} rows {int(cold['rows']):>8} cols {int(cold['cols'])}: "
            f"cold {cold['seconds']:.2f}s (peak RSS {cold['max_rss_mb']:.0f} MB), "
            f"cold+write cache {building['seconds']:.2f}s, cached load {cached['seconds']:.3f}s "
            f"(peak RSS {cached['max_rss_mb']:.0f} MB); imports {cold['import']:.2f}s; first-ever process {warmup:.1f}s"
        )


if __name__ == "__main__":
    main()
