"""store_fingerprint: changes with the store's data, stays put otherwise, and is fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.core.errors import StoreFormatError
from app.data.fingerprint import store_fingerprint
from tests.unit.data.qlib_layout import write_calendar, write_field, write_market

DATES = ["2020-01-02", "2020-01-03", "2020-01-06"]
FIELDS = ("open", "high", "low", "close", "volume", "vwap", "factor", "change")


def small_store(root: Path) -> Path:
    write_calendar(root, DATES)
    write_market(root, "all", [("SH600000", DATES[0], DATES[2]), ("SZ000001", DATES[1], DATES[2])])
    write_field(root, "SH600000", "close", 0, [1.0, 2.0, 3.0])
    write_field(root, "SZ000001", "close", 1, [5.0, 6.0])
    return root


def bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_stable_until_something_changes(tmp_path: Path) -> None:
    root = small_store(tmp_path / "s")
    base = store_fingerprint(root)
    assert store_fingerprint(str(root)) == base and len(base) == 64
    seen = {base}

    bump_mtime(root / "features" / "sh600000" / "close.day.bin")  # touch
    seen.add(store_fingerprint(root))
    write_field(root, "SZ000001", "close", 1, [5.0, 6.0, 7.0])  # longer series
    seen.add(store_fingerprint(root))
    write_field(root, "SZ000001", "open", 1, [5.0, 6.0])  # a new field file
    seen.add(store_fingerprint(root))
    write_market(root, "all", [("SH600000", DATES[0], DATES[2]), ("SZ000001", DATES[0], DATES[2])])
    seen.add(store_fingerprint(root))
    write_market(root, "csi", [("SH600000", DATES[0], DATES[2])])  # a new market
    seen.add(store_fingerprint(root))
    write_calendar(root, [*DATES, "2020-01-07"])
    seen.add(store_fingerprint(root))
    assert len(seen) == 7


def test_same_content_elsewhere_same_fingerprint_up_to_mtimes(tmp_path: Path) -> None:
    a, b = small_store(tmp_path / "a"), small_store(tmp_path / "b")
    for rel in ("features/sh600000/close.day.bin", "features/sz000001/close.day.bin"):
        os.utime(b / rel, ns=(0, (a / rel).stat().st_mtime_ns))
    assert store_fingerprint(a) == store_fingerprint(b)


def test_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreFormatError, match=r"calendars/day.txt not found"):
        store_fingerprint(tmp_path)


def test_300_instruments_by_8_fields_reads_no_feature_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why a large store fingerprints in milliseconds: feature files are listed and stat-ed, never opened."""
    import builtins
    import io

    root = tmp_path / "big"
    write_calendar(root, DATES)
    write_market(root, "all", [(f"SH{600000 + i}", DATES[0], DATES[2]) for i in range(300)])
    payload = b"\x00" * 16
    for i in range(300):
        folder = root / "features" / f"sh{600000 + i}"
        folder.mkdir(parents=True)
        for name in FIELDS:
            (folder / f"{name}.day.bin").write_bytes(payload)
    opened: list[str] = []
    real_open = builtins.open

    def recording_open(file: object, *args: object, **kwargs: object) -> object:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", recording_open)
    monkeypatch.setattr(io, "open", recording_open)  # pathlib opens through io.open
    first = store_fingerprint(root)
    assert opened and not [p for p in opened if "/features/" in p]  # calendar and instruments only
    (root / "features" / "sh600007" / f"{FIELDS[0]}.day.bin").write_bytes(payload * 2)
    assert store_fingerprint(root) != first  # a changed size still changes the fingerprint
