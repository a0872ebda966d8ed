"""Read and structurally validate source bars (CSV, CSV.gz, Parquet) for import.

A source is a directory of per-instrument files (symbol = file-name stem) or one long table with a
symbol column. Structural problems are collected across every file so one run reports them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from app.core.errors import ImportValidationError

REQUIRED = ("date", "open", "high", "low", "close", "volume")
OPTIONAL = ("vwap", "factor", "change", "amount")
SUFFIXES = (".csv", ".csv.gz", ".parquet")


@dataclass
class SourceBars:
    """Bars of one instrument read from one file: numeric fields indexed by date, plus row locations."""

    symbol: str
    path: Path
    frame: pd.DataFrame  # index: date; columns: fields present (float64)
    locations: list[str] = field(default_factory=list)  # "line 7" / "row 6", aligned with frame rows


def read_sources(src: Path, columns: Mapping[str, str] | None = None) -> list[SourceBars]:
    """Read every source file under ``src`` (or the single table ``src``).

    ``columns`` maps qtrain's names (date, open, ..., symbol) to the source's column names.

    Raises:
        ImportValidationError: missing files or columns, unreadable files, bad dates or numbers,
            duplicate or unsorted dates. Every problem found is listed.
    """
    rename = {source: ours for ours, source in (columns or {}).items()}
    unknown = sorted(set(columns or {}) - set(REQUIRED) - set(OPTIONAL) - {"symbol"})
    if unknown:
        raise ImportValidationError(
            f"--columns names unknown field(s): {', '.join(unknown)}",
            [],
            f"Map only these fields: {', '.join((*REQUIRED, *OPTIONAL, 'symbol'))} (e.g. --columns close=Close).",
        )
    if not src.exists():
        raise ImportValidationError(
            f"import source {src} does not exist", [], "Give a directory of per-instrument files or one table."
        )
    files = _source_files(src)
    problems: list[str] = []
    out: list[SourceBars] = []
    for path in files:
        try:
            raw = _read_table(path).rename(columns=rename)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            problems.append(f"{path}: cannot be read as {_kind(path)} ({exc})")
            continue
        if src.is_dir():
            out.extend(_validate(path, _stem(path).upper(), raw, problems))
            continue
        if "symbol" not in raw:
            problems.append(
                f"{path}: missing the symbol column (found: {', '.join(map(str, raw.columns))}); a single table "
                "needs one: name yours with --columns symbol=<source column>"
            )
            continue
        symbols = raw["symbol"].astype(str).str.strip().str.upper()
        for symbol, part in raw.groupby(symbols, sort=True):
            out.extend(_validate(path, str(symbol), part.drop(columns=["symbol"]), problems))
    if problems:
        raise ImportValidationError(
            f"import of {src} failed: {len(problems)} problem(s); nothing was written",
            problems,
            "Fix the source files (map differently named columns with --columns date=Date,close=Close) "
            "and run the import again; the destination store is unchanged.",
        )
    return out


def _source_files(src: Path) -> list[Path]:
    if src.is_file():
        if not src.name.endswith(SUFFIXES):
            raise ImportValidationError(
                f"{src}: unsupported file type", [], f"Use one of {', '.join(SUFFIXES)}, or a directory of them."
            )
        return [src]
    files = sorted(p for p in src.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))
    if not files:
        raise ImportValidationError(
            f"{src}: no source files found",
            [],
            f"Put one file per instrument ({', '.join(SUFFIXES)}; symbol = file name) in the directory.",
        )
    stems: dict[str, Path] = {}
    clashes = []
    for path in files:
        key = _stem(path).upper()
        if key in stems:
            clashes.append(f"{path} and {stems[key]} both name instrument {key}")
        stems[key] = path
    if clashes:
        raise ImportValidationError(
            f"import of {src} failed: {len(clashes)} problem(s); nothing was written",
            clashes,
            "Keep one file per instrument.",
        )
    return files


def _stem(path: Path) -> str:
    name = path.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _kind(path: Path) -> str:
    return "Parquet" if path.name.endswith(".parquet") else "CSV"


def _read_table(path: Path) -> pd.DataFrame:
    if path.name.endswith(".parquet"):
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.reset_index(drop=True)


def _validate(path: Path, symbol: str, raw: pd.DataFrame, problems: list[str]) -> list[SourceBars]:
    # Parquet rows count from 1; CSV lines from 2, as line 1 is the header.
    first_row, unit = (1, "row") if path.name.endswith(".parquet") else (2, "line")
    where = [f"{unit} {i + first_row}" for i in raw.index]
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        problems.append(
            f"{path}: missing required column(s) {', '.join(missing)} "
            f"(found: {', '.join(map(str, raw.columns)) or 'none'}); map them with --columns "
            f"{missing[0]}=<source column>"
        )
        return []
    before = len(problems)
    dates = _parse_dates(raw["date"])
    for i in np.nonzero(dates.isna().to_numpy())[0].tolist():
        problems.append(f"{path} {where[i]}: date {raw['date'].iloc[i]!r} is not a date (use YYYY-MM-DD)")
    fields = [c for c in (*REQUIRED[1:], *OPTIONAL) if c in raw.columns]
    numbers = {}
    for name in fields:
        values, bad = _parse_numbers(raw[name])
        for j in bad[:5]:
            problems.append(f"{path} {where[j]}: {name} {raw[name].iloc[j]!r} is not a number")
        if len(bad) > 5:
            problems.append(f"{path}: {len(bad) - 5} more non-numeric {name} values")
        numbers[name] = values
    if len(problems) > before:
        return []
    stamps = dates.to_numpy()
    for i in range(1, len(stamps)):
        if stamps[i] == stamps[i - 1]:
            problems.append(f"{path} {where[i]}: duplicate date {pd.Timestamp(stamps[i]).date()} for {symbol}")
        elif stamps[i] < stamps[i - 1]:
            problems.append(
                f"{path} {where[i]}: date {pd.Timestamp(stamps[i]).date()} comes after "
                f"{pd.Timestamp(stamps[i - 1]).date()}; sort the rows by date"
            )
    if len(problems) > before:
        return []
    frame = pd.DataFrame(numbers, index=pd.DatetimeIndex(stamps, name="date"))
    return [SourceBars(symbol, path, frame, where)]


def _parse_dates(column: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(column):
        return pd.to_datetime(column).dt.tz_localize(None).dt.normalize()
    text = column.astype(str).str.strip()
    return pd.to_datetime(text, errors="coerce", format="mixed").dt.normalize()


def _parse_numbers(column: pd.Series) -> tuple[np.ndarray, list[int]]:
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=np.float64), []
    text = column.astype(str).str.strip()
    empty = text.isin(["", "nan", "NaN", "NA", "null", "None"]) | column.isna()
    values = pd.to_numeric(text.where(~empty), errors="coerce")
    bad = np.nonzero((values.isna() & ~empty).to_numpy())[0].tolist()
    return values.to_numpy(dtype=np.float64), bad
