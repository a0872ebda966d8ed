"""The ``qtrain`` command: argument parsing and error reporting only; the work lives in ``app.*``.

Heavy libraries are imported inside the command functions so ``qtrain --help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from app import __version__
from app.cli.pool import add_pool_commands
from app.cli.predict import add_inference_commands
from app.core.errors import ConfigError, QtrainError
from app.core.settings import SAMPLE_DAYS, SAMPLE_INSTRUMENTS, Settings, load_settings


def console() -> None:
    """The ``qtrain`` console script: :func:`main`, then exit without the interpreter's final garbage collection.

    That collection walks every object MLflow, SQLAlchemy and pandas left behind (~1 s here) only to free memory
    the exiting process gives back anyway; :func:`gc.freeze` exempts them. ``atexit`` handlers still run.
    """
    import gc
    import os

    try:
        status = main()
    except BrokenPipeError:  # the reader went away (`qtrain ... | head`): stop quietly, as coreutils do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error flushing stdout
        sys.exit(141)
    gc.freeze()
    sys.exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qtrain`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        from app.cli.run import run

        return run(argv[1:])
    if argv[:1] == ["qlib"]:
        from app.cli.qlib import main as qlib_main

        return qlib_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    debug = False
    try:
        settings = load_settings()
        debug = settings.debug
        status = args.func(args, settings)
    except QtrainError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return int(status or 0)  # a command returns a status only when it can fail without an error (data check)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qtrain", description="Train and evaluate quantitative alpha models (Qlib-compatible)."
    )
    parser.add_argument("--version", action="version", version=f"qtrain {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    commands.add_parser(
        "run", help="train one task (Hydra overrides, e.g. model=double_ensemble seed=3; -m for sweeps)", add_help=False
    )
    commands.add_parser("qlib", help="print (--run: run) a Qlib workflow YAML as qtrain run overrides", add_help=False)
    end = commands.add_parser("end", help="fit runs prepared by `qtrain run trainer=delayed trainer.end=false`")
    end.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="SCHEDULED (or FAILED, to retry) runs")
    end.set_defaults(func=_end)
    demo = commands.add_parser("demo", help="create the sample market on first use and summarise it")
    demo.set_defaults(func=_demo)

    ev = commands.add_parser("evaluate", help="IC analysis and TopkDropout backtest of any prediction file")
    ev.add_argument("--pred", type=Path, required=True, help="parquet with datetime, instrument, score")
    ev.add_argument("--data", type=Path, default=None, help="store directory (default: QTRAIN_DATA_DIR)")
    ev.add_argument("--market", default="all", help="market whose label the IC is measured against")
    ev.add_argument("--benchmark", default="SH000300", help="benchmark instrument, or 'none'")
    ev.add_argument("--topk", type=int, default=50)
    ev.add_argument("--n-drop", type=int, default=5)
    ev.add_argument("--hold-thresh", type=int, default=1)
    ev.add_argument("--account", type=float, default=1e8)
    ev.add_argument("--limit-threshold", default="0.095", help="a fraction, or 'none' (suspension only)")
    ev.add_argument("--open-cost", type=float, default=0.0005)
    ev.add_argument("--close-cost", type=float, default=0.0015)
    ev.add_argument("--min-cost", type=float, default=5.0)
    ev.add_argument("--long-short", action="store_true", help="also report the long-short return")
    ev.add_argument("--json", type=Path, default=None, help="write the metrics to this JSON file")
    ev.set_defaults(func=_evaluate)

    rep = commands.add_parser("report", help="runs of an MLflow experiment, and mean ± std per configuration")
    rep.add_argument("experiment", help="experiment name")
    rep.add_argument("--format", default="md", choices=["md", "csv", "json"])
    rep.set_defaults(func=_report)

    add_inference_commands(commands)
    add_pool_commands(commands)

    data = commands.add_parser("data", help="market data: import, synth, features, info, check")
    data_cmds = data.add_subparsers(title="data commands", metavar="COMMAND")

    imp = data_cmds.add_parser("import", help="import CSV/Parquet bars into a store in Qlib's layout")
    imp.add_argument("src", type=Path, help="directory of per-instrument files, or one table with a symbol column")
    imp.add_argument("--to", dest="dest", type=Path, required=True, help="store directory (created or extended)")
    imp.add_argument(
        "--columns",
        default="",
        help="source column names, e.g. date=trade_date,close=adj_close,symbol=ticker",
    )
    imp.add_argument("--market", default="all", help="market (instruments file) to add the symbols to")
    imp.add_argument(
        "--on-anomaly",
        default="error",
        choices=["error", "warn", "drop-bar"],
        help="bars with impossible values: stop (default), keep with a warning, or store as missing",
    )
    imp.set_defaults(func=_data_import)

    syn = data_cmds.add_parser("synth", help="write a deterministic synthetic market")
    syn.add_argument("--to", dest="dest", type=Path, required=True, help="store directory (replaced)")
    syn.add_argument("--instruments", type=int, default=SAMPLE_INSTRUMENTS)
    syn.add_argument("--days", type=int, default=SAMPLE_DAYS)
    syn.add_argument("--seed", type=int, default=0)
    syn.set_defaults(func=_data_synth)

    feats = data_cmds.add_parser("features", help="export a handler's features and label to parquet")
    feats.add_argument("--data", type=Path, default=None, help="store directory (default: QTRAIN_DATA_DIR)")
    feats.add_argument("--market", default="all", help="market (instruments file) to compute")
    feats.add_argument(
        "--handler", default="alpha158", help="a conf/dataset option: alpha158, alpha158_gru20, alpha360"
    )
    feats.add_argument("--start", default=None, help="first date (default: the calendar's first day)")
    feats.add_argument("--end", default=None, help="last date (default: the calendar's last day)")
    feats.add_argument(
        "--view",
        default="raw",
        choices=["raw", "infer", "learn"],
        help="raw features, or after the handler's infer / learn processors (fitted on --start..--end)",
    )
    feats.add_argument("--out", type=Path, required=True, help="output parquet file")
    feats.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    feats.set_defaults(func=_data_features)

    info = data_cmds.add_parser("info", help="describe a store: calendar, markets, fields")
    info.add_argument("--data", type=Path, default=None, help="store directory (default: QTRAIN_DATA_DIR)")
    info.set_defaults(func=_data_info)

    check = data_cmds.add_parser("check", help="verify a whole store: calendar, instruments, every feature file")
    check.add_argument(
        "--data-dir",
        "--data",
        dest="data",
        metavar="DIR",
        type=Path,
        default=None,
        help="store directory (default: QTRAIN_DATA_DIR)",
    )
    check.add_argument("--values", action="store_true", help="also read every value (NaN-only files are warned of)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=_data_check)
    parser.epilog = _nested_commands(commands)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keeps the epilog's lines
    return parser


def _nested_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> str:
    """The commands that have commands of their own, each spelled out (``qtrain data features``)."""
    lines = [
        f"  qtrain {name} {' | '.join(nested.choices)}"
        for name, sub in commands.choices.items()
        for nested in sub._actions
        if isinstance(nested, argparse._SubParsersAction)
    ]
    return "commands of commands (e.g. qtrain data features --help):\n" + "\n".join(lines)


def _columns(text: str) -> dict[str, str]:
    mapping = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        ours, sep, theirs = item.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise ConfigError(f"--columns item {item!r} is not FIELD=SOURCE_COLUMN (e.g. close=adj_close)")
        mapping[ours.strip()] = theirs.strip()
    return mapping


def _data_import(args: argparse.Namespace, settings: Settings) -> None:
    from app.data.importer import import_market

    report = import_market(args.src, args.dest, _columns(args.columns), args.on_anomaly, args.market)
    print(
        f"imported {report.bars} bars of {report.instruments} instruments from {report.files} file(s) into "
        f"{args.dest} ({report.new_dates} new trading days, {report.replaced_bars} bars replaced, "
        f"{len(report.anomalies)} anomalies, {report.dropped_bars} bars dropped)"
    )


def _data_synth(args: argparse.Namespace, settings: Settings) -> None:
    from app.data.synth import SynthSpec, write_synth_market

    started = time.perf_counter()
    write_synth_market(args.dest, SynthSpec(instruments=args.instruments, days=args.days, seed=args.seed))
    print(
        f"wrote a synthetic market of {args.instruments} instruments x {args.days} days (seed {args.seed}) "
        f"to {args.dest} in {time.perf_counter() - started:.1f}s"
    )


def _end(args: argparse.Namespace, settings: Settings) -> None:
    from app.config.compose import build_components
    from app.runtime import get_runtime
    from app.workflow.train import end_task_train

    manager, cache = get_runtime(settings).tracking(), get_runtime(settings).feature_cache
    failed = []
    for run_id in args.run_ids:
        try:
            result = end_task_train(run_id, manager, build_components, cache=cache)
        except Exception as exc:  # a refused run is untouched, a failed one is FAILED with its traceback; go on
            failed.append(f"{run_id}: {type(exc).__name__}: {exc}")
            continue
        metrics = ", ".join(f"{k} {result.metrics[k]:.4f}" for k in ("IC", "Rank IC") if k in result.metrics)
        print(f"run {run_id} finished{': ' + metrics if metrics else ''}")
    if failed:
        raise QtrainError(f"{len(failed)} of {len(args.run_ids)} runs failed: " + "; ".join(failed))


def _data_features(args: argparse.Namespace, settings: Settings) -> None:
    from app.config.compose import compose_dataset
    from app.data.store import QlibStore
    from app.features.export import write_parquet
    from app.runtime import get_runtime

    store = QlibStore(args.data or settings.data_dir)
    lo, hi = store.date_slice(args.start, args.end)
    start, end = str(store.calendar()[lo].date()), str(store.calendar()[hi - 1].date())
    spec = compose_dataset(args.handler, market=args.market, start=start, end=end)
    cache = None if args.no_cache else get_runtime(settings).feature_cache
    started = time.perf_counter()
    # The raw view needs no processors: do not build (and cache) the infer and learn views for it.
    frame = spec.handler.raw(store, cache) if args.view == "raw" else spec.handler.views(store, cache).get(args.view)
    report = write_parquet(frame.droplevel(0, axis=1), args.out)
    wide = ", ".join(report.float64_columns)
    print(
        f"wrote {report.rows} rows x {report.columns} columns ({args.handler}, {args.view} view, market {args.market}, "
        f"{start}..{end}) to {args.out} in {time.perf_counter() - started:.1f}s"
        + (f"; kept as float64 (not float32-exact): {wide}" if wide else "")
    )


def _evaluate(args: argparse.Namespace, settings: Settings) -> None:
    import json

    from app.data.store import QlibStore
    from app.evaluation.backtest import BacktestConfig
    from app.evaluation.predictions import label_for, read_predictions
    from app.evaluation.records import analyse_portfolio, analyse_signal

    store = QlibStore(args.data or settings.data_dir)
    pred = read_predictions(args.pred)
    config = BacktestConfig(
        topk=args.topk,
        n_drop=args.n_drop,
        hold_thresh=args.hold_thresh,
        account=args.account,
        limit_threshold=None
        if args.limit_threshold.lower() == "none"
        else _float(args.limit_threshold, "--limit-threshold"),
        open_cost=args.open_cost,
        close_cost=args.close_cost,
        min_cost=args.min_cost,
        benchmark=None if args.benchmark.lower() == "none" else args.benchmark,
    )
    signal = analyse_signal(pred, label_for(pred, store, args.market), long_short=args.long_short)
    portfolio = analyse_portfolio(pred, store, config)
    metrics = {**signal.metrics, **portfolio.metrics}
    width = max(map(len, metrics))
    for name, value in metrics.items():
        print(f"{name:<{width}}  {value: .6f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(metrics, indent=2) + "\n")


def _report(args: argparse.Namespace, settings: Settings) -> None:
    from app.core.credentials import mask_url
    from app.runtime import get_runtime
    from app.tracking.summary import markdown, report_document, run_table, summary_table

    manager = get_runtime(settings).tracking()
    if args.experiment not in manager.list_experiments():
        known = ", ".join(sorted(manager.list_experiments())) or "none"
        raise ConfigError(
            f"no experiment {args.experiment!r} at {mask_url(settings.tracking_uri)}; experiments: {known}"
        )
    rows = run_table(manager.search_records([args.experiment]))
    summary = summary_table(rows)
    if args.format == "json":
        import json

        print(json.dumps(report_document(rows, summary), indent=2, default=str))
    elif args.format == "csv":
        print(rows.to_csv(index=False), end="")
        print()
        print(summary.to_csv(index=False), end="")
    else:
        print(f"## {args.experiment}: {len(rows)} runs\n")
        print(markdown(rows))
        print("\n## mean ± std per configuration\n")
        print(markdown(summary))


def _float(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not a number (or 'none')") from None


def _data_info(args: argparse.Namespace, settings: Settings) -> None:
    from app.data.describe import describe_store

    print(describe_store(args.data or settings.data_dir))


def _data_check(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from app.data.check import check_store

    report = check_store(args.data or settings.data_dir, read_values=args.values)
    print(json.dumps(report.to_json(), indent=2) if args.json else "\n".join(report.lines()))
    return 1 if report.problems else 0


def _demo(args: argparse.Namespace, settings: Settings) -> None:
    from app.data.describe import describe_store, ensure_sample_market

    created = ensure_sample_market(settings.data_dir, SAMPLE_INSTRUMENTS, SAMPLE_DAYS)
    print(("created" if created else "reusing") + f" the sample market at {settings.data_dir}")
    print(describe_store(settings.data_dir))


if __name__ == "__main__":
    sys.exit(main())
