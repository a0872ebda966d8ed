"""``qtrain data import``: source bars → a Qlib-layout store, validated, merged, swapped in atomically."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd

from app.core.errors import ConfigError, ImportValidationError
from app.data.instruments import Span
from app.data.sources import SourceBars, read_sources
from app.data.store import QlibStore
from app.data.writer import staged_store, write_store

log = logging.getLogger(__name__)

PRICES = ("open", "high", "low", "close")


class OnAnomaly(StrEnum):
    """What to do with a bar whose values are implausible but structurally fine."""

    ERROR = "error"
    WARN = "warn"
    DROP_BAR = "drop-bar"

    @classmethod
    def parse(cls, value: str) -> OnAnomaly:
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise ConfigError(f"--on-anomaly {value!r} is not one of: {allowed}") from None


@dataclass
class ImportReport:
    """What an import did."""

    files: int = 0
    instruments: int = 0
    bars: int = 0
    new_dates: int = 0
    replaced_bars: int = 0
    anomalies: list[str] = field(default_factory=list)
    dropped_bars: int = 0


def import_market(
    src: Path,
    dest: Path,
    columns: Mapping[str, str] | None = None,
    on_anomaly: OnAnomaly | str = OnAnomaly.ERROR,
    market: str = "all",
) -> ImportReport:
    """Import ``src`` into the store ``dest`` (created, or extended with new instruments/dates).

    Bars for dates already stored are replaced. A missing ``change`` is derived as close over the previous
    stored close minus one; a missing ``factor`` is stored as 1.0 (prices taken as unadjusted share prices).
    Nothing in ``dest`` changes unless the whole import succeeds.

    Raises:
        ImportValidationError: structural problems, or value anomalies with ``on_anomaly="error"``.
    """
    policy = on_anomaly if isinstance(on_anomaly, OnAnomaly) else OnAnomaly.parse(on_anomaly)
    sources = read_sources(src, columns)
    report = ImportReport(files=len({s.path for s in sources}), instruments=len({s.symbol for s in sources}))
    anomalies = [a for s in sources for a in _anomalies(s)]
    report.anomalies = [text for text, _, _ in anomalies]
    if anomalies and policy is OnAnomaly.ERROR:
        raise ImportValidationError(
            f"import of {src} failed: {len(anomalies)} value anomal{'y' if len(anomalies) == 1 else 'ies'} "
            f"in {len({id(s) for _, s, _ in anomalies})} instrument file(s); nothing was written",
            report.anomalies,
            "Fix those rows, or re-run with --on-anomaly warn (keep them as they are) or "
            "--on-anomaly drop-bar (store those bars as missing).",
        )
    for text in report.anomalies:
        log.warning("%s", text)
    if policy is OnAnomaly.DROP_BAR:
        for _, source, row in anomalies:
            source.frame.iloc[row] = np.nan
        report.dropped_bars = len({(id(s), r) for _, s, r in anomalies})

    existing = _existing_store(dest)
    bars = _existing_bars(existing) if existing is not None else {}
    old_calendar = existing.calendar() if existing is not None else pd.DatetimeIndex([])
    supplied: dict[str, set[str]] = {}
    for source in sources:
        new = source.frame
        report.bars += len(new)
        supplied[source.symbol] = set(new.columns)
        old = bars.get(source.symbol)
        if old is None:
            bars[source.symbol] = new
            continue
        report.replaced_bars += int(old.index.isin(new.index).sum())
        bars[source.symbol] = pd.concat([old[~old.index.isin(new.index)], new]).sort_index()
    for symbol, fields in supplied.items():
        bars[symbol] = _complete(bars[symbol], fields)

    calendar = old_calendar.union(pd.DatetimeIndex(sorted(set().union(*(b.index for b in bars.values())))))
    report.new_dates = len(calendar) - len(old_calendar)
    markets = {name: existing.instruments(name) for name in existing.markets()} if existing else {}
    for name in dict.fromkeys(("all", market)):  # Qlib's all.txt lists every instrument
        spans: dict[str, list[Span]] = dict(markets.get(name, {}))
        for symbol in supplied:
            valid = bars[symbol].dropna(how="all")
            if len(valid):
                spans[symbol] = [(valid.index[0], valid.index[-1])]
        markets[name] = spans

    with staged_store(dest) as staging:
        if existing is not None:
            shutil.copytree(dest, staging, dirs_exist_ok=True)
            shutil.rmtree(staging / "features", ignore_errors=True)
        write_store(staging, {s: b.dropna(how="all") for s, b in bars.items()}, markets, calendar)
    return report


def _existing_store(dest: Path) -> QlibStore | None:
    if (dest / "calendars" / "day.txt").is_file():
        return QlibStore(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ImportValidationError(
            f"--to {dest} exists but is not a market store (no calendars/day.txt)",
            [],
            "Import into an empty or new directory, or into an existing qtrain/Qlib store.",
        )
    return None


def _anomalies(source: SourceBars) -> list[tuple[str, SourceBars, int]]:
    frame = source.frame
    checks: list[tuple[np.ndarray, str]] = []
    for name in PRICES:
        checks.append((frame[name].to_numpy() <= 0, f"non-positive {name}"))
    o, h, lo, c = (frame[n].to_numpy() for n in PRICES)
    checks.append((h < lo, "high < low"))
    checks.append(((o < lo) | (o > h), "open outside [low, high]"))
    checks.append(((c < lo) | (c > h), "close outside [low, high]"))
    checks.append((frame["volume"].to_numpy() < 0, "negative volume"))
    found: list[tuple[str, SourceBars, int]] = []
    for row in np.nonzero(np.logical_or.reduce([mask for mask, _ in checks]))[0].tolist():
        what = "; ".join(label for mask, label in checks if mask[row])
        values = ", ".join(f"{n}={frame[n].iloc[row]:g}" for n in PRICES)
        found.append(
            (
                f"{source.path} {source.locations[row]} ({frame.index[row].date()}, {source.symbol}): "
                f"{what} ({values})",
                source,
                int(row),
            )
        )
    return found


def _existing_bars(store: QlibStore) -> dict[str, pd.DataFrame]:
    bars = {}
    features = store.root / "features"
    for folder in sorted(p for p in features.iterdir() if p.is_dir()):
        symbol = folder.name.upper()
        series = [store.read_series(symbol, f) for f in store.fields(symbol)]
        if series:
            bars[symbol] = pd.concat(series, axis=1).astype(np.float64)
    return bars


def _complete(frame: pd.DataFrame, supplied: set[str]) -> pd.DataFrame:
    """Fill derived fields (change, factor) where the source did not give them."""
    frame = frame.copy()
    has_bar = frame["close"].notna()
    if "change" not in supplied:
        close = frame["close"]
        derived = close / close.ffill().shift(1) - 1
        old = frame["change"] if "change" in frame else pd.Series(np.nan, index=frame.index)
        frame["change"] = old.where(old.notna(), derived).where(has_bar)
    if "factor" not in supplied:
        old = frame["factor"] if "factor" in frame else pd.Series(np.nan, index=frame.index)
        frame["factor"] = old.where(old.notna(), 1.0).where(has_bar)
    return frame
