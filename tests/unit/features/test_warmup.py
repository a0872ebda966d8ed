"""Kernel warm-up: it asks for exactly the signatures the engine calls, and fills numba's cache in parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from app.data.panel import Panel
from app.features import warmup
from app.features.engine import evaluate
from app.features.handlers import alpha158

MIXED = {
    "A": "Mean(Std($close, 5), 5)",  # rolling over a float64 result
    "B": "Ref(Mean($close, 5), 1) / $close",
    "C": "Corr($close, Std($volume, 3), 5)",
    "D": "Rsquare($close/Ref($close, 1), 5)",
    "E": "If($close > Mean($close, 3), $close, 0)",
    "F": "EMA($volume, 5) + WMA($close, 5) + Mad($close, 5) + Count($close, 5)",
}


def _panel(t: int = 40, n: int = 3) -> Panel:
    rng = np.random.default_rng(0)
    values = {f: np.asfortranarray(rng.uniform(1, 2, (t, n)).astype(np.float32)) for f in
              ("open", "high", "low", "close", "volume", "vwap")}  # fmt: skip
    return Panel(
        dates=pd.date_range("2020-01-01", periods=t),
        instruments=tuple(f"S{i}" for i in range(n)),
        values=values,
        first=np.zeros(n, dtype=np.int64),
        last=np.full(n, t - 1, dtype=np.int64),
        member=np.ones((t, n), dtype=bool),
    )


def _called(request: warmup.Request) -> bool:
    sigs = warmup._dispatcher(request[0]).signatures
    return any([str(a.dtype) for a in sig if hasattr(a, "ndim") and a.ndim == 2] == list(request[1]) for sig in sigs)


def test_requests_match_what_the_engine_calls() -> None:
    for exprs in (dict(alpha158().features) | dict(alpha158().labels), MIXED):
        evaluate(_panel(), exprs)
        requests = warmup.requests_for(exprs.values())
        assert requests and all(_called(r) for r in requests), [r for r in requests if not _called(r)]
    assert ("roll_mean_sum", ("float64",)) in warmup.requests_for([MIXED["A"]])
    assert ("shift", ("float64",)) in warmup.requests_for([MIXED["B"]])
    assert ("roll_corr_cov", ("float32", "float64")) in warmup.requests_for([MIXED["C"]])


def test_balance_puts_every_request_in_one_group() -> None:
    reqs = warmup.requests_for(dict(alpha158().features).values())
    groups = warmup._balance(reqs, 3)
    assert len(groups) == 3 and sorted(r for g in groups for r in g) == sorted(reqs)


CHILD = r"""
import json, sys
from app.features import warmup
exprs = ["Count($close, 3)", "$close > 1", "Ref($close, 1)"]
first = warmup.precompile(exprs, jobs=2)
print(json.dumps({"first": first, "second": warmup.precompile(exprs, jobs=2)}))
"""


def test_precompile_fills_a_cold_cache_once(tmp_path: Path) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted((name, tuple(dtypes)) for name, dtypes in result["first"]) == [
        ("mask_outside", ("float32",)),
        ("roll_count", ("float32",)),
        ("shift", ("float32",)),
    ]
    assert result["second"] == []
    names = {p.name.split("-")[0] for p in (tmp_path / "numba").rglob("*.nbi")}
    assert {"kernels.roll_count", "kernels.mask_outside", "kernels.shift"} <= names
