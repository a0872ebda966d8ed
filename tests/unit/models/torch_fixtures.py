"""Small synthetic datasets and helpers for the torch model tests (built once per session, cached).

The market plants a learnable signal (``SynthSpec.signal=3``: short-term reversal and volume-revealed drift),
30 instruments x 400 days: train 180 days, valid 70, test ~88.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from app.data.store import QlibStore
from app.data.synth import SynthSpec, write_synth_market
from app.dataset.dataset import Dataset, TSDataset
from app.dataset.handler import DataHandler, DatasetSpec
from app.dataset.processors import CSRankNorm, DropnaLabel, Fillna, RobustZScoreNorm
from app.features.handlers import GRU20_COLUMNS, FeatureSet, alpha158, alpha360
from app.models.base import write_model_json


@dataclass(frozen=True)
class SynthData:
    """``ts20``: Alpha158's 20 GRU columns with step_len 20; ``tab360``: Alpha360 rows."""

    ts20: TSDataset
    tab360: Dataset


_CACHE: dict[str, SynthData] = {}


def synth_data(tmp_path_factory: pytest.TempPathFactory) -> SynthData:
    """The session's datasets (built on first use)."""
    if "data" not in _CACHE:
        root = tmp_path_factory.mktemp("torch_market") / "store"
        write_synth_market(root, SynthSpec(instruments=30, days=400, seed=1, signal=3.0))
        store = QlibStore(root)
        ts20 = _build(store, alpha158(columns=GRU20_COLUMNS), step_len=20)
        tab360 = _build(store, alpha360(), step_len=None)
        assert isinstance(ts20, TSDataset)
        _CACHE["data"] = SynthData(ts20=ts20, tab360=tab360)
    return _CACHE["data"]


def _build(store: QlibStore, features: FeatureSet, step_len: int | None) -> Dataset:
    cal = store.calendar()

    def day(i: int) -> str:
        return str(cal[i].date())

    handler = DataHandler(
        features=features,
        market="all",
        start_time=day(0),
        end_time=day(-1),
        fit_start_time=day(60),
        fit_end_time=day(239),
        infer_processors=[RobustZScoreNorm(fields_group="feature", clip_outlier=True), Fillna(fields_group="feature")],
        learn_processors=[DropnaLabel(), CSRankNorm(fields_group="label")],
    )
    segments = {"train": [day(60), day(239)], "valid": [day(240), day(309)], "test": [day(310), day(-3)]}
    return DatasetSpec(handler=handler, segments=segments, step_len=step_len).build(store)


def without_valid(ds: Dataset) -> Dataset:
    """The same views and segments, minus ``valid``."""
    segments = {k: (v.start, v.end) for k, v in ds.segments.items() if k != "valid"}
    if isinstance(ds, TSDataset):
        return TSDataset(ds.views, segments, step_len=ds.step_len)
    return Dataset(ds.views, segments)


def nan_valid_labels(ds: Dataset) -> Dataset:
    """The same dataset with every learn-view label in ``valid`` set to NaN (so the valid loss is NaN)."""
    learn = ds.views.learn.copy()
    seg = ds.segments["valid"]
    dates = learn.index.get_level_values("datetime")
    learn.loc[(dates >= seg.start) & (dates <= seg.end), "label"] = np.nan
    views = dataclasses.replace(ds.views, learn=learn)
    segments = {k: (v.start, v.end) for k, v in ds.segments.items()}
    if isinstance(ds, TSDataset):
        return TSDataset(views, segments, step_len=ds.step_len)
    return Dataset(views, segments)


def daily_ic(scores: pd.Series, ds: Dataset, segment: str = "test") -> float:
    """Mean daily Spearman IC of ``scores`` against the raw label."""
    label = ds.prepare(segment, "label", view="raw").iloc[:, 0]
    frame = pd.DataFrame({"score": scores, "label": label}).dropna()
    ranked = frame.groupby(level="datetime").rank()
    ic = ranked.groupby(level="datetime").apply(lambda g: g["score"].corr(g["label"]))
    return float(ic.mean())


def write_weights_model(
    directory: Path, registry: str, params: Mapping[str, object], weights: Mapping[str, torch.Tensor], n_features: int
) -> Path:
    """A saved-model directory holding ``weights`` (e.g. from a checkpoint), in the format ``save`` writes."""
    write_model_json(directory, registry, params)
    state = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    save_file(state, str(directory / "weights.safetensors"), metadata={"n_features": str(n_features)})
    return directory


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny nets gain nothing from threads, and a busy machine makes torch's thread pool crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
