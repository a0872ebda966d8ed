"""Feature files cut short or not fitting the calendar: the per-job check and the whole-store report."""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from app.core.errors import StoreFormatError
from app.data.binfile import bin_problem, read_bin, read_bin_header
from app.data.check import check_feature_files, check_store
from app.data.store import QlibStore
from app.data.synth import SynthSpec, write_synth_market
from tests.unit.data.qlib_layout import write_calendar, write_field, write_market

NAN = float("nan")
DATES = [f"2020-01-{d:02d}" for d in (2, 3, 6, 7, 8, 9, 10, 13, 14, 15)]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Qlib's layout written byte by byte: AAA over the whole calendar, BBB from day 3."""
    root = tmp_path / "store"
    write_calendar(root, DATES)
    write_market(root, "all", [("SH600000", DATES[0], DATES[9]), ("SH600001", DATES[3], DATES[9])])
    for field in ("close", "open"):
        write_field(root, "SH600000", field, 0, [float(i + 1) for i in range(10)])
        write_field(root, "SH600001", field, 3, [10.0, NAN, 12.0, 13.0, 14.0, 15.0, 16.0])
    return root


@pytest.fixture
def synth(tmp_path: Path) -> Path:
    root = tmp_path / "synth"
    write_synth_market(root, SynthSpec(instruments=5, days=60, seed=0))
    return root


def _bin(root: Path, symbol: str, field: str) -> Path:
    return root / "features" / symbol.lower() / f"{field}.day.bin"


def _job_check(root: Path, fields: tuple[str, ...] = ("close", "open")) -> None:
    store = QlibStore(root)
    check_feature_files(store, [(symbol, name) for symbol in store.instruments("all") for name in fields])


@pytest.mark.parametrize(
    ("size", "start", "days", "expected"),
    [
        (44, 0.0, 10, None),
        (32, 3.0, 10, None),  # 7 values from index 3: exactly to the calendar's end
        (8, 0.0, 10, None),  # fewer values than the span: read as Qlib reads it
        (4, 9.0, 10, None),  # a start index and no values
        (0, None, 10, r"^empty \.bin file \(0 bytes"),
        (7, 0.0, 10, r"^truncated \.bin file \(7 bytes .*: 0 values and 3 stray bytes\)$"),
        (3, None, 10, r"^truncated \.bin file \(3 bytes .*not even the start index\)$"),
        (46, 0.0, 10, r"^truncated \.bin file \(46 bytes .*: 10 values and 2 stray bytes\)$"),
        (8, 10.0, 10, r"^corrupt \.bin file: start index 10\.0 is not a calendar position \(0\.\.9\)$"),
        (8, -1.0, 10, r"start index -1\.0 is not a calendar position"),
        (8, 2.5, 10, r"start index 2\.5 is not a calendar position"),
        (8, NAN, 10, r"start index nan is not a calendar position"),
        (36, 3.0, 10, r"8 values from calendar index 3 run past the calendar's 10 days \(expected at most 7 values, "
                      r"32 bytes; got 36 bytes"),
        (48, 0.0, 10, r"11 values from calendar index 0 .* at most 10 values, 44 bytes; got 48 bytes"),
    ],
)  # fmt: skip
def test_bin_problem_judges_size_and_start_index(
    size: int, start: float | None, days: int, expected: str | None
) -> None:
    problem = bin_problem(size, start, days)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None
        assert re.search(expected, problem), problem


def test_bin_problem_without_the_start_index_judges_the_size_only() -> None:
    assert bin_problem(48, None, 10) is None
    assert bin_problem(47, None, 10) is not None


def test_read_bin_header_reads_the_size_and_start_index(store: Path) -> None:
    assert read_bin_header(_bin(store, "SH600001", "close")) == (32, 3.0)
    path = _bin(store, "SH600001", "close")
    os.truncate(path, 2)
    assert read_bin_header(path) == (2, None)
    with pytest.raises(FileNotFoundError):
        read_bin_header(_bin(store, "SH600001", "vwap"))


def test_a_clean_store_passes_and_absent_files_are_fine(store: Path) -> None:
    _job_check(store, ("close", "open", "vwap"))  # no vwap files: Qlib reads them as empty series


def test_truncated_file_is_refused_naming_it_with_expected_and_actual_length(store: Path) -> None:
    path = _bin(store, "SH600001", "close")
    os.truncate(path, 7)  # `truncate -s 7`
    with pytest.raises(StoreFormatError) as info:
        _job_check(store)
    message = str(info.value)
    assert message.startswith(f"{path}: truncated .bin file (7 bytes")
    assert (
        "instruments/all.txt lists SH600001 over 2020-01-07 .. 2020-01-15: a whole file of that is 32 bytes" in message
    )
    assert f"Re-import SH600001 (`qtrain data import SRC --to {store}`" in message
    assert f"remove SH600001 from {store / 'instruments'}/*.txt" in message
    assert "\n" not in message and "more file" not in message


def test_extra_bytes_and_values_past_the_calendar_are_refused(store: Path) -> None:
    path = _bin(store, "SH600000", "open")
    with path.open("ab") as fh:
        fh.write(b"\x00\x00")
    with pytest.raises(StoreFormatError, match=r"open\.day\.bin: truncated \.bin file \(46 bytes"):
        _job_check(store)
    write_field(store, "SH600000", "open", 0, [1.0] * 11)
    with pytest.raises(StoreFormatError, match=r"open\.day\.bin: corrupt .*11 values from calendar index 0 run past"):
        _job_check(store)


def test_start_index_beyond_the_calendar_is_refused(store: Path) -> None:
    path = _bin(store, "SH600001", "open")
    with path.open("r+b") as fh:
        fh.write(struct.pack("<f", 500.0))
    with pytest.raises(StoreFormatError, match=r"open\.day\.bin: corrupt \.bin file: start index 500\.0 is not"):
        _job_check(store)


def test_only_the_fields_asked_for_are_checked(store: Path) -> None:
    os.truncate(_bin(store, "SH600001", "open"), 5)
    _job_check(store, ("close",))
    with pytest.raises(StoreFormatError, match=r"open\.day\.bin"):
        _job_check(store, ("close", "open"))


def test_several_broken_files_name_the_first_and_count_the_rest(store: Path) -> None:
    for symbol in ("SH600000", "SH600001"):
        for field in ("close", "open"):
            os.truncate(_bin(store, symbol, field), 6)
    with pytest.raises(StoreFormatError) as info:
        _job_check(store)
    assert str(info.value).startswith(f"{_bin(store, 'SH600000', 'close')}: truncated")
    assert f"3 more file(s) are broken too; `qtrain data check --data-dir {store}` lists them." in str(info.value)


def test_a_whole_number_of_values_short_of_the_span_is_accepted(store: Path) -> None:
    # Qlib reads it (the later days are missing); only `qtrain data check` warns of it
    os.truncate(_bin(store, "SH600000", "close"), 4 + 4 * 6)
    _job_check(store)
    assert len(QlibStore(store).read_series("SH600000", "close")) == 6


def test_the_job_check_reads_four_bytes_a_file(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    real_read = os.read

    def read(fd: int, n: int) -> bytes:
        sizes.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", read)
    _job_check(store)
    assert sizes == [4, 4, 4, 4]


def test_read_bin_refuses_what_the_check_refuses(store: Path) -> None:
    path = _bin(store, "SH600001", "close")
    os.truncate(path, 7)
    with pytest.raises(StoreFormatError, match=r"truncated \.bin file \(7 bytes.*Re-import SH600001"):
        read_bin(path, len(DATES))


# --- the whole store ------------------------------------------------------------------------------------------


def test_a_synthetic_market_is_clean(synth: Path) -> None:
    report = check_store(synth, read_values=True)
    assert report.findings == []
    assert (report.instruments, report.folders, report.files) == (6, 6, 48)
    assert report.markets == ["all", "large", "synth"]
    lines = report.lines()
    assert lines[0] == (
        f"checked {synth}: calendar 60 days (2015-01-05 .. 2015-04-03), 3 instrument file(s) (all, large, synth) "
        "listing 6 instruments, 48 feature files in 6 folders"
    )
    assert lines[1:] == ["clean: no problems"]


def test_every_broken_file_is_listed_on_its_own_line(synth: Path) -> None:
    truncated = _bin(synth, "SH600000", "close")
    os.truncate(truncated, 7)
    longer = _bin(synth, "SH600001", "open")
    with longer.open("ab") as fh:
        fh.write(b"xx")
    moved = _bin(synth, "SH600002", "volume")
    with moved.open("r+b") as fh:
        fh.write(struct.pack("<f", 60.0))
    empty = _bin(synth, "SZ000001", "vwap")
    empty.write_bytes(b"")
    report = check_store(synth)
    assert [(f.level, f.path) for f in report.findings] == [
        ("problem", truncated),
        ("problem", longer),
        ("problem", moved),
        ("problem", empty),
    ]
    lines = report.lines()
    assert lines[1].startswith(f"problem  {truncated}: truncated .bin file (7 bytes")
    assert lines[2].startswith(f"problem  {longer}: truncated .bin file (")
    assert lines[3].startswith(f"problem  {moved}: corrupt .bin file: start index 60.0 is not a calendar position")
    assert lines[4].startswith(f"problem  {empty}: empty .bin file")
    assert lines[-1].startswith(
        f"4 problem(s) found. Fix each file named: re-import its instrument (`qtrain data import SRC --to {synth}`"
    )
    assert len(lines) == 6


def test_a_file_cut_to_whole_values_or_holding_nothing_is_a_warning(synth: Path) -> None:
    cut = _bin(synth, "SH600000", "close")
    os.truncate(cut, 4 + 4 * 50)
    hollow = _bin(synth, "SH600000", "open")
    hollow.write_bytes(struct.pack("<f", 0.0))
    report = check_store(synth)
    assert report.problems == []
    assert [f.path for f in report.warnings] == [hollow, cut]
    assert report.warnings[0].message == "a start index and no values: the field holds no data."
    assert report.warnings[1].message.startswith(
        "holds 2015-01-05 .. 2015-03-20 (50 days), but its span in instruments/all.txt runs 2015-01-05 .. 2015-04-03 "
        "(60 days): cut short"
    )
    assert report.lines()[-1] == "clean: no problems, 2 warning(s)"


def test_an_unlisted_instrument_is_compared_with_its_other_fields(synth: Path) -> None:
    (synth / "instruments" / "all.txt").write_text(
        "".join(ln for ln in (synth / "instruments" / "all.txt").read_text().splitlines(True) if "SH600000" not in ln)
    )
    os.truncate(_bin(synth, "SH600000", "close"), 4 + 4 * 50)
    [warning] = [f for f in check_store(synth).warnings if f.path.parent.name == "sh600000"]
    assert warning.path.name == "close.day.bin"
    assert (
        "but 7 other field(s) of SH600000 (change.day.bin, factor.day.bin, high.day.bin, ...) runs" in warning.message
    )


def test_nan_only_files_are_warned_of_when_values_are_read(synth: Path) -> None:
    path = _bin(synth, "SH600000", "vwap")
    start, values = read_bin(path, 60)
    path.write_bytes(
        np.concatenate([[np.float32(start)], np.full(len(values), np.nan, dtype="<f4")]).astype("<f4").tobytes()
    )
    assert check_store(synth).findings == []
    [warning] = check_store(synth, read_values=True).findings
    assert (warning.level, warning.path) == ("warning", path)
    assert warning.message == "all 60 values are NaN or infinite: the field holds no data."


def test_calendar_problems_are_reported_and_sizes_still_judged(synth: Path) -> None:
    cal = synth / "calendars" / "day.txt"
    lines = cal.read_text().splitlines()
    lines[2], lines[3] = lines[3], lines[2]
    cal.write_text("\n".join(lines) + "\n")
    os.truncate(_bin(synth, "SH600000", "close"), 7)
    report = check_store(synth)
    assert report.calendar is None
    assert [(f.path, f.message.split(":")[0]) for f in report.problems] == [
        (cal, "line 4"),
        (
            _bin(synth, "SH600000", "close"),
            "truncated .bin file (7 bytes is not a whole number of float32 values, 4 bytes of start index + 4 a day",
        ),
    ]
    assert "calendar dates must be strictly increasing" in report.problems[0].message
    assert report.lines()[0].startswith(f"checked {synth}: calendar unusable, 3 instrument file(s)")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("SH600000\t2015-01-05\n", r"^line 2: expected 'SYMBOL<TAB>START<TAB>END'"),
        ("SH600000\t2015-01-05\t2015-13-40\n", r"^line 2: '2015-01-05' / '2015-13-40' are not dates"),
        ("SH600000\t2015-03-02\t2015-01-05\n", r"^line 2: span of SH600000 ends 2015-01-05 before it starts"),
        (
            "SH600000\t2014-12-01\t2015-01-05\n",
            r"^span of SH600000 2014-12-01 \.\. 2015-01-05 runs outside the calendar",
        ),
        (
            "SH600000\t2015-03-02\t2015-05-29\n",
            r"^span of SH600000 2015-03-02 \.\. 2015-05-29 runs outside the calendar",
        ),
    ],
)
def test_instrument_file_problems(synth: Path, line: str, message: str) -> None:
    market = synth / "instruments" / "mine.txt"
    market.write_text(f"SZ000001\t2015-01-05\t2015-02-02\n{line}")
    [problem] = check_store(synth).problems
    assert problem.path == market
    assert re.search(message, problem.message), problem.message


def test_a_listed_instrument_without_a_folder_is_a_warning(synth: Path) -> None:
    (synth / "instruments" / "mine.txt").write_text("SH699999\t2015-01-05\t2015-02-02\n")
    [warning] = check_store(synth).findings
    assert (warning.level, warning.path) == ("warning", synth / "features" / "sh699999")
    assert "SH699999 is listed in instruments/ but has no feature folder" in warning.message


def test_missing_parts_of_a_store_are_problems(synth: Path) -> None:
    (synth / "calendars" / "day.txt").unlink()
    report = check_store(synth)
    assert [f.path for f in report.problems] == [synth / "calendars" / "day.txt"]
    assert "not found" in report.problems[0].message


def test_a_missing_or_foreign_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StoreFormatError, match=r"nope: no such store directory\. Pass the store with --data-dir DIR"):
        check_store(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(StoreFormatError, match=r"is not a market store in Qlib's layout: it has none of calendars/"):
        check_store(tmp_path)


def test_the_report_as_json(synth: Path) -> None:
    os.truncate(_bin(synth, "SH600000", "close"), 7)
    doc = json.loads(json.dumps(check_store(synth).to_json()))
    assert doc["clean"] is False and doc["store"] == str(synth)
    assert doc["calendar"] == {"days": 60, "first": "2015-01-05", "last": "2015-04-03"}
    assert (doc["instruments"], doc["folders"], doc["files"]) == (6, 6, 48)
    assert [p["path"] for p in doc["problems"]] == [str(_bin(synth, "SH600000", "close"))]
    assert doc["warnings"] == []
