"""Building a task's components refuses broken feature files the dataset or the backtest will read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.config.compose import build_components, compose_dataset, group_options
from app.core.errors import StoreFormatError
from app.data.synth import SynthSpec, write_synth_market
from app.workflow.spec import TaskSpec
from tests.small_specs import small_spec

SEGMENTS = {
    "train": ["2015-01-05", "2015-02-27"],
    "valid": ["2015-03-02", "2015-03-13"],
    "test": ["2015-03-16", "2015-04-03"],
}


@pytest.fixture
def market(tmp_path: Path) -> Path:
    root = tmp_path / "market"
    write_synth_market(root, SynthSpec(instruments=5, days=60, seed=0))
    return root


def _build(root: Path, **changes: object) -> None:
    body = small_spec(root, SEGMENTS)
    body.update(changes)
    build_components(TaskSpec.from_mapping(body))


def _bin(root: Path, symbol: str, field: str) -> Path:
    return root / "features" / symbol.lower() / f"{field}.day.bin"


def test_a_clean_market_builds(market: Path) -> None:
    _build(market)


def test_a_truncated_feature_field_is_refused_naming_the_file(market: Path) -> None:
    path = _bin(market, "SZ000002", "close")
    os.truncate(path, 7)
    with pytest.raises(StoreFormatError) as info:
        _build(market)
    assert str(info.value).startswith(f"{path}: truncated .bin file (7 bytes")
    assert "Re-import SZ000002" in str(info.value)


def test_a_field_only_the_backtest_reads_is_checked_while_the_backtest_is_recorded(market: Path) -> None:
    path = _bin(market, "SH600001", "factor")  # Alpha158 does not read factor; the TopkDropout backtest does
    with path.open("ab") as fh:
        fh.write(b"\x00")
    with pytest.raises(StoreFormatError, match=rf"^{path}: truncated \.bin file"):
        _build(market)
    without_backtest = [r for r in small_spec(market, SEGMENTS)["records"] if "PortAna" not in r["_target_"]]
    _build(market, records=without_backtest)


def test_the_close_of_a_benchmark_outside_the_universe_is_checked(market: Path) -> None:
    listed = market / "instruments" / "all.txt"
    listed.write_text("".join(ln for ln in listed.read_text().splitlines(True) if not ln.startswith("SH000300")))
    path = _bin(market, "SH000300", "close")
    os.truncate(path, 10)
    with pytest.raises(StoreFormatError, match=r"sh000300/close\.day\.bin: truncated"):
        _build(market)


def test_a_file_no_one_reads_does_not_stop_the_job(market: Path) -> None:
    _bin(market, "SH600000", "amount").write_bytes(b"\x00\x00\x00")
    _build(market)


@pytest.mark.parametrize("option", group_options("dataset"))
def test_the_handler_fields_are_the_fields_its_expressions_read(option: str) -> None:
    from app.features.engine import required_fields  # the parser's answer

    handler = compose_dataset(option, market="all", start="2015-01-05", end="2015-04-03").handler
    assert handler.fields() == required_fields(dict(handler.features.features) | dict(handler.features.labels))
