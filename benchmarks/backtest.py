"""Time of the daily TopkDropout backtest, 300 instruments x 750 days, split into market-data load and loop.

Usage: python benchmarks/backtest.py [--instruments 300] [--days 750] [--topk 50] [--n-drop 5] [--repeat 5]
The synthetic store is written once under benchmarks/results/ and reused; predictions are random (seeded).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from app.data.store import QlibStore
from app.data.synth import SynthSpec, write_synth_market
from app.evaluation import backtest as bt
from app.evaluation.exchange import load_quote
from app.evaluation.risk import portfolio_metrics
from app.evaluation.signal import signal_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=300)
    parser.add_argument("--days", type=int, default=750)
    parser.add_argument("--topk", type=int, default=50)
    parser.add_argument("--n-drop", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    root = Path(__file__).parent / "results" / f"synth_{args.instruments}x{args.days}"
    if not (root / "calendars" / "day.txt").is_file():
        started = time.perf_counter()
        write_synth_market(root, SynthSpec(instruments=args.instruments, days=args.days + 2, seed=0))
        print(f"wrote {root} in {time.perf_counter() - started:.2f}s")
    store = QlibStore(root)
    frame = store.load_frame(["close"], market="synth")
    rng = np.random.default_rng(0)
    pred = pd.Series(rng.standard_normal(len(frame)), index=frame.index, name="score")
    label = pd.Series(rng.standard_normal(len(frame)), index=frame.index, name="label")
    config = bt.BacktestConfig(topk=args.topk, n_drop=args.n_drop)

    totals, loads, loops = [], [], []
    for _ in range(args.repeat):
        started = time.perf_counter()
        result = bt.run_backtest(pred, QlibStore(root), config)
        totals.append(time.perf_counter() - started)

        fresh = QlibStore(root)
        started = time.perf_counter()
        scores = bt._scores(pred)
        steps = bt._steps(scores, fresh.calendar(), config)
        symbols = scores.index.get_level_values("instrument").unique().tolist()
        quote = load_quote(fresh, steps, symbols, deal_price="close", limit_threshold=0.095, benchmark=config.benchmark)
        loads.append(time.perf_counter() - started)
        started = time.perf_counter()
        score, present = bt._signal_matrix(scores, fresh.calendar(), quote, steps[0])
        bt._simulate(quote, score, present, config)
        loops.append(time.perf_counter() - started)

    started = time.perf_counter()
    metrics = portfolio_metrics(result.report, result.indicators)
    risk_time = time.perf_counter() - started
    started = time.perf_counter()
    signal_metrics(pred, label, long_short=True)
    signal_time = time.perf_counter() - started

    days = len(result.report)
    print(f"store        {root} ({args.instruments} instruments, {days} backtest days, {len(pred)} predictions)")
    total, fastest = statistics.median(totals) * 1000, min(totals) * 1000
    print(f"backtest     {total:8.1f} ms median of {args.repeat} (min {fastest:.1f})")
    print(f"  data load  {statistics.median(loads) * 1000:8.1f} ms (one store load of the universe + flags + bench)")
    print(f"  loop       {statistics.median(loops) * 1000:8.1f} ms (signal matrix + daily loop, topk={args.topk})")
    print(f"risk         {risk_time * 1000:8.1f} ms")
    print(f"signal       {signal_time * 1000:8.1f} ms (IC, Rank IC, long-short over {len(pred)} rows)")
    print(f"excess return with cost: IR {metrics['1day.excess_return_with_cost.information_ratio']:.3f}")


if __name__ == "__main__":
    main()
