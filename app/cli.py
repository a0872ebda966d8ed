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
from app.errors import ConfigError, QtrainError
from app.settings import Settings, load_settings

SAMPLE_INSTRUMENTS = 100
SAMPLE_DAYS = 1500


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qtrain`` console script; returns the exit status."""
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
        args.func(args, settings)
    except QtrainError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qtrain", description="Train and evaluate quantitative alpha models (Qlib-compatible)."
    )
    parser.add_argument("--version", action="version", version=f"qtrain {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    demo = commands.add_parser("demo", help="create the sample market on first use and summarise it")
    demo.set_defaults(func=_demo)

    data = commands.add_parser("data", help="market data: import, synth, info")
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
    return parser


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


def _data_features(args: argparse.Namespace, settings: Settings) -> None:
    from app.config import compose_dataset
    from app.data.store import QlibStore
    from app.dataset.cache import FeatureCache

    store = QlibStore(args.data or settings.data_dir)
    lo, hi = store.date_slice(args.start, args.end)
    start, end = str(store.calendar()[lo].date()), str(store.calendar()[hi - 1].date())
    spec = compose_dataset(args.handler, market=args.market, start=start, end=end)
    cache = None if args.no_cache else FeatureCache(settings.cache_dir / "features")
    started = time.perf_counter()
    views = spec.handler.views(store, cache)
    frame = views.get(args.view)
    flat = frame.droplevel(0, axis=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    flat.to_parquet(args.out)
    print(
        f"wrote {len(flat)} rows x {flat.shape[1]} columns ({args.handler}, {args.view} view, market {args.market}, "
        f"{start}..{end}) to {args.out} in {time.perf_counter() - started:.1f}s"
    )


def _data_info(args: argparse.Namespace, settings: Settings) -> None:
    from app.data.describe import describe_store

    print(describe_store(args.data or settings.data_dir))


def _demo(args: argparse.Namespace, settings: Settings) -> None:
    from app.data.describe import describe_store, ensure_sample_market

    created = ensure_sample_market(settings.data_dir, SAMPLE_INSTRUMENTS, SAMPLE_DAYS)
    print(("created" if created else "reusing") + f" the sample market at {settings.data_dir}")
    print(describe_store(settings.data_dir))


if __name__ == "__main__":
    sys.exit(main())
