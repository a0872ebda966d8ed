#!/usr/bin/env python
"""Raw Qlib Alpha158 features + label, no processors.

Usage (inside .qlib-venv):
    python alpha158.py DATA_DIR MARKET START END OUT.parquet

Writes a parquet with index (datetime, instrument), sorted, and flat columns:
the 158 Alpha158 feature names in Qlib's order, then LABEL0
(= Ref($close, -2)/Ref($close, -1) - 1). Values are Qlib's float32, unprocessed
(handler.fetch(col_set="__all", data_key=DataHandlerLP.DK_R) with
infer_processors=[] and learn_processors=[]).
"""
from __future__ import annotations

import sys
import time

from _common import init_qlib, write_parquet


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    data_dir, market, start, end, out = argv
    t0 = time.perf_counter()
    init_qlib(data_dir)

    from qlib.contrib.data.handler import Alpha158
    from qlib.data.dataset.handler import DataHandlerLP

    handler = Alpha158(
        instruments=market,
        start_time=start,
        end_time=end,
        fit_start_time=start,
        fit_end_time=end,
        infer_processors=[],
        learn_processors=[],
    )
    df = handler.fetch(col_set="__all", data_key=DataHandlerLP.DK_R)
    # col_set="__all" already drops the ("feature"/"label") group level in Qlib 0.9.7;
    # handle a MultiIndex too in case another version keeps it.
    cols = df.columns.get_level_values(-1) if df.columns.nlevels > 1 else df.columns
    names = [str(c) for c in cols]
    if len(names) != 159 or names[-1] != "LABEL0" or len(set(names)) != len(names):
        raise RuntimeError(f"unexpected columns: {len(names)} {names[-3:]}")
    df.columns = names
    df.index = df.index.set_names(["datetime", "instrument"])
    df = df.sort_index()
    write_parquet(df, out)
    print(f"alpha158: {df.shape[0]} rows x {df.shape[1]} cols -> {out} ({time.perf_counter() - t0:.1f}s)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
