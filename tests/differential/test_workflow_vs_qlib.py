"""The LightGBM and DoubleEnsemble Alpha158 workflows, through `qtrain run` and through Qlib 0.9.7 on one store.

Qlib's side is ``tests/qlib_ref/workflow.py``: its benchmark workflow task (Alpha158 handler, DatasetH, LGBModel /
DEnsembleModel, SignalRecord, SigAnaRecord, PortAnaRecord with TopkDropout, costs and a benchmark), laid out as
Qlib's benchmark YAML files lay it out, with NumPy's global RNG seeded before each fit and two orders that Qlib
takes from Python's string hashing (DoubleEnsemble's selected features, the backtest's holdings) fixed as qtrain
fixes them (see that script). Both sides must give the same boosters (identical predictions, bit for bit), the
same learning curves and the same IC and backtest figures, to the last bit.

The market is the synthetic one with listings and delistings mid-period, suspensions (NaN rows), limit days and
factor steps, plus planted flat stretches (equal prices and volumes for twelve bars) and one-price bars
(open = high = low = close). The models are Qlib's benchmark configurations made small (few leaves, early
stopping on a short, flat validation curve, where one ulp of difference changes the model).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from app.data.binfile import read_bin, write_bin
from app.data.store import QlibStore
from app.data.synth import FIELDS, SynthSpec, write_synth_market
from app.dataset.dataset import Dataset
from app.dataset.views import ProcessedViews
from app.models.base import load_model
from app.tracking.manager import ExpManager
from app.tracking.recorder import Recorder
from tests.conftest import REF_DIR

pytestmark = [pytest.mark.qlib, pytest.mark.slow]

SEED = 12
FLAT_DAYS = 12
MARKET = "synth"
BENCHMARK = "SH000300"
# Qlib's LightGBM benchmark parameters, with leaves, depth and regularisation scaled to ~5k training rows
PARAMS: dict[str, float | int] = {
    "colsample_bytree": 0.8879,
    "learning_rate": 0.05,
    "subsample": 0.8789,
    "lambda_l1": 1.0,
    "lambda_l2": 10.0,
    "max_depth": 6,
    "num_leaves": 15,
}
ROUNDS, EARLY_STOP = 300, 20
SUB_WEIGHTS = [1, 0.6, 0.4]  # unequal: Qlib's loss_values are weighted, its feature selection's re-prediction is not
TOPK, N_DROP = 10, 2
EXCHANGE = {"limit_threshold": 0.095, "deal_price": "close", "open_cost": 0.0005, "close_cost": 0.0015, "min_cost": 5}
MODELS = ("lgbm", "double_ensemble")


def write_awkward_market(root: Path) -> None:
    """The synthetic market (40 stocks × 360 days) with flat stretches and one-price bars planted."""
    write_synth_market(root, SynthSpec(instruments=40, days=360, seed=SEED, suspensions_per_year=3.0, signal=2.0))
    cal = QlibStore(root).calendar()
    rng = np.random.default_rng(SEED)
    symbols = [line.split("\t")[0] for line in (root / "instruments" / f"{MARKET}.txt").read_text().splitlines()]
    flat = set(rng.choice(len(symbols), size=8, replace=False).tolist())
    for col, symbol in enumerate(symbols):
        folder = root / "features" / symbol.lower()
        stored = {f: read_bin(folder / f"{f}.day.bin", len(cal)) for f in FIELDS}
        start = stored["close"][0]
        v = {f: values.astype(np.float64) for f, (_, values) in stored.items()}
        n = len(v["close"])
        if col in flat and n > 3 * FLAT_DAYS:
            # the price and the volume stop moving: every rolling window over the stretch is flat
            a = int(rng.integers(FLAT_DAYS, n - 2 * FLAT_DAYS))
            before = v["close"][:a][~np.isnan(v["close"][:a])]
            window = slice(a, a + FLAT_DAYS)
            traded = ~np.isnan(v["close"][window])
            for f in ("open", "high", "low", "close", "vwap"):
                v[f][window] = np.where(traded, before[-1], np.nan)
            v["volume"][window] = np.where(traded, v["volume"][a - 1], np.nan)
        one_price = (rng.random(n) < 0.02) & ~np.isnan(v["close"])
        for f in ("open", "high", "low", "vwap"):
            v[f][one_price] = v["close"][one_price]
        previous = pd.Series(v["close"]).ffill().shift(1).to_numpy()
        v["change"] = v["close"] / previous - 1.0  # against the last traded close, NaN while suspended
        for f in FIELDS:
            write_bin(folder / f"{f}.day.bin", start, v[f].astype(np.float32))


def segments(root: Path) -> dict[str, list[str]]:
    cal = QlibStore(root).calendar()
    spans = {"train": (0, 149), "valid": (150, 229), "test": (230, len(cal) - 3)}  # the backtest needs a next bar
    return {name: [str(cal[a].date()), str(cal[b].date())] for name, (a, b) in spans.items()}


def qlib_config(root: Path, segs: dict[str, list[str]]) -> dict[str, Any]:
    """Qlib's workflow_config_{lightgbm,doubleensemble_early_stop}_Alpha158.yaml, on this store and segments."""
    handler = {
        "class": "Alpha158",
        "module_path": "qlib.contrib.data.handler",
        "kwargs": {
            "start_time": segs["train"][0],
            "end_time": segs["test"][1],
            "fit_start_time": segs["train"][0],
            "fit_end_time": segs["train"][1],
            "instruments": MARKET,
        },
    }
    dataset = {
        "class": "DatasetH",
        "module_path": "qlib.data.dataset",
        "kwargs": {"handler": handler, "segments": segs},
    }
    port = {
        "strategy": {
            "class": "TopkDropoutStrategy",
            "module_path": "qlib.contrib.strategy",
            "kwargs": {"signal": "<PRED>", "topk": TOPK, "n_drop": N_DROP},
        },
        "backtest": {
            "start_time": segs["test"][0],
            "end_time": segs["test"][1],
            "account": 100000000,
            "benchmark": BENCHMARK,
            "exchange_kwargs": EXCHANGE,
        },
    }
    records = [
        {"class": "SignalRecord", "module_path": "qlib.workflow.record_temp",
         "kwargs": {"model": "<MODEL>", "dataset": "<DATASET>"}},
        {"class": "SigAnaRecord", "module_path": "qlib.workflow.record_temp",
         "kwargs": {"ana_long_short": False, "ann_scaler": 252}},
        {"class": "PortAnaRecord", "module_path": "qlib.workflow.record_temp", "kwargs": {"config": port}},
    ]  # fmt: skip
    lgbm = {
        "class": "LGBModel",
        "module_path": "qlib.contrib.model.gbdt",
        "kwargs": {"loss": "mse", "num_boost_round": ROUNDS, "early_stopping_rounds": EARLY_STOP, **PARAMS,
                   "num_threads": 1, "seed": 0},
    }  # fmt: skip
    double_ensemble = {
        "class": "DEnsembleModel",
        "module_path": "qlib.contrib.model.double_ensemble",
        "kwargs": {"base_model": "gbm", "loss": "mse", "num_models": 3, "enable_sr": True, "enable_fs": True,
                   "alpha1": 1, "alpha2": 1, "bins_sr": 10, "bins_fs": 5, "decay": 0.5,
                   "sample_ratios": [0.8, 0.7, 0.6, 0.5, 0.4], "sub_weights": SUB_WEIGHTS, "epochs": ROUNDS,
                   "early_stopping_rounds": EARLY_STOP, **PARAMS, "num_threads": 1, "verbosity": -1, "seed": 0},
    }  # fmt: skip
    return {
        "qlib_init": {"provider_uri": str(root), "region": "cn"},
        "numpy_seed": 0,
        "tasks": {
            name: {"model": model, "dataset": dataset, "record": records}
            for name, model in (("lgbm", lgbm), ("double_ensemble", double_ensemble))
        },
    }


def qtrain_overrides(root: Path, segs: dict[str, list[str]], model: str) -> list[str]:
    """`qtrain run` overrides for the same task."""
    spans = ",".join(f"{name}:[{a},{b}]" for name, (a, b) in segs.items())
    common = [
        "data=import", f"data.store.root={root}", f"data.market={MARKET}", f"data.benchmark={BENCHMARK}",
        f"data.segments={{{spans}}}", f"model={model}", "seed=0", "model.num_threads=1",
        f"model.early_stopping_rounds={EARLY_STOP}", *(f"model.{k}={v}" for k, v in PARAMS.items()),
        f"record.port_ana.config.topk={TOPK}", f"record.port_ana.config.n_drop={N_DROP}",
        f"+record.port_ana.config.start={segs['test'][0]}", f"+record.port_ana.config.end={segs['test'][1]}",
        *(f"record.port_ana.config.{k}={v}" for k, v in EXCHANGE.items() if k != "deal_price"),
        f"experiment_name={model}",
    ]  # fmt: skip
    if model == "lgbm":
        return [*common, f"model.num_boost_round={ROUNDS}"]
    return [
        *common,
        "model.num_models=3",
        f"model.epochs={ROUNDS}",
        f"model.sub_weights=[{','.join(map(str, SUB_WEIGHTS))}]",
    ]


@dataclass
class Workflows:
    store: Path
    qlib: Path  # workflow.py's output: <model>/pred.parquet, metrics.json, ...
    runs: dict[str, Recorder]  # qtrain's MLflow run per model


@pytest.fixture(scope="module")
def workflows(tmp_path_factory: pytest.TempPathFactory, qlib_python: Path) -> Workflows:
    base = tmp_path_factory.mktemp("workflow_vs_qlib")
    root = base / "store"
    write_awkward_market(root)
    segs = segments(root)
    (base / "qlib.json").write_text(json.dumps(qlib_config(root, segs), indent=1))
    with open(base / "qlib.log", "w") as log:  # Qlib runs meanwhile, on the other core
        reference = subprocess.Popen(
            [qlib_python, REF_DIR / "workflow.py", base / "qlib.json", base / "qlib", "--dump-features"],
            stdout=log, stderr=subprocess.STDOUT, cwd=base,
        )  # fmt: skip
        try:
            work = base / "qtrain"
            work.mkdir()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("QTRAIN_", "MLFLOW_"))}
            qtrain = Path(sys.executable).with_name("qtrain")
            for model in MODELS:
                out = subprocess.run(
                    [qtrain, "run", *qtrain_overrides(root, segs, model)],
                    cwd=work, env=env, capture_output=True, text=True, timeout=600,
                )  # fmt: skip
                assert out.returncode == 0, f"qtrain run ({model}) failed:\n{out.stderr[-4000:]}"
            code = reference.wait(timeout=600)
        finally:
            reference.kill()
            reference.wait()
    assert code == 0, f"workflow.py failed:\n{(base / 'qlib.log').read_text()[-4000:]}"
    manager = ExpManager(f"sqlite:///{work / 'mlflow.db'}")
    runs = {}
    for model in MODELS:
        (run_id,) = manager.search_records([model])["run_id"]
        runs[model] = manager.get_recorder(run_id)
    return Workflows(root, base / "qlib", runs)


def _differences(ours: pd.DataFrame, theirs: pd.DataFrame) -> dict[str, int]:
    """Column -> number of cells that differ (NaN equals NaN; float32 compared as float32)."""
    assert list(ours.columns) == list(theirs.columns) and ours.index.equals(theirs.index)
    a, b = ours.to_numpy(), theirs.to_numpy()
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    return {str(c): int(n) for c, n in zip(ours.columns, (~same).sum(axis=0), strict=True) if n}


def _qtrain_views(run: Recorder) -> dict[str, pd.DataFrame]:
    """The run's train/valid learn view (features, label) and test infer view, as Qlib's dumps lay them out."""
    from app.config.compose import build_components
    from app.workflow.spec import TaskSpec

    spec = TaskSpec.from_mapping(run.load_object("spec"))
    components = build_components(spec)
    dataset = components.dataset.build(components.store)
    views = {}
    for segment in ("train", "valid"):
        frame = dataset.prepare(segment, ["feature", "label"], view="learn")
        views[segment] = frame.set_axis([name for _, name in frame.columns], axis=1)
    views["test"] = dataset.prepare("test", "feature", view="infer")
    return views


def test_the_market_has_the_awkward_cases(workflows: Workflows) -> None:
    panel = QlibStore(workflows.store).load(["close", "high", "low", "volume"], market=MARKET)
    close, stored = panel.values["close"], panel.stored()
    traded = stored & ~np.isnan(close)
    flat = traded[4:] & (close[4:] == close[3:-1]) & (close[3:-1] == close[2:-2]) & (close[2:-2] == close[1:-3])
    flat &= close[1:-3] == close[:-4]  # five equal closes in a row
    assert flat[: 150 - 4].any() and flat[230 - 4 :].any()  # in the train and the test segment
    assert (traded & (panel.values["high"] == panel.values["low"])).sum() > 100  # one-price bars
    assert (stored & np.isnan(close)).sum() > 50  # suspended: rows with NaN bars
    first, last = stored.argmax(axis=0), len(stored) - 1 - stored[::-1].argmax(axis=0)
    assert (first > 0).sum() >= 4 and (last < len(stored) - 1).sum() >= 2  # listings and delistings mid-period


def test_learn_and_infer_matrices_are_qlibs(workflows: Workflows) -> None:
    """Alpha158, its label, DropnaLabel and CSZScoreNorm(label): the matrices the models see, cell for cell."""
    ours = _qtrain_views(workflows.runs["lgbm"])
    differing = {}
    for segment, frame in ours.items():
        theirs = pd.read_parquet(workflows.qlib / "lgbm" / f"{segment}.parquet")
        assert set(frame.dtypes) == set(theirs.dtypes) == {np.dtype(np.float32)}
        differing |= {f"{segment}.{c}": n for c, n in _differences(frame, theirs).items()}
    assert not differing, f"cells that differ from Qlib's: {differing}"


def _history(run: Recorder, key: str) -> list[float]:
    return [m.value for m in sorted(run.get_metric_history(key), key=lambda m: m.step)]


def _trees(model_text: str) -> str:
    """A LightGBM model's trees (the header's feature names and parameters differ between the two sides)."""
    return model_text[model_text.index("Tree=0") : model_text.index("end of trees")]


@pytest.mark.parametrize("model", MODELS)
def test_workflow_matches_qlib(workflows: Workflows, model: str) -> None:
    run, ref = workflows.runs[model], workflows.qlib / model
    pred = run.load_object("pred")["score"]
    theirs = pd.read_parquet(ref / "pred.parquet")["score"]
    assert pred.index.equals(theirs.index) and len(pred) > 2000
    assert np.array_equal(pred.to_numpy(), theirs.to_numpy()), (
        f"predictions differ on {int((pred.to_numpy() != theirs.to_numpy()).sum())} of {len(pred)} rows "
        f"(largest {np.abs(pred.to_numpy() - theirs.to_numpy()).max():.3g}); whether the features differ: "
        "test_learn_and_infer_matrices_are_qlibs"
    )

    # the same boosters: trees, rounds kept, features and learning curves
    fitted = load_model(run.load_object("model"))
    doc = json.loads((ref / "model.json").read_text())
    boosters = getattr(fitted, "_boosters", None) or [fitted._booster]  # type: ignore[attr-defined]
    assert [b.num_trees() for b in boosters] == [b["num_trees"] for b in doc["boosters"]]
    for k, booster in enumerate(boosters):
        assert _trees(booster.model_to_string()) == _trees((ref / f"booster_{k}.txt").read_text()), f"booster {k}"
    curves = json.loads((ref / "metrics.json").read_text())["curves"]
    if model == "lgbm":
        assert _history(run, "train.l2") == curves["l2.train"] and _history(run, "valid.l2") == curves["l2.valid"]
        assert EARLY_STOP < len(curves["l2.valid"]) < ROUNDS  # stopped early
    else:
        assert fitted.sub_features == [b["features"] for b in doc["boosters"]]  # type: ignore[attr-defined]
        assert len({len(f) for f in fitted.sub_features}) == 3  # type: ignore[attr-defined]  # FS dropped features
        for k, booster in enumerate(boosters):  # each stopped early: the rounds after the kept ones are the patience
            assert len(_history(run, f"sub{k + 1}.valid.l2")) == booster.num_trees() + EARLY_STOP < ROUNDS

    # IC, Rank IC and the backtest's risk figures, as Qlib's records log them
    expected = {k: v for k, v in json.loads((ref / "metrics.json").read_text()).items() if k != "curves"}
    expected = {k: v for k, v in expected.items() if not k.startswith("l2.")}
    metrics = run.list_metrics()
    assert {"IC", "Rank IC", "1day.excess_return_with_cost.annualized_return"} <= set(expected) <= set(metrics)
    differ = {
        k: (metrics[k], v)
        for k, v in expected.items()
        if not (metrics[k] == v or (v is None and metrics[k] != metrics[k]))
    }
    assert not differ, f"metrics (ours, Qlib's) that differ: {differ}"
    report = run.load_object("portfolio_analysis/report_normal_1day")
    ref_report = pd.read_parquet(ref / "report.parquet")
    assert report.index.equals(pd.DatetimeIndex(ref_report.index, name="datetime"))
    assert not _differences(report[list(ref_report.columns)], ref_report)
    assert (report["cost"] > 0).sum() > len(report) / 2 and expected["IC"] > 0.02  # it trades, on a signal


def _dataset_of(ref: Path, segs: dict[str, list[str]]) -> Dataset:
    """A Dataset whose learn and infer views are Qlib's own matrices (workflow.py --dump-features)."""

    def grouped(frame: pd.DataFrame) -> pd.DataFrame:
        groups = ["label" if c == "LABEL0" else "feature" for c in frame.columns]
        return frame.set_axis(pd.MultiIndex.from_arrays([groups, frame.columns]), axis=1)

    learn = grouped(pd.concat([pd.read_parquet(ref / f"{s}.parquet") for s in ("train", "valid")]))
    infer = grouped(pd.read_parquet(ref / "test.parquet"))
    raw = pd.concat([learn["feature"], infer["feature"]]).pipe(grouped)
    views = ProcessedViews(raw=raw, infer=infer, learn=learn, fit_start=segs["train"][0], fit_end=segs["train"][1])
    return Dataset(views, segs)


@pytest.mark.parametrize("model", MODELS)
def test_the_model_on_qlibs_matrices_is_qlibs_model(workflows: Workflows, model: str) -> None:
    """qtrain's model of the run's spec, fitted on Qlib's own learn matrices, predicts Qlib's scores bit for bit
    (what stays true whatever the feature engine does)."""
    from hydra.utils import instantiate

    spec = workflows.runs[model].load_object("spec")
    fitted = instantiate(spec["model"], _convert_="all")
    dataset = _dataset_of(workflows.qlib / model, spec["data"]["segments"])
    fitted.fit(dataset)
    theirs = pd.read_parquet(workflows.qlib / model / "pred.parquet")["score"]
    ours = fitted.predict(dataset)
    assert ours.index.equals(theirs.index) and np.array_equal(ours.to_numpy(), theirs.to_numpy())
