"""`qtrain --help` names every command, those of `qtrain data` and `qtrain pool` included."""

from __future__ import annotations

import pytest

from app.cli.main import main


def test_the_top_level_help_spells_out_the_commands_of_data_and_pool(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "\n  qtrain data import | synth | features | info | check\n" in out
    assert "\n  qtrain pool status | list | " in out
