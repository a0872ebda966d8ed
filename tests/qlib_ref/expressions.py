#!/usr/bin/env python
"""Evaluate arbitrary Qlib expressions with D.features.

Usage (inside .qlib-venv):
    python expressions.py DATA_DIR MARKET START END OUT.parquet EXPR1 [EXPR2 ...]

MARKET is an instruments file name (e.g. "all"); a comma-separated list of
symbols (e.g. "SH600000,SZ000001") is also accepted and passed to D.features
as an explicit instrument list (no span filtering then).
Writes a parquet with index (datetime, instrument), sorted, one column per
expression named by the exact expression string. Values are Qlib's float32.
"""
from __future__ import annotations

import sys
import time

from _common import init_qlib, write_parquet


def main(argv: list[str]) -> int:
    if len(argv) < 6:
        print(__doc__, file=sys.stderr)
        return 2
    data_dir, market, start, end, out, *exprs = argv
    t0 = time.perf_counter()
    init_qlib(data_dir)

    from qlib.data import D

    instruments = market.split(",") if "," in market else D.instruments(market)
    df = D.features(instruments, exprs, start_time=start, end_time=end, freq="day")
    # D.features returns index (instrument, datetime); the reference layout is (datetime, instrument)
    df = df.swaplevel().sort_index()
    df.index = df.index.set_names(["datetime", "instrument"])
    df.columns = [str(c) for c in df.columns]
    if list(df.columns) != list(exprs):
        raise RuntimeError(f"column mismatch: {list(df.columns)} vs {exprs}")
    write_parquet(df, out)
    print(f"expressions: {df.shape[0]} rows x {df.shape[1]} cols -> {out} ({time.perf_counter() - t0:.1f}s)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
