"""Human-readable summaries of a store, and the sample market the quick start uses."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from app.data.store import QlibStore

DEMO_FIELDS = ("open", "high", "low", "close", "volume", "vwap")


def ensure_sample_market(dest: Path, instruments: int, days: int, seed: int = 0) -> bool:
    """Write the synthetic sample market to ``dest`` unless a store is already there; True if written."""
    if (dest / "calendars" / "day.txt").is_file():
        return False
    from app.data.synth import SynthSpec, write_synth_market

    write_synth_market(dest, SynthSpec(instruments=instruments, days=days, seed=seed))
    return True


def describe_store(root: Path) -> str:
    """Calendar, markets (with membership spans) and a load of the OHLCV fields of market ``all``.

    Raises:
        StoreFormatError: ``root`` is not a readable store.
    """
    store = QlibStore(root)
    cal = store.calendar()
    lines = [f"store {store.root}", f"  calendar   {cal[0].date()} .. {cal[-1].date()} ({len(cal)} trading days)"]
    for market in store.markets():
        members = store.instruments(market)
        multi = sum(len(spans) > 1 for spans in members.values())
        lines.append(
            f"  market     {market}: {len(members)} instruments" + (f", {multi} with several spans" if multi else "")
        )
    if "all" not in store.markets():
        return "\n".join(lines)
    symbols = sorted(store.instruments("all"))
    lines.append(f"  fields     {', '.join(store.fields(symbols[0]))}")
    started = time.perf_counter()
    panel = store.load(DEMO_FIELDS, market="all")
    elapsed = time.perf_counter() - started
    stored = panel.stored()
    close = panel.values["close"]
    suspended = int((stored & np.isnan(close)).sum())
    late = int((panel.first > 0).sum())
    early = int((panel.last < len(panel.dates) - 1).sum())
    lines += [
        f"  bars       {int(stored.sum())} stored rows, {suspended} suspended (NaN) days",
        f"  lifecycle  {late} listed after the first day, {early} delisted before the last day",
        f"  load       {len(DEMO_FIELDS)} fields x {len(panel.instruments)} instruments x {len(panel.dates)} days "
        f"in {elapsed * 1000:.0f} ms",
    ]
    return "\n".join(lines)
