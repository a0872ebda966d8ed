"""Synthetic markets as Datasets for model tests (session-scoped), and the daily IC used to judge scores.

Builders take pytest's ``tmp_path_factory`` and build once per session, however many test modules ask; wrap
them in a session fixture in the test module, e.g. ``return market.small_dataset(tmp_path_factory)``.

* ``small_*``: 40 instruments × 500 days with a doubled planted signal (``SynthSpec(signal=2.0)``): small and
  learnable, for the fast tests (train ~10k rows after DropnaLabel).
* ``qlib_namespace`` / ``QlibDataset``: Qlib 0.9.7's own model classes, run here, for differential tests.
* ``sample_dataset``: the default sample market (``SynthSpec()``: 100 × 1500 days, seed 0) with the acceptance
  segments; ~3 s to build, so only slow tests should ask for it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TypeVar, cast

import numpy as np
import pandas as pd
import pytest

from app.data.store import QlibStore
from app.data.synth import SynthSpec, write_synth_market
from app.dataset.dataset import Dataset
from app.dataset.handler import DataHandler, DatasetSpec
from app.dataset.processors import CSZScoreNorm, DropnaLabel
from app.features.handlers import FeatureSet, alpha158

T = TypeVar("T")
_BUILT: dict[tuple[str, Path], object] = {}

SMALL_SPEC = SynthSpec(instruments=40, days=500, seed=1, signal=2.0)
SAMPLE_SEGMENTS = {
    "train": ["2015-01-05", "2018-12-31"],
    "valid": ["2019-01-02", "2019-12-31"],
    "test": ["2020-01-02", "2020-12-15"],
}
# Qlib's LightGBM benchmark parameters (workflow_config_lightgbm_Alpha158.yaml)
# 20 Alpha158 columns that carry the small market's planted signal (LightGBM's top gain on it)
SIGNAL20_COLUMNS = (
    "KLOW", "VMA60", "RESI20", "MA5", "ROC5", "MIN5", "MAX5", "CORR60", "QTLD10", "MIN10",
    "MAX10", "VSUMD20", "OPEN0", "STD5", "VSUMD30", "IMIN20", "RESI5", "RSQR5", "RESI60", "VSTD60",
)  # fmt: skip
BENCHMARK_PARAMS: Mapping[str, float | int] = {
    "colsample_bytree": 0.8879,
    "learning_rate": 0.2,
    "subsample": 0.8789,
    "lambda_l1": 205.6999,
    "lambda_l2": 580.9768,
    "max_depth": 8,
    "num_leaves": 210,
}


def small_segments(store: QlibStore) -> dict[str, list[str]]:
    """60 / 20 / 20 % of the small market's calendar as train / valid / test."""
    cal = store.calendar()
    n = len(cal)
    cut1, cut2 = int(n * 0.6), int(n * 0.8)
    spans = {"train": (0, cut1), "valid": (cut1 + 1, cut2), "test": (cut2 + 1, n - 1)}
    return {name: [str(cal[a].date()), str(cal[b].date())] for name, (a, b) in spans.items()}


def build_dataset(store: QlibStore, features: FeatureSet, segments: Mapping[str, Sequence[str]]) -> Dataset:
    """Qlib's Alpha158 handler setup: no infer processors, learn = DropnaLabel + CSZScoreNorm(label)."""
    cal = store.calendar()
    handler = DataHandler(
        features=features,
        market="synth",
        start_time=str(cal[0].date()),
        end_time=str(cal[-1].date()),
        fit_start_time=segments["train"][0],
        fit_end_time=segments["train"][1],
        learn_processors=[DropnaLabel(), CSZScoreNorm(fields_group="label")],
    )
    return DatasetSpec(handler=handler, segments=segments).build(store)


def with_segments(dataset: Dataset, segments: Mapping[str, Sequence[str]]) -> Dataset:
    """The same processed views under other segments (e.g. without ``valid``)."""
    return Dataset(dataset.views, segments)


def daily_ic(score: pd.Series, label: pd.Series) -> tuple[float, float]:
    """Mean daily Pearson IC and Spearman rank IC of ``score`` against ``label`` (days with < 2 pairs or a
    constant side are skipped)."""
    df = pd.DataFrame({"score": score, "label": label}).dropna()
    ranked = df.groupby(level="datetime").rank()

    def mean_corr(frame: pd.DataFrame) -> float:
        values = []
        for _, day in frame.groupby(level="datetime"):
            a, b = day["score"].to_numpy(), day["label"].to_numpy()
            if len(a) > 1 and a.std() > 0 and b.std() > 0:
                values.append(float(np.corrcoef(a, b)[0, 1]))
        return float(np.mean(values)) if values else float("nan")

    return mean_corr(df), mean_corr(ranked)


def raw_label(dataset: Dataset, segment: str = "test") -> pd.Series:
    """The raw (unprocessed) label of ``segment``, as evaluation reads it."""
    return dataset.prepare(segment, "label", view="raw").iloc[:, 0]


def _cached(name: str, factory: pytest.TempPathFactory, build: Callable[[Path], T]) -> T:
    """Build once per test session (keyed by the session's temp root), under that root."""
    key = (name, factory.getbasetemp())
    if key not in _BUILT:
        _BUILT[key] = build(factory.mktemp(name))
    return cast(T, _BUILT[key])


def small_market(factory: pytest.TempPathFactory) -> QlibStore:
    """The small planted-signal market on disk."""

    def build(tmp: Path) -> QlibStore:
        write_synth_market(tmp / "store", SMALL_SPEC)
        return QlibStore(tmp / "store")

    return _cached("model_market", factory, build)


def small_dataset(factory: pytest.TempPathFactory, *, columns: Sequence[str] | None = None) -> Dataset:
    """Alpha158 on the small market with train / valid / test; ``columns``: only those Alpha158 columns
    (e.g. :data:`SIGNAL20_COLUMNS` for cheap feature-selection tests)."""
    store = small_market(factory)
    features = alpha158() if columns is None else alpha158(columns=columns)
    name = "model_dataset" if columns is None else f"model_dataset_{zlib.crc32(' '.join(columns).encode()):08x}"
    return _cached(name, factory, lambda _: build_dataset(store, features, small_segments(store)))


def sample_dataset(factory: pytest.TempPathFactory) -> Dataset:
    """Alpha158 on the default sample market (100 × 1500, seed 0) with the acceptance segments."""

    def build(tmp: Path) -> Dataset:
        write_synth_market(tmp / "store", SynthSpec())
        return build_dataset(QlibStore(tmp / "store"), alpha158(), SAMPLE_SEGMENTS)

    return _cached("sample_market", factory, build)


def qlib_namespace(qlib_python: Path, filename: str, stubs: Mapping[str, object]) -> dict[str, object]:
    """Run Qlib 0.9.7's ``qlib/contrib/model/<filename>`` in this venv with its qlib imports replaced by ``stubs``
    (its model classes need only numpy, pandas and lightgbm), and return the module namespace."""
    venv = qlib_python.parents[1]
    path = next(venv.glob(f"lib/python*/site-packages/qlib/contrib/model/{filename}"))
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith(("from ...", "from qlib"))]
    namespace: dict[str, object] = {"DatasetH": object, "DataHandlerLP": SimpleNamespace(DK_L="learn", DK_I="infer")}
    namespace.update(stubs)
    exec(compile("\n".join(lines), str(path), "exec"), namespace)
    return namespace


class QlibDataset:
    """The slice of Qlib's DatasetH that its models call, over one of our Datasets."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.segments = dataset.segments

    def prepare(
        self, segments: str | list[str], col_set: str | list[str] = "feature", data_key: str = "infer"
    ) -> object:
        if isinstance(segments, list):
            return [self.dataset.prepare(s, col_set, view=data_key) for s in segments]  # type: ignore[arg-type]
        return self.dataset.prepare(segments, col_set, view=data_key)  # type: ignore[arg-type]


class RecordingCurves:
    """A CurveRecorder that keeps every call (a whole series arrives as one call per step)."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, float], int | None]] = []

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.calls.append((dict(metrics), step))

    def log_series(self, series: Mapping[str, Sequence[float]]) -> None:
        for step in range(max((len(v) for v in series.values()), default=0)):
            self.log_metrics({k: float(v[step]) for k, v in series.items() if step < len(v)}, step=step)

    @property
    def steps(self) -> list[int | None]:
        return [step for _, step in self.calls]

    def curve(self, key: str) -> list[float]:
        return [m[key] for m, _ in self.calls if key in m]
