from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.main import main


def test_help_is_fast_and_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "app.cli.main", "--help"], capture_output=True, text=True, check=True
    )
    assert "data" in out.stdout and "demo" in out.stdout
    heavy = [m for m in ("pandas", "numpy", "torch", "mlflow", "lightgbm", "celery") if f"| {m}\n" in out.stderr]
    assert heavy == [], f"qtrain --help imported {heavy}"


def test_import_error_exits_2_with_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "X.csv").write_text("date,open,high,low,close\n2020-01-02,1,1,1,1\n")
    code = main(["data", "import", str(src), "--to", str(tmp_path / "store")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: import of ") and "missing required column(s) volume" in err
    assert "Traceback" not in err
    assert not (tmp_path / "store").exists()


def test_debug_shows_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QTRAIN_DEBUG", "1")
    with pytest.raises(Exception, match="does not exist"):
        main(["data", "import", str(tmp_path / "nope"), "--to", str(tmp_path / "store")])


def test_bad_columns_argument(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["data", "import", str(tmp_path), "--to", str(tmp_path / "s"), "--columns", "close"])
    assert code == 2
    assert "--columns item 'close' is not FIELD=SOURCE_COLUMN" in capsys.readouterr().err


def test_import_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "aaa.csv").write_text(
        "date,open,high,low,close,volume\n2020-01-02,1,2,0.5,1.5,10\n2020-01-03,1.5,2,1,1.8,12\n"
    )
    assert main(["data", "import", str(src), "--to", str(tmp_path / "store")]) == 0
    assert "imported 2 bars of 1 instruments from 1 file(s)" in capsys.readouterr().out
    assert main(["data", "info", "--data", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "calendar   2020-01-02 .. 2020-01-03 (2 trading days)" in out
    assert "market     all: 1 instruments" in out


def test_synth_and_bad_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "synth", "--to", str(tmp_path / "m"), "--instruments", "5", "--days", "60"]) == 0
    assert "wrote a synthetic market of 5 instruments x 60 days (seed 0)" in capsys.readouterr().out
    assert main(["data", "synth", "--to", str(tmp_path / "m2"), "--instruments", "1"]) == 2
    assert "need at least 2 instruments" in capsys.readouterr().err
    assert not (tmp_path / "m2").exists()


def test_data_features_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    monkeypatch.setenv("QTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    store = tmp_path / "m"
    assert main(["data", "synth", "--to", str(store), "--instruments", "6", "--days", "120"]) == 0
    out = tmp_path / "f.parquet"
    args = ["data", "features", "--data", str(store), "--market", "synth", "--start", "2015-03-02"]
    assert main([*args, "--end", "2015-05-29", "--view", "learn", "--out", str(out)]) == 0
    assert "alpha158, learn view, market synth, 2015-03-02..2015-05-29" in capsys.readouterr().out
    frame = pd.read_parquet(out)
    assert frame.index.names == ["datetime", "instrument"]
    assert list(frame.columns[:3]) == ["KMID", "KLEN", "KMID2"] and frame.columns[-1] == "LABEL0"
    assert frame.shape[1] == 159 and frame["LABEL0"].notna().all()
    assert set(map(str, frame.dtypes)) == {"float32"}  # the processed label is float32 too
    assert list((tmp_path / "cache" / "features").iterdir())
    raw_out = tmp_path / "raw.parquet"
    assert main([*args, "--end", "2015-05-29", "--out", str(raw_out)]) == 0
    assert "kept as float64" not in capsys.readouterr().out
    raw = pd.read_parquet(raw_out)
    assert set(map(str, raw.dtypes)) == {"float32"} and len(raw) >= len(frame)


def test_data_features_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "m"
    assert main(["data", "synth", "--to", str(store), "--instruments", "4", "--days", "60"]) == 0
    base = ["data", "features", "--data", str(store), "--out", str(tmp_path / "f.parquet")]
    assert main([*base, "--handler", "alpha999"]) == 2
    assert (
        "unknown dataset handler 'alpha999'; choose one of: alpha158, alpha158_gru20, alpha158_nn, alpha360, custom"
        in capsys.readouterr().err
    )
    assert main([*base, "--market", "csi300"]) == 2
    assert "unknown market 'csi300'" in capsys.readouterr().err
    assert main([*base, "--start", "2030-01-01"]) == 2
    assert "start 2030-01-01 is outside the calendar" in capsys.readouterr().err
    assert not (tmp_path / "f.parquet").exists()
