"""Check a store's files: the cheap check of the files a job will read, and the whole-store report of
``qtrain data check``.

Both judge a feature file by its size and its 4-byte start index only (:func:`app.data.binfile.bin_problem`),
so checking every file of a store costs a stat and a 4-byte read each.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from app.core.errors import StoreFormatError
from app.data.binfile import bin_fix, bin_problem, read_bin_header
from app.data.instruments import Membership, Span, read_instruments
from app.data.store import QlibStore, read_calendar

Level = Literal["problem", "warning"]


def check_feature_files(store: QlibStore, files: Iterable[tuple[str, str]]) -> None:
    """Refuse the feature files ``(symbol, field)`` of ``files`` that are cut short or do not fit the calendar.

    An absent file is fine (Qlib reads it as an empty series). Only sizes and start indexes are read.

    Raises:
        StoreFormatError: a file is empty, not a whole number of float32 values, starts outside the calendar
            or holds more values than the calendar has from its start; the first such file is named.
    """
    days = len(store.calendar())
    features = os.path.join(store.root, "features")
    broken: list[tuple[Path, str]] = []
    for symbol, name in sorted({(s.lower(), f.lower()) for s, f in files}):
        # QlibStore.feature_path's layout, joined as strings: Path objects would double the cost
        path = os.path.join(features, symbol, f"{name}.{store.freq}.bin")
        try:
            size, start = read_bin_header(path)
        except FileNotFoundError:
            continue
        problem = bin_problem(size, start, days)
        if problem is not None:
            broken.append((Path(path), problem))
    if broken:
        first, problem = broken[0]
        try:
            every = store.instruments("all") if "all" in store.markets() else {}
        except StoreFormatError:  # the broken file is the news; all.txt only adds the length it should have
            every = {}
        hint = expected_length(store.calendar(), first.parent.name.upper(), every.get(first.parent.name.upper()))
        more = (
            f" {len(broken) - 1} more file(s) are broken too; `qtrain data check --data-dir {store.root}` lists them."
            if len(broken) > 1
            else ""
        )
        raise StoreFormatError(f"{first}: {problem}{hint}. {bin_fix(first)}{more}")


def expected_length(cal: pd.DatetimeIndex, symbol: str, spans: Sequence[Span] | None) -> str:
    """``"; instruments/all.txt lists SYMBOL over A .. B: a whole file of that is N bytes"`` (or "" unlisted):
    the length Qlib's dump_bin and qtrain's writers give a file of an instrument listed so in all.txt."""
    if not spans:
        return ""
    lo, hi = _positions(cal, spans)
    return (
        f"; instruments/all.txt lists {symbol} over {cal[lo].date()} .. {cal[hi].date()}: a whole file of that is "
        f"{4 + 4 * (hi - lo + 1)} bytes (start index {lo}, {hi - lo + 1} values)"
    )


def _positions(cal: pd.DatetimeIndex, spans: Sequence[Span]) -> tuple[int, int]:
    """First and last calendar positions covered by ``spans``."""
    lo = int(cal.searchsorted(min(a for a, _ in spans), side="left"))
    hi = int(cal.searchsorted(max(b for _, b in spans), side="right")) - 1
    return lo, hi


@dataclass(frozen=True)
class Finding:
    """One problem (the store cannot be used as it is) or warning (it can, but something looks wrong)."""

    level: Level
    path: Path
    message: str

    def line(self) -> str:
        return f"{self.level:<8} {self.path}: {self.message}"


@dataclass
class StoreReport:
    """What :func:`check_store` looked at, and what it found."""

    root: Path
    calendar: pd.DatetimeIndex | None = None
    markets: list[str] = field(default_factory=list)
    instruments: int = 0
    folders: int = 0
    files: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "problem"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    def add(self, level: Level, path: Path, message: str) -> None:
        self.findings.append(Finding(level, path, message))

    def lines(self) -> list[str]:
        """The report: what was checked, one line per finding, and a final verdict."""
        cal = self.calendar
        days = f"{len(cal)} days ({cal[0].date()} .. {cal[-1].date()})" if cal is not None else "unusable"
        head = (
            f"checked {self.root}: calendar {days}, {len(self.markets)} instrument file(s) "
            f"({', '.join(self.markets) or 'none'}) listing {self.instruments} instruments, "
            f"{self.files} feature files in {self.folders} folders"
        )
        problems, warnings = len(self.problems), len(self.warnings)
        also = f", {warnings} warning(s)" if warnings else ""
        if not problems:
            verdict = f"clean: no problems{also}"
        else:
            verdict = (
                f"{problems} problem(s){also} found. Fix each file named: re-import its instrument "
                f"(`qtrain data import SRC --to {self.root}`, or Qlib's dump_bin), or remove the instrument from "
                "instruments/*.txt and delete its features/<symbol>/ folder; a broken calendar means re-creating "
                "the store. Then run `qtrain data check` again."
            )
        return [head, *(f.line() for f in self.findings), verdict]

    def to_json(self) -> dict[str, object]:
        cal = self.calendar
        return {
            "store": str(self.root),
            "clean": not self.problems,
            "calendar": None
            if cal is None
            else {"days": len(cal), "first": str(cal[0].date()), "last": str(cal[-1].date())},
            "markets": self.markets,
            "instruments": self.instruments,
            "folders": self.folders,
            "files": self.files,
            "problems": [{"path": str(f.path), "message": f.message} for f in self.problems],
            "warnings": [{"path": str(f.path), "message": f.message} for f in self.warnings],
        }


def check_store(root: Path | str, *, freq: str = "day", read_values: bool = False) -> StoreReport:
    """Check a whole store: the calendar (parseable, strictly increasing), every instruments file (parseable,
    spans inside the calendar), and every feature file (size and start index; with ``read_values``, also the
    values: a file with no number in it is a warning).

    Raises:
        StoreFormatError: ``root`` is not a directory, cannot be listed, or holds none of calendars/,
            instruments/, features/.
    """
    root = Path(root).expanduser()
    parts = ("calendars", "instruments", "features")
    if not root.is_dir():
        raise StoreFormatError(
            f"{root}: no such store directory. Pass the store with --data-dir DIR (or set QTRAIN_DATA_DIR); "
            "create one with `qtrain data synth --to DIR` or `qtrain data import SRC --to DIR`."
        )
    try:
        present = [p for p in parts if p in os.listdir(root)]
    except OSError as exc:
        raise StoreFormatError(
            f"{root}: cannot read the store directory ({exc.strerror}); check its permissions."
        ) from None
    if not present:
        raise StoreFormatError(
            f"{root} is not a market store in Qlib's layout: it has none of {', '.join(p + '/' for p in parts)}. "
            "Pass the store's directory with --data-dir DIR."
        )
    report = StoreReport(root)
    report.calendar = _check_calendar(report, root / "calendars" / f"{freq}.txt")
    markets = _check_instruments(report, root / "instruments")
    _check_features(report, root / "features", f".{freq}.bin", markets, read_values)
    return report


def _check_calendar(report: StoreReport, path: Path) -> pd.DatetimeIndex | None:
    try:
        return read_calendar(path)
    except StoreFormatError as exc:
        report.add("problem", path, _without_path(str(exc), path))
    except (OSError, UnicodeDecodeError) as exc:
        report.add("problem", path, f"unreadable calendar ({exc}). Re-create the store.")
    return None


def _check_instruments(report: StoreReport, folder: Path) -> dict[str, Membership]:
    """Every instruments file, checked; returns the markets that parse, by name."""
    if not folder.is_dir():
        report.add("problem", folder, "no instruments/ folder: the store has no market. Re-create the store.")
        return {}
    markets: dict[str, Membership] = {}
    cal = report.calendar
    for path in sorted(folder.glob("*.txt")):
        report.markets.append(path.stem)
        try:
            markets[path.stem] = membership = read_instruments(path)
        except StoreFormatError as exc:
            report.add("problem", path, _without_path(str(exc), path))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            report.add("problem", path, f"unreadable instruments file ({exc}).")
            continue
        if cal is None:
            continue
        for symbol, spans in membership.items():
            for start, end in spans:
                if start < cal[0] or end > cal[-1]:
                    report.add(
                        "problem",
                        path,
                        f"span of {symbol} {start.date()} .. {end.date()} runs outside the calendar "
                        f"({cal[0].date()} .. {cal[-1].date()}): the calendar or this file is stale. Re-import "
                        "the market, or clip the span to the calendar.",
                    )
    if not report.markets:
        report.add("problem", folder, "no instruments file (<market>.txt): the store has no market.")
    report.instruments = len(set().union(*markets.values()))
    return markets


def _check_features(
    report: StoreReport, folder: Path, suffix: str, markets: dict[str, Membership], read_values: bool
) -> None:
    if not folder.is_dir():
        report.add("problem", folder, "no features/ folder: the store holds no data. Re-create the store.")
        return
    cal = report.calendar
    every = markets.get("all", {})
    stored: set[str] = set()
    for symbol in _listing(report, folder, dirs=True):
        report.folders += 1
        stored.add(symbol.upper())
        days: dict[Path, tuple[int, int]] = {}
        for path in (folder / symbol / name for name in _listing(report, folder / symbol, suffix=suffix)):
            report.files += 1
            try:
                size, start = read_bin_header(path)
            except OSError as exc:
                report.add("problem", path, f"unreadable feature file ({exc.strerror}).")
                continue
            # Without a usable calendar only the size can be judged.
            problem = bin_problem(size, start if cal is not None else None, len(cal) if cal is not None else 0)
            if problem is not None:
                hint = "" if cal is None else expected_length(cal, symbol.upper(), every.get(symbol.upper()))
                report.add("problem", path, problem + hint)
            elif size == 4:
                report.add("warning", path, "a start index and no values: the field holds no data.")
            elif cal is not None and start is not None:
                days[path] = (int(start), int(start) + size // 4 - 2)
                if read_values:
                    _check_values(report, path)
        if cal is not None:
            _check_days(report, cal, symbol.upper(), days, every.get(symbol.upper()))
    for symbol in sorted(set().union(*markets.values()) - stored):
        report.add(
            "warning",
            folder / symbol.lower(),
            f"{symbol} is listed in instruments/ but has no feature folder: all its fields read as NaN.",
        )


def _check_days(
    report: StoreReport,
    cal: pd.DatetimeIndex,
    symbol: str,
    days: dict[Path, tuple[int, int]],
    spans: list[Span] | None,
) -> None:
    """Warn on a file whose first..last day differs from the instrument's span in ``instruments/all.txt`` (or,
    for an instrument not listed there, from most of its other fields).

    Qlib's dump_bin and qtrain's writers store every field of an instrument from its first to its last bar and
    list that span in all.txt, so a file that differs was most likely cut short to a whole number of values
    (which the size rules cannot see) or written by another tool. Only a warning: the store still reads, as
    Qlib reads it (see :func:`app.data.binfile.bin_problem` for why fewer values are not refused).
    """
    if spans:
        expected, source = _positions(cal, spans), "its span in instruments/all.txt"
    elif len(days) >= 2:
        expected = Counter(days.values()).most_common(1)[0][0]
        like = [p.name for p, d in days.items() if d == expected]
        source = f"{len(like)} other field(s) of {symbol} ({', '.join(like[:3])}{', ...' if len(like) > 3 else ''})"
    else:
        return

    def span(first: int, last: int) -> str:
        return f"{cal[first].date()} .. {cal[last].date()} ({last - first + 1} days)"

    for path, held in days.items():
        if held != expected:
            report.add(
                "warning",
                path,
                f"holds {span(*held)}, but {source} runs {span(*expected)}: cut short, or written by another "
                f"tool? Re-import {symbol} if this is not intended.",
            )


def _check_values(report: StoreReport, path: Path) -> None:
    values = np.fromfile(path, dtype="<f4")[1:]
    if values.size and not np.isfinite(values).any():
        report.add("warning", path, f"all {values.size} values are NaN or infinite: the field holds no data.")


def _listing(report: StoreReport, folder: Path, *, dirs: bool = False, suffix: str = "") -> list[str]:
    """Sorted names of the sub-folders (``dirs``) or of the files ending in ``suffix`` in ``folder``; a folder
    that cannot be listed is a problem."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if (e.is_dir() if dirs else e.is_file() and e.name.endswith(suffix)))
    except OSError as exc:
        report.add("problem", folder, f"cannot list the folder ({exc.strerror}); check its permissions.")
        return []


def _without_path(message: str, path: Path) -> str:
    return message.removeprefix(str(path)).lstrip(": ")
