#!/usr/bin/env python
"""Qlib 0.9.7 portfolio analysis exactly as PortAnaRecord runs it (daily, TopkDropout).

Usage (inside .qlib-venv):
    python backtest.py DATA_DIR PRED.parquet OUT_DIR [--topk 50] [--n-drop 5]
        [--benchmark SH000300] [--account 1e8] [--limit-threshold 0.095]
        [--deal-price close] [--open-cost 0.0005] [--close-cost 0.0015]
        [--min-cost 5] [--start YYYY-MM-DD] [--end YYYY-MM-DD] [...]

PRED.parquet: index (datetime, instrument), column "score" (like PortAnaRecord's pred.pkl).
Defaults reproduce PortAnaRecord's default config (qlib/workflow/record_temp.py):
  strategy  TopkDropoutStrategy(signal=pred, topk=50, n_drop=5)
  executor  SimulatorExecutor(time_per_step="day", generate_portfolio_metrics=True)
  backtest  start = first prediction date, end = get_date_by_shift(last prediction date, 1),
            account 1e8, benchmark SH000300,
            exchange_kwargs limit_threshold 0.095, deal_price close, open_cost 0.0005,
            close_cost 0.0015, min_cost 5 (trade_unit 100 from region cn)
  analysis  risk_analysis(return - bench) and risk_analysis(return - bench - cost), freq "1day"

Writes:
  OUT_DIR/report.parquet     Qlib's daily report (index datetime): account, return, total_turnover,
                             turnover, total_cost, cost, value, cash, bench
  OUT_DIR/risk.json          {"excess_return_without_cost.mean": ..., ..."excess_return_with_cost.max_drawdown": ...}
                             (mean, std, annualized_return, information_ratio, max_drawdown)
  OUT_DIR/positions.parquet  end-of-day holdings (index datetime, instrument): amount, price, weight, count_day
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from _common import init_qlib


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir")
    ap.add_argument("pred")
    ap.add_argument("out_dir")
    ap.add_argument("--topk", type=int, default=50)
    ap.add_argument("--n-drop", type=int, default=5)
    ap.add_argument("--benchmark", default="SH000300")
    ap.add_argument("--account", type=float, default=1e8)
    ap.add_argument("--limit-threshold", type=float, default=0.095)
    ap.add_argument("--deal-price", default="close")
    ap.add_argument("--open-cost", type=float, default=0.0005)
    ap.add_argument("--close-cost", type=float, default=0.0015)
    ap.add_argument("--min-cost", type=float, default=5.0)
    ap.add_argument("--trade-unit", type=float, default=None, help="default: region cn's 100")
    ap.add_argument("--risk-degree", type=float, default=0.95)
    ap.add_argument("--hold-thresh", type=int, default=1)
    ap.add_argument("--method-sell", default="bottom")
    ap.add_argument("--method-buy", default="top")
    ap.add_argument("--only-tradable", action="store_true")
    ap.add_argument("--no-forbid-all-trade-at-limit", dest="forbid_all_trade_at_limit", action="store_false")
    ap.add_argument("--start", default=None, help="default: first prediction date")
    ap.add_argument("--end", default=None, help="default: trading day after the last prediction date")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    init_qlib(args.data_dir)

    import warnings

    import pandas as pd
    from qlib.backtest import backtest as normal_backtest

    # Qlib's trade indicator (fulfill rate) takes nanmean of an empty array on days without
    # orders; harmless and very noisy.
    warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
    from qlib.contrib.evaluate import risk_analysis
    from qlib.utils import flatten_dict, get_date_by_shift  # the helpers PortAnaRecord uses
    from qlib.utils.time import Freq

    pred = pd.read_parquet(args.pred)
    if list(pred.index.names) != ["datetime", "instrument"]:
        raise SystemExit(f"error: pred index must be (datetime, instrument), got {pred.index.names}")
    if "score" not in pred.columns:
        raise SystemExit(f"error: pred needs a 'score' column, got {list(pred.columns)}")
    pred = pred[["score"]].copy()
    pred.index = pred.index.set_levels(pd.to_datetime(pred.index.levels[0]), level="datetime")
    pred = pred.sort_index()

    strategy_config = {
        "class": "TopkDropoutStrategy",
        "module_path": "qlib.contrib.strategy",
        "kwargs": {
            "signal": pred,
            "topk": args.topk,
            "n_drop": args.n_drop,
            "risk_degree": args.risk_degree,
            "hold_thresh": args.hold_thresh,
            "method_sell": args.method_sell,
            "method_buy": args.method_buy,
            "only_tradable": args.only_tradable,
            "forbid_all_trade_at_limit": args.forbid_all_trade_at_limit,
        },
    }
    executor_config = {
        "class": "SimulatorExecutor",
        "module_path": "qlib.backtest.executor",
        "kwargs": {"time_per_step": "day", "generate_portfolio_metrics": True},
    }
    exchange_kwargs = {
        "limit_threshold": args.limit_threshold,
        "deal_price": args.deal_price,
        "open_cost": args.open_cost,
        "close_cost": args.close_cost,
        "min_cost": args.min_cost,
    }
    if args.trade_unit is not None:
        exchange_kwargs["trade_unit"] = args.trade_unit
    dt_values = pred.index.get_level_values("datetime")
    backtest_config = {
        "start_time": pd.Timestamp(args.start) if args.start else dt_values.min(),
        "end_time": pd.Timestamp(args.end) if args.end else get_date_by_shift(dt_values.max(), 1),
        "account": args.account,
        "benchmark": args.benchmark,
        "exchange_kwargs": exchange_kwargs,
    }

    portfolio_metric_dict, _indicator_dict = normal_backtest(
        executor=executor_config, strategy=strategy_config, **backtest_config
    )
    freq = "{0}{1}".format(*Freq.parse("day"))  # "1day", as PortAnaRecord's risk_analysis_freq
    report_normal, positions_normal = portfolio_metric_dict[freq]

    analysis = {
        "excess_return_without_cost": risk_analysis(report_normal["return"] - report_normal["bench"], freq=freq),
        "excess_return_with_cost": risk_analysis(
            report_normal["return"] - report_normal["bench"] - report_normal["cost"], freq=freq
        ),
    }
    analysis_df = pd.concat(analysis)
    risk = flatten_dict(analysis_df["risk"].unstack().T.to_dict())  # same keys PortAnaRecord logs
    risk = {k: (None if (isinstance(v, float) and math.isnan(v)) else float(v)) for k, v in risk.items()}

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report_normal = report_normal.copy()
    report_normal.index.name = "datetime"
    report_normal.to_parquet(out / "report.parquet")
    (out / "risk.json").write_text(json.dumps(risk, indent=2, sort_keys=True) + "\n")

    rows = []
    for day, pos in positions_normal.items():
        for inst, info in pos.position.items():
            if isinstance(info, dict):
                rows.append({"datetime": pd.Timestamp(day), "instrument": inst,
                             **{k: info.get(k) for k in ("amount", "price", "weight", "count_day")}})
    pos_df = pd.DataFrame(rows, columns=["datetime", "instrument", "amount", "price", "weight", "count_day"])
    pos_df = pos_df.set_index(["datetime", "instrument"]).sort_index()
    pos_df.to_parquet(out / "positions.parquet")

    print(f"backtest: {len(report_normal)} days {report_normal.index.min().date()}..{report_normal.index.max().date()}"
          f" -> {out} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
