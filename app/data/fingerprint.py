"""A cheap fingerprint of a Qlib-layout store, for cache keys: it changes whenever the store's data may have."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from app.core.errors import StoreFormatError


def store_fingerprint(root: Path | str) -> str:
    """Hex sha256 over the calendar files' and instrument files' contents and each feature file's path,
    size and ``mtime_ns`` (feature files are not read, so a large store hashes in milliseconds).

    Raises:
        StoreFormatError: ``root`` has no ``calendars/day.txt``.
    """
    root = Path(root).expanduser()
    if not (root / "calendars" / "day.txt").is_file():
        raise StoreFormatError(
            f"{root / 'calendars' / 'day.txt'} not found: {root} is not a market store in Qlib's layout. "
            "Create one with `qtrain data synth --to DIR` or `qtrain data import SRC --to DIR`."
        )
    digest = hashlib.sha256()
    for folder in ("calendars", "instruments"):
        for path in sorted((root / folder).glob("*.txt")):
            content = path.read_bytes()
            digest.update(f"{folder}/{path.name}\0{len(content)}\0".encode())
            digest.update(content)
    features = root / "features"
    for rel, size, mtime_ns in sorted(_walk(features, "")) if features.is_dir() else ():
        digest.update(f"features/{rel}\0{size}\0{mtime_ns}\n".encode())
    return digest.hexdigest()


def _walk(folder: Path, prefix: str) -> list[tuple[str, int, int]]:
    out: list[tuple[str, int, int]] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                out.extend(_walk(Path(entry.path), f"{rel}/"))
            elif entry.is_file():
                st = entry.stat()
                out.append((rel, st.st_size, st.st_mtime_ns))
    return out
