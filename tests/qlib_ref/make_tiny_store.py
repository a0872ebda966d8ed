#!/usr/bin/env python3
"""Write a tiny, deterministic market in Qlib's binary ("qlib_data") layout.

Usage:  python3 make_tiny_store.py OUT_DIR [--days 300] [--seed 7]

Standard library only (runs with the system python3, the qtrain venv or the
qlib venv). Not part of qtrain: it is a fixture generator for the Qlib
reference scripts in this folder.

Layout written (the same one Qlib's ``dump_bin.py`` produces):

  OUT_DIR/calendars/day.txt          one YYYY-MM-DD per line (weekdays)
  OUT_DIR/instruments/all.txt        SYMBOL<TAB>START<TAB>END (upper-case symbols)
  OUT_DIR/features/<symbol lower>/<field>.day.bin
        little-endian float32; element 0 = start index into the calendar,
        then one value per calendar day from that index up to the
        instrument's last day (NaN on suspended days)

Fields: open high low close volume vwap factor change.  Prices are
*adjusted* (raw price * factor) and volume is adjusted (raw volume / factor),
as in Qlib's cn_data; change = close / previous valid close - 1 (NaN on the
first listed day and on suspended days).

Special cases built in (day numbers are 0-based calendar indices):
  SZ000538  late listing: first day 100
  SH600025  early delisting: last day 199
  SH600000  suspended (all fields NaN) on days 50-52 and 160-162
  SH600016  suspended on days 10-14
  SZ000001  suspended on day 200
  SZ000002  listed over the whole calendar with valid data every day, but
            all.txt gives it TWO spans: days 0-119 and 150-end (to show how
            Qlib's membership handles several spans per symbol)
  SH600009  adjustment factor changes on day 150 (1.0 -> 1.25)
  SH600010  limit-up (+10%) on days 30, 31, 170, 171; limit-down (-10%) on days 60, 175
  SH000300  benchmark index (factor 1), listed in all.txt like the stocks
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import random
import sys
from array import array
from pathlib import Path

FIELDS = ("open", "high", "low", "close", "volume", "vwap", "factor", "change")

STOCKS = [
    "SH600000", "SH600004", "SH600009", "SH600010", "SH600011",
    "SH600015", "SH600016", "SH600018", "SH600019", "SH600025",
    "SZ000001", "SZ000002", "SZ000063", "SZ000100", "SZ000157",
    "SZ000333", "SZ000338", "SZ000408", "SZ000425", "SZ000538",
]
INDEX = "SH000300"

NAN = float("nan")


def make_calendar(n_days: int, start: dt.date = dt.date(2020, 1, 2)) -> list[dt.date]:
    days, d = [], start
    while len(days) < n_days:
        if d.weekday() < 5:
            days.append(d)
        d += dt.timedelta(days=1)
    return days


def write_bin(path: Path, start_index: int, values: list[float]) -> None:
    arr = array("f", [float(start_index)] + list(values))
    if sys.byteorder != "little":
        arr.byteswap()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fp:
        arr.tofile(fp)


def simulate(rng: random.Random, n: int, *, p0: float, vol: float, factor: list[float],
             suspended: set[int], forced: dict[int, float], base_volume: float) -> dict[str, list[float]]:
    """Return adjusted OHLCV/vwap/factor/change series of length n."""
    out = {f: [] for f in FIELDS}
    raw_close = p0
    prev_adj_close = None
    for i in range(n):
        if i in suspended:
            for f in FIELDS:
                out[f].append(NAN)
            continue
        r = forced.get(i)
        if r is None:
            r = max(-0.09, min(0.09, rng.gauss(0.0003, vol)))
        prev_raw = raw_close
        raw_close = prev_raw * (1.0 + r)
        raw_open = prev_raw * (1.0 + max(-0.05, min(0.05, rng.gauss(0.0, vol / 3))))
        if r in (0.1, -0.1):  # limit day: trade at the limit price all day
            raw_open = raw_close
        hi = max(raw_open, raw_close) * (1.0 + abs(rng.gauss(0.0, vol / 4)))
        lo = min(raw_open, raw_close) * (1.0 - abs(rng.gauss(0.0, vol / 4)))
        if r in (0.1, -0.1):
            hi = lo = raw_close
        w = rng.random()
        raw_vwap = lo + (hi - lo) * w
        raw_vol = base_volume * math.exp(rng.gauss(0.0, 0.4))
        fac = factor[i]
        adj_close = raw_close * fac
        out["open"].append(raw_open * fac)
        out["high"].append(hi * fac)
        out["low"].append(lo * fac)
        out["close"].append(adj_close)
        out["vwap"].append(raw_vwap * fac)
        out["volume"].append(float(round(raw_vol / 100.0) * 100.0) / fac)
        out["factor"].append(fac)
        # change is computed on adjusted close vs the previous *valid* adjusted close
        out["change"].append(NAN if prev_adj_close is None else adj_close / prev_adj_close - 1.0)
        prev_adj_close = adj_close
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--days", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    out = Path(args.out_dir)
    n = args.days
    if n < 260:
        ap.error("--days must be >= 260 (special cases use days up to 200)")
    rng = random.Random(args.seed)
    cal = make_calendar(n)
    (out / "calendars").mkdir(parents=True, exist_ok=True)
    (out / "instruments").mkdir(parents=True, exist_ok=True)
    (out / "calendars" / "day.txt").write_text("".join(f"{d:%Y-%m-%d}\n" for d in cal))

    first = {s: 0 for s in STOCKS}
    last = {s: n - 1 for s in STOCKS}
    first["SZ000538"] = 100
    last["SH600025"] = 199
    suspended = {s: set() for s in STOCKS}
    suspended["SH600000"] = {50, 51, 52, 160, 161, 162}
    suspended["SH600016"] = {10, 11, 12, 13, 14}
    suspended["SZ000001"] = {200}
    forced = {s: {} for s in STOCKS}
    forced["SH600010"] = {30: 0.1, 31: 0.1, 60: -0.1, 170: 0.1, 171: 0.1, 175: -0.1}
    spans = {s: [(first[s], last[s])] for s in STOCKS}
    spans["SZ000002"] = [(0, 119), (150, n - 1)]

    inst_lines = []
    for s in STOCKS:
        lo_i, hi_i = first[s], last[s]
        length = hi_i - lo_i + 1
        base_fac = round(rng.uniform(0.5, 3.0), 4)
        if s == "SH600009":
            fac = [1.0 if (lo_i + k) < 150 else 1.25 for k in range(length)]
        else:
            fac = [base_fac] * length
        susp = {d - lo_i for d in suspended[s]}
        frc = {d - lo_i: r for d, r in forced[s].items()}
        series = simulate(rng, length, p0=rng.uniform(5.0, 50.0), vol=rng.uniform(0.01, 0.03), factor=fac,
                          suspended=susp, forced=frc, base_volume=rng.uniform(2e5, 5e6))
        for f in FIELDS:
            write_bin(out / "features" / s.lower() / f"{f}.day.bin", lo_i, series[f])
        for a, b in spans[s]:
            inst_lines.append(f"{s}\t{cal[a]:%Y-%m-%d}\t{cal[b]:%Y-%m-%d}\n")

    # benchmark index
    idx = simulate(rng, n, p0=4000.0, vol=0.012, factor=[1.0] * n, suspended=set(), forced={}, base_volume=1e10)
    for f in FIELDS:
        write_bin(out / "features" / INDEX.lower() / f"{f}.day.bin", 0, idx[f])
    inst_lines.append(f"{INDEX}\t{cal[0]:%Y-%m-%d}\t{cal[-1]:%Y-%m-%d}\n")

    (out / "instruments" / "all.txt").write_text("".join(inst_lines))
    print(f"wrote {len(STOCKS)} stocks + {INDEX}, {n} days ({cal[0]} .. {cal[-1]}) to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
