"""Write stores byte by byte in Qlib's documented layout, independently of qtrain's writer."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path


def write_calendar(root: Path, dates: Sequence[str]) -> None:
    (root / "calendars").mkdir(parents=True, exist_ok=True)
    (root / "calendars" / "day.txt").write_text("\n".join(dates) + "\n")


def write_market(root: Path, name: str, rows: Sequence[tuple[str, str, str]]) -> None:
    (root / "instruments").mkdir(parents=True, exist_ok=True)
    (root / "instruments" / f"{name}.txt").write_text("".join(f"{s}\t{a}\t{b}\n" for s, a, b in rows))


def write_field(root: Path, symbol: str, field: str, start: float, values: Sequence[float]) -> Path:
    folder = root / "features" / symbol.lower()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{field}.day.bin"
    path.write_bytes(struct.pack(f"<{len(values) + 1}f", start, *values))
    return path
