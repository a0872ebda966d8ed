"""The two pandas rule sets (``pandas_rules``): where they differ, how they are chosen, and the cache key."""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from pathlib import Path

import numpy as np
import pytest
from numba import njit

from app.core.errors import ConfigError
from app.data.store import QlibStore
from app.data.synth import SynthSpec, write_synth_market
from app.dataset.handler import DataHandler
from app.features import evaluate
from app.features import kernels as k
from app.features.handlers import GRU20_COLUMNS, PANDAS_RULES, FeatureSet, alpha158, alpha360, expressions
from tests.unit.features.panels import column_panel

# Eight days ending in six equal closes one cent above the last move; pandas 3.1.1's
# Series(...).rolling(5, min_periods=1).std() over the last (flat) window is this residue, pandas 2.2.3's is 0.
STEP_THEN_FLAT = [10.07, 10.13, 10.14, 10.14, 10.14, 10.14, 10.14, 10.14]
RESIDUE = float.fromhex("0x1.05713104c0736p-28")  # 3.8e-09


def test_a_flat_window_keeps_pandas_3s_residue_and_is_zero_under_pandas_2_2() -> None:
    panel = column_panel(x=STEP_THEN_FLAT)
    x = np.asfortranarray(panel.values["x"])
    lo, hi = np.zeros(1, dtype=np.int64), np.full(1, len(STEP_THEN_FLAT) - 1, dtype=np.int64)
    assert k.roll_var(x, lo, hi, 5, 1, True, k.PANDAS_3_1)[-1, 0] == RESIDUE
    assert k.roll_var(x, lo, hi, 5, 1, True, k.PANDAS_2_2)[-1, 0] == 0.0
    new = evaluate(panel, {"s": "Std($x, 5)", "m": "Mean($x, 5)"})
    old = evaluate(panel, {"s": "Std($x, 5)", "m": "Mean($x, 5)"}, pandas_rules="2.2.3")
    assert new["s"][-1, 0] == np.float32(RESIDUE) and old["s"][-1, 0] == 0.0
    np.testing.assert_array_equal(new["m"], old["m"])  # the mean did not change between the versions


def test_corr_divides_by_the_c_librarys_pow_not_sqrt() -> None:
    name = ctypes.util.find_library("m")
    if name is None:
        pytest.skip("no C math library to compare with")
    libm = ctypes.CDLL(name)
    libm.pow.restype = ctypes.c_double
    libm.pow.argtypes = [ctypes.c_double, ctypes.c_double]
    xs = np.exp(np.random.default_rng(0).uniform(-40, 40, 20_000))
    expected = np.array([libm.pow(float(v), 0.5) for v in xs])
    root = njit(lambda v: k._libm_pow(v, 0.5))
    got = np.array([root(float(v)) for v in xs])
    np.testing.assert_array_equal(got, expected)  # glibc's differs from np.sqrt on ~1 in 1000 of these


def test_rule_names_are_checked_and_travel_with_the_feature_set() -> None:
    assert set(k.RULES) == set(PANDAS_RULES) and PANDAS_RULES[0] == "3.1.1"
    assert alpha158().pandas_rules == "3.1.1"
    assert alpha158(pandas_rules="2.2.3", columns=GRU20_COLUMNS).pandas_rules == "2.2.3"
    assert alpha158(pandas_rules="2.2.3").select(["STD5"]).pandas_rules == "2.2.3"
    assert alpha360(pandas_rules="2.2.3").pandas_rules == "2.2.3"
    assert expressions(features={"a": "$close"}, pandas_rules="2.2.3").pandas_rules == "2.2.3"
    with pytest.raises(ConfigError, match=re.escape("pandas_rules must be one of '3.1.1', '2.2.3'")):
        FeatureSet((("a", "$close"),), pandas_rules="2.2")
    with pytest.raises(ConfigError, match="pandas_rules"):
        evaluate(column_panel(x=[1.0]), {"a": "$x"}, pandas_rules="3")


def test_the_raw_feature_cache_key_names_the_rules(tmp_path: Path) -> None:
    write_synth_market(tmp_path / "store", SynthSpec(instruments=3, days=40, seed=1))
    store = QlibStore(tmp_path / "store")

    def key(rules: str) -> dict[str, object]:
        first, last = "2015-01-05", "2015-02-27"
        handler = DataHandler(
            features=alpha158(pandas_rules=rules),
            market="all",
            start_time=first,
            end_time=last,
            fit_start_time=first,
            fit_end_time=last,
        )
        return handler.raw_key(store)

    new, old = key("3.1.1"), key("2.2.3")
    assert new["pandas_rules"] == "3.1.1" and old["pandas_rules"] == "2.2.3"
    assert new["format"] == 2  # entries computed with pandas 2.2's rules before the option existed miss
    assert {name for name in new if new[name] != old[name]} == {"pandas_rules"}
