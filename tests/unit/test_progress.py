"""Progress bars: silent off a terminal, drawn on a forced terminal, never in the way of the work."""

from __future__ import annotations

import io
import logging
import re
import sys

import numpy as np
import pytest
from rich.console import Console
from torch import nn

from app.core import progress
from app.core.progress import ProgressBar
from app.models.lgbm import LearnData, booster_params, train_booster
from app.models.torch_data import ArraySource
from app.models.torch_training import TrainSettings, seeded, train

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(force_terminal=True, file=out, width=150, _environ={}), out


def _text(out: io.StringIO) -> str:
    return ANSI.sub("", out.getvalue())


def _final_line(out: io.StringIO, marker: str) -> str:
    """The last drawn line (frames are separated by carriage returns) that contains ``marker``."""
    lines = [line for line in re.split(r"[\r\n]", _text(out)) if marker in line]
    assert lines, _text(out)
    return lines[-1]


@pytest.fixture
def forced_default(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """Make bars opened without a console (the call sites') draw on a forced terminal."""
    console, out = _terminal()
    monkeypatch.setattr(progress, "_stderr_console", lambda: console)
    return out


# -- the helper -----------------------------------------------------------------------------------------------
def test_silent_when_the_stream_is_not_a_terminal() -> None:
    out = io.StringIO()
    with ProgressBar(5, "features", unit="blocks", console=Console(file=out)) as bar:
        assert not bar.active
        for _ in range(5):
            bar.advance(note="train 0.98")
    assert out.getvalue() == ""
    assert bar.completed == 5


def test_default_console_is_silent_under_captured_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    with ProgressBar(3, "features", unit="blocks") as bar:
        bar.advance(3)
    assert not bar.active
    assert capfd.readouterr() == ("", "")


def test_dumb_terminal_is_silent() -> None:
    out = io.StringIO()
    console = Console(force_terminal=True, file=out, _environ={"TERM": "dumb"})
    with ProgressBar(2, "features", console=console) as bar:
        bar.advance(2)
    assert out.getvalue() == ""


def test_forced_terminal_draws_description_counts_and_note() -> None:
    console, out = _terminal()
    with ProgressBar(4, "features", unit="blocks", console=console) as bar:
        assert bar.active
        for i in range(4):
            bar.advance(note=f"train {0.98 + i:.2f} valid [1.01]")  # brackets are text, not rich markup
    assert not bar.active
    final = _final_line(out, "features")
    assert "4/4 blocks" in final
    assert "train 3.98 valid [1.01]" in final


def test_update_sets_completed_and_starts_from_a_resumed_count() -> None:
    console, out = _terminal()
    with ProgressBar(10, "GRUNet", unit="epochs", completed=7, console=console) as bar:
        bar.update(completed=9)
        bar.update(note="stopped early")
    final = _final_line(out, "GRUNet")
    assert "9/10 epochs" in final
    assert "stopped early" in final


def test_nested_bars_share_the_display() -> None:
    console, out = _terminal()
    with ProgressBar(2, "outer", unit="sub-models", console=console) as outer:
        for k in range(2):
            with ProgressBar(3, f"inner {k}", unit="rounds", console=console) as inner:
                inner.advance(3)
            outer.advance()
    assert "3/3 rounds" in _final_line(out, "inner 0")
    assert "3/3 rounds" in _final_line(out, "inner 1")
    assert "2/2 sub-models" in _final_line(out, "outer")


def test_log_lines_go_through_the_bar_and_the_handler_is_restored() -> None:
    console, out = _terminal()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with ProgressBar(1, "features", console=console) as bar:
            assert handler.stream is not out  # routed through the console while the bar is drawn
            logging.getLogger("qtrain.test").warning("a log line")
            bar.advance()
        assert handler.stream is out
    finally:
        root.removeHandler(handler)
    assert "a log line" in _text(out)


class _BrokenTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> int:
        raise OSError(5, "Input/output error")


def test_a_failing_terminal_turns_the_bar_off_and_the_work_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    stdout, stderr = sys.stdout, sys.stderr
    console = Console(force_terminal=True, file=_BrokenTerminal())
    with (
        caplog.at_level(logging.WARNING, logger="app.core.progress"),
        ProgressBar(3, "features", console=console) as bar,
    ):
        for _ in range(3):
            bar.advance()
    assert not bar.active
    assert bar.completed == 3
    assert "progress bar 'features' turned off: OSError" in caplog.text
    assert (sys.stdout, sys.stderr) == (stdout, stderr)


# -- the call sites -------------------------------------------------------------------------------------------
def test_lightgbm_rounds_bar(forced_default: io.StringIO) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    data = LearnData(x, x @ np.array([1.0, -0.5, 0.2]) + 0.1 * rng.normal(size=200), ["a", "b", "c"])
    params = booster_params("mse", 0, 1, {"num_leaves": 4})
    train_booster(params, data, data, rounds=12, early_stopping_rounds=None, owner="LightGBMModel")
    final = _final_line(forced_default, "LightGBMModel")
    assert "12/12 rounds" in final
    assert "valid l2" in final


def test_torch_epochs_bar_ends_cleanly_on_early_stop(forced_default: io.StringIO) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    source = ArraySource(x, rng.normal(size=64).astype(np.float32))  # noise: validation stops improving
    with seeded(0):
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1), nn.Flatten(0))
    settings = TrainSettings(n_epochs=50, batch_size=16, lr=0.05, early_stop=2, device="cpu")
    report = train(net, source, ArraySource(x[:32], rng.normal(size=32).astype(np.float32)), settings)
    assert report.stopped_early
    final = _final_line(forced_default, "Sequential")
    assert f"{report.epochs_done}/50 epochs" in final
    assert "train " in final and "valid " in final and "(stopped early)" in final
