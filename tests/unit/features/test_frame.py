"""build_feature_frame's block-parallel evaluation: blocks never change a number; a bar counts the blocks."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from rich.console import Console

from app.core import progress
from app.data.store import QlibStore
from app.data.synth import SynthSpec, write_synth_market
from app.features import frame
from app.features.engine import evaluate, required_fields
from app.features.frame import build_feature_frame
from app.features.handlers import expressions

EXPRS = {
    "MOM5": "Ref($close, 5)/$close",
    "STD20": "Std($close, 20)/$close",
    "RANK10": "Rank($close, 10)",
    "CORR10": "Corr($close, Log($volume+1), 10)",
    "QTLU20": "Quantile($close, 20, 0.8)/$close",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> QlibStore:
    root = tmp_path_factory.mktemp("frame") / "store"
    write_synth_market(root, SynthSpec(instruments=140, days=120, seed=4))
    return QlibStore(root)


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_blocks_do_not_change_the_values(store: QlibStore, monkeypatch: pytest.MonkeyPatch, cpus: int) -> None:
    panel = store.load(sorted(required_fields(EXPRS)), market="all")
    whole = evaluate(panel, EXPRS)
    monkeypatch.setattr(frame.os, "cpu_count", lambda: cpus)
    blocked = frame._evaluate_in_parallel(panel, EXPRS)
    for name in EXPRS:
        np.testing.assert_array_equal(blocked[name], whole[name], err_msg=name)


def test_build_writes_nothing_off_a_terminal(store: QlibStore, capfd: pytest.CaptureFixture[str]) -> None:
    build_feature_frame(store, expressions(features=EXPRS), "all")
    assert capfd.readouterr() == ("", "")


def test_build_shows_a_bar_over_blocks(store: QlibStore, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    console = Console(force_terminal=True, file=out, width=150, _environ={})
    monkeypatch.setattr(progress, "_stderr_console", lambda: console)
    monkeypatch.setattr(frame.os, "cpu_count", lambda: 2)
    build_feature_frame(store, expressions(features=EXPRS), "all")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    final = [line for line in re.split(r"[\r\n]", text) if line.startswith("features")][-1]
    assert "4/4 blocks" in final  # 140 instruments, 2 threads: 2 blocks of 35 each
