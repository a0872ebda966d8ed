"""Every conf/dataset option composes and instantiates into a DatasetSpec."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from app.dataset.handler import DatasetSpec
from app.dataset.processors import CSRankNorm, Fillna, FilterCol, RobustZScoreNorm
from app.features.handlers import GRU20_COLUMNS

CONF = Path(__file__).resolve().parents[2] / "conf"
OPTIONS = sorted(p.stem for p in (CONF / "dataset").glob("*.yaml"))


def _spec(option: str) -> DatasetSpec:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"dataset={option}"])
    spec = instantiate(cfg.dataset)
    assert isinstance(spec, DatasetSpec)
    return spec


@pytest.mark.parametrize("option", OPTIONS)
def test_every_dataset_option_instantiates(option: str) -> None:
    spec = _spec(option)
    h = spec.handler
    assert (h.start_time, h.end_time) == (spec.segments["train"][0], spec.segments["test"][1])
    assert (h.fit_start_time, h.fit_end_time) == tuple(spec.segments["train"])


def test_gru20_dataset_mirrors_qlib_benchmark() -> None:
    spec = _spec("alpha158_gru20")
    assert spec.step_len == 20 and len(spec.handler.features.features) == 158
    kinds = [type(p) for p in spec.handler.infer_processors]
    assert kinds == [FilterCol, RobustZScoreNorm, Fillna]
    assert list(spec.handler.infer_processors[0].col_list) == list(GRU20_COLUMNS)
    assert isinstance(spec.handler.learn_processors[1], CSRankNorm)


def test_alpha360_has_360_columns() -> None:
    assert len(_spec("alpha360").handler.features.features) == 360
