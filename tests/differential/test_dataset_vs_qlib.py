"""Processors, DataHandlerLP views and TSDataSampler windows: qtrain against Qlib 0.9.7 on the same frame."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from app.dataset.processors import (
    CSRankNorm,
    CSZFillna,
    CSZScoreNorm,
    DropCol,
    DropnaLabel,
    DropnaProcessor,
    Fillna,
    FilterCol,
    ProcessInf,
    RobustZScoreNorm,
    ZScoreNorm,
)
from app.dataset.timeseries import TSSampler
from app.dataset.views import ProcessedViews, ProcessType

pytestmark = [pytest.mark.qlib, pytest.mark.slow]

FIT = ("2020-01-01", "2020-01-31")
SEGMENT = ("2020-01-20", "2020-02-26")
STEP_LEN = 7

# Runs under .qlib-venv: argv = [in.parquet, out_dir]. Column names travel flattened as "group:name".
QLIB_SIDE = """
import sys
import numpy as np, pandas as pd
from qlib.data.dataset import TSDataSampler, TSDatasetH
from qlib.data.dataset.handler import DataHandlerLP
from qlib.data.dataset.loader import StaticDataLoader
src, out = sys.argv[1], sys.argv[2]
fs, fe = "{fs}", "{fe}"
df = pd.read_parquet(src)
df.columns = pd.MultiIndex.from_tuples([tuple(c.split(":")) for c in df.columns])
def P(name, **kw):
    return {{"class": name, "kwargs": kw}}
pipelines = {{
    "alpha158": ([], [P("DropnaLabel"), P("CSZScoreNorm", fields_group="label")]),
    "nn": ([P("ProcessInf"), P("FilterCol", fields_group="feature", col_list=["F4", "F0", "F1", "F5"]),
            P("RobustZScoreNorm", fields_group="feature", clip_outlier=True, fit_start_time=fs, fit_end_time=fe),
            P("Fillna", fields_group="feature")],
           [P("DropnaLabel"), P("CSRankNorm", fields_group="label")]),
    "misc": ([P("ProcessInf"), P("ZScoreNorm", fields_group="feature", fit_start_time=fs, fit_end_time=fe),
              P("CSZScoreNorm", fields_group="feature", method="robust"),
              P("RobustZScoreNorm", fields_group="label", clip_outlier=False, fit_start_time=fs, fit_end_time=fe)],
             [P("CSRankNorm", fields_group="feature"), P("Fillna")]),
    "mlp": ([P("DropCol", col_list=["F2"]), P("CSZFillna", fields_group="feature")],
            [P("DropCol", col_list=["F2"]), P("DropnaProcessor", fields_group="feature"), P("DropnaLabel"),
             P("CSZScoreNorm", fields_group="label")]),
}}
for name, (infer, learn) in pipelines.items():
    h = DataHandlerLP(data_loader=StaticDataLoader(df.copy()), infer_processors=infer, learn_processors=learn,
                      process_type=PROCESS_TYPES.get(name, "append"))
    for key in ("infer", "learn"):
        v = h.fetch(col_set="__raw", data_key=key).copy()
        v.columns = [":".join(c) for c in v.columns]
        v.astype("float64").to_parquet(f"{{out}}/{{name}}_{{key}}.parquet")
    if name == "nn":
        for key in ("infer", "learn"):
            cal = sorted(h.fetch(col_set="__raw", data_key="infer").index.get_level_values("datetime").unique())
            ext = TSDatasetH._extend_slice(slice(pd.Timestamp("{s0}"), pd.Timestamp("{s1}")), cal, {L})
            data = h.fetch(slice(ext.start, ext.stop), col_set=["feature", "label"], data_key=key)
            data = data.droplevel(0, axis=1)
            ts = TSDataSampler(data=data, start="{s0}", end="{s1}", step_len={L}, fillna_type="ffill+bfill")
            np.save(f"{{out}}/ts_{{key}}.npy", ts[list(range(len(ts)))].astype(np.float64))
            idx = ts.get_index()
            pd.DataFrame({{"d": idx.get_level_values(0), "i": idx.get_level_values(1)}}).to_parquet(
                f"{{out}}/ts_{{key}}_index.parquet")
""".format(fs=FIT[0], fe=FIT[1], s0=SEGMENT[0], s1=SEGMENT[1], L=STEP_LEN)


PROCESS_TYPES: dict[str, ProcessType] = {"mlp": "independent"}
QLIB_SIDE = f"PROCESS_TYPES = {PROCESS_TYPES!r}\n" + QLIB_SIDE


def raw_frame() -> pd.DataFrame:
    """30 instruments x 45 days: NaN, ±inf, ties, a constant column, NaN labels, absent rows."""
    rng = np.random.default_rng(3)
    idx = pd.MultiIndex.from_product(
        [pd.bdate_range("2020-01-01", periods=45), [f"S{i:03d}" for i in range(30)]], names=["datetime", "instrument"]
    )
    x = rng.normal(size=(len(idx), 6)).astype(np.float32)
    x[:, 1] = np.round(x[:, 1])
    x[rng.random(x.shape) < 0.1] = np.nan
    x[rng.random(x.shape) < 0.01] = np.inf
    x[rng.random(x.shape) < 0.01] = -np.inf
    x[:, 5] = 2.0
    label = rng.normal(size=len(idx)).astype(np.float32)
    label[rng.random(len(idx)) < 0.1] = np.nan
    cols = pd.MultiIndex.from_tuples([("feature", f"F{i}") for i in range(6)] + [("label", "LABEL0")])
    df = pd.DataFrame(np.column_stack([x, label]), index=idx, columns=cols)
    return df[rng.random(len(idx)) > 0.05]


def pipelines() -> dict[str, tuple[list[object], list[object]]]:
    fit = {"fit_start_time": FIT[0], "fit_end_time": FIT[1]}
    return {
        "alpha158": ([], [DropnaLabel(), CSZScoreNorm(fields_group="label")]),
        "nn": (
            [
                ProcessInf(),
                FilterCol(col_list=["F4", "F0", "F1", "F5"]),
                RobustZScoreNorm(fields_group="feature", clip_outlier=True, **fit),
                Fillna(fields_group="feature"),
            ],
            [DropnaLabel(), CSRankNorm(fields_group="label")],
        ),
        "misc": (
            [
                ProcessInf(),
                ZScoreNorm(fields_group="feature", **fit),
                CSZScoreNorm(fields_group="feature", method="robust"),
                RobustZScoreNorm(fields_group="label", clip_outlier=False, **fit),
            ],
            [CSRankNorm(fields_group="feature"), Fillna()],
        ),
        "mlp": (  # Qlib's MLP benchmark handler, process_type independent
            [DropCol(col_list=["F2"]), CSZFillna(fields_group="feature")],
            [
                DropCol(col_list=["F2"]),
                DropnaProcessor(fields_group="feature"),
                DropnaLabel(),
                CSZScoreNorm(fields_group="label"),
            ],
        ),
    }


def _same(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    a, b = ours.astype(np.float64), theirs.astype(np.float64)
    assert np.array_equal(np.isnan(a), np.isnan(b)), f"{what}: NaN pattern differs"
    assert np.array_equal(np.isinf(a), np.isinf(b)), f"{what}: inf pattern differs"
    fin = np.isfinite(a)
    np.testing.assert_allclose(a[fin], b[fin], rtol=1e-6, atol=1e-6, err_msg=what)


def test_views_and_windows_match_qlib(qlib_python: Path, tmp_path: Path) -> None:
    raw = raw_frame()
    flat = raw.set_axis([":".join(c) for c in raw.columns], axis=1)
    flat.to_parquet(tmp_path / "in.parquet")
    out = subprocess.run(
        [qlib_python, "-c", QLIB_SIDE, tmp_path / "in.parquet", tmp_path], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-4000:]
    built = {}
    for name, (infer, learn) in pipelines().items():
        procs: dict[str, Any] = {"infer_processors": infer, "learn_processors": learn}
        process_type = PROCESS_TYPES.get(name, "append")
        views = ProcessedViews.build(raw, **procs, fit_start=FIT[0], fit_end=FIT[1], process_type=process_type)
        built[name] = views
        for key in ("infer", "learn"):
            theirs = pd.read_parquet(tmp_path / f"{name}_{key}.parquet")
            ours = views.get(key)
            assert [":".join(c) for c in ours.columns] == list(theirs.columns), (name, key)
            assert ours.index.equals(theirs.index), (name, key)
            _same(ours.to_numpy(), theirs.to_numpy(), f"{name} {key}")
            if name == "mlp":  # DropCol, CSZFillna, DropnaProcessor and the float32 z-score: Qlib's to the bit
                assert np.array_equal(ours.to_numpy(np.float64), theirs.to_numpy(), equal_nan=True), key
    for key in ("infer", "learn"):
        sampler = TSSampler(
            built["nn"].get(key), start=pd.Timestamp(SEGMENT[0]), end=pd.Timestamp(SEGMENT[1]), step_len=STEP_LEN
        )
        batch = sampler.take(np.arange(len(sampler)))
        theirs = np.load(tmp_path / f"ts_{key}.npy")
        t_idx = pd.read_parquet(tmp_path / f"ts_{key}_index.parquet")
        order = pd.MultiIndex.from_arrays([t_idx["d"], t_idx["i"]]).get_indexer(batch.index)
        assert (order >= 0).all() and len(order) == len(theirs) == len(sampler)
        theirs = theirs[order]
        _same(batch.x, theirs[:, :, :-1], f"windows ({key})")
        _same(batch.y[:, 0], theirs[:, -1, -1], f"labels ({key})")
