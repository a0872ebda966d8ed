from __future__ import annotations

import pytest

from app.core.errors import ConfigError, ExpressionError
from app.features.handlers import GRU20_COLUMNS, alpha158, alpha360, expressions

ROLLING = [
    "ROC",
    "MA",
    "STD",
    "BETA",
    "RSQR",
    "RESI",
    "MAX",
    "MIN",
    "QTLU",
    "QTLD",
    "RANK",
    "RSV",
    "IMAX",
    "IMIN",
    "IMXD",
    "CORR",
    "CORD",
    "CNTP",
    "CNTN",
    "CNTD",
    "SUMP",
    "SUMN",
    "SUMD",
    "VMA",
    "VSTD",
    "WVMA",
    "VSUMP",
    "VSUMN",
    "VSUMD",
]


def test_alpha158_names_and_order() -> None:
    fs = alpha158()
    expected = ["KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT", "KSFT2"]
    expected += ["OPEN0", "HIGH0", "LOW0", "VWAP0"]
    expected += [f"{op}{d}" for op in ROLLING for d in (5, 10, 20, 30, 60)]
    assert fs.feature_names == expected and len(expected) == 158
    assert fs.labels == (("LABEL0", "Ref($close, -2)/Ref($close, -1) - 1"),)
    table = dict(fs.features)
    assert table["KUP"] == "($high-Greater($open, $close))/$open"
    assert table["RSV20"] == "($close-Min($low, 20))/(Max($high, 20)-Min($low, 20)+1e-12)"
    assert table["IMXD60"] == "(IdxMax($high, 60)-IdxMin($low, 60))/60"
    assert table["CORD5"] == "Corr($close/Ref($close,1), Log($volume/Ref($volume, 1)+1), 5)"


def test_alpha158_options_like_qlib_loader_config() -> None:
    fs = alpha158(kbar=False, price_windows=(0, 1), price_fields=("CLOSE",), volume_windows=(0,),
                  rolling_windows=(5,), include=["ROC", "LOW"])  # fmt: skip
    assert fs.feature_names == ["CLOSE0", "CLOSE1", "VOLUME0", "ROC5", "MIN5"]
    assert dict(fs.features)["CLOSE1"] == "Ref($close, 1)/$close"
    assert "RANK5" not in alpha158(exclude=["RANK"]).feature_names


def test_gru20_selection_keeps_benchmark_order() -> None:
    assert alpha158(columns=GRU20_COLUMNS).feature_names == list(GRU20_COLUMNS)


def test_alpha360_names_and_order() -> None:
    names = alpha360().feature_names
    assert len(names) == 360
    for k, field in enumerate(("CLOSE", "OPEN", "HIGH", "LOW", "VWAP", "VOLUME")):
        assert names[60 * k : 60 * (k + 1)] == [f"{field}{i}" for i in range(59, -1, -1)]
    assert dict(alpha360().features)["VOLUME3"] == "Ref($volume, 3)/($volume+1e-12)"


def test_errors_before_any_work() -> None:
    with pytest.raises(ExpressionError, match=r'"Ref\(\$close 5\)": \(column MOM\) syntax error at position 11'):
        expressions(features={"MOM": "Ref($close 5)"})
    with pytest.raises(ExpressionError, match=r"unknown operator 'Meen' \(did you mean Mean\?\)"):
        expressions(features={"X": "Meen($close, 5)"})
    with pytest.raises(ConfigError, match=r"unknown feature column\(s\) NOPE"):
        alpha158(columns=["KMID", "NOPE"])
    with pytest.raises(ConfigError, match=r"unknown rolling operator\(s\) ROCK"):
        alpha158(include=["ROCK"])
    with pytest.raises(ConfigError, match=r"repeated: A"):
        expressions(features={"A": "$close"}, label={"A": "$open"})
