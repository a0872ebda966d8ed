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
