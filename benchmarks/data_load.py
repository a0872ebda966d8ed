"""Load time and peak memory of 300 instruments x 3000 days x 6 fields from a Qlib-layout store.

Usage: python benchmarks/data_load.py [--instruments 300] [--days 3000] [--repeat 5]
The synthetic store is written once under benchmarks/results/ and reused.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
import tracemalloc
from pathlib import Path

from app.data.store import QlibStore
from app.data.synth import SynthSpec, write_synth_market

FIELDS = ["open", "high", "low", "close", "volume", "vwap"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=300)
    parser.add_argument("--days", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    root = Path(__file__).parent / "results" / f"synth_{args.instruments}x{args.days}"
    if not (root / "calendars" / "day.txt").is_file():
        started = time.perf_counter()
        write_synth_market(root, SynthSpec(instruments=args.instruments, days=args.days, seed=0))
        print(f"wrote {root} in {time.perf_counter() - started:.2f}s")

    started = time.perf_counter()
    QlibStore(root).load(FIELDS, market="all")
    first = time.perf_counter() - started

    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        panel = QlibStore(root).load(FIELDS, market="all")
        times.append(time.perf_counter() - started)

    tracemalloc.start()
    panel = QlibStore(root).load(FIELDS, market="all")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    frame_started = time.perf_counter()
    frame = panel.to_frame()
    frame_time = time.perf_counter() - frame_started

    n, t = len(panel.instruments), len(panel.dates)
    payload = sum(a.nbytes for a in panel.values.values())
    print(f"store      {root}  ({n} instruments x {t} days x {len(FIELDS)} fields)")
    print(f"first load {first * 1000:8.1f} ms (page cache may already be warm)")
    print(f"warm load  {statistics.median(times) * 1000:8.1f} ms median of {args.repeat} (min {min(times) * 1000:.1f})")
    print(f"to_frame   {frame_time * 1000:8.1f} ms ({len(frame)} rows)")
    print(f"peak alloc {peak / 2**20:8.1f} MiB during load (arrays themselves: {payload / 2**20:.1f} MiB)")
    print(f"max RSS    {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.1f} MiB for the process")


if __name__ == "__main__":
    main()
