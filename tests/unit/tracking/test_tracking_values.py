"""Params flattening/stringifying/truncation, tag values and the metric value rules."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from app.core.errors import ConfigError
from app.tracking import values
from app.tracking.values import TRUNCATED, clean_metrics, flatten_params, tag_values


def test_nested_params_are_flattened_with_dots_and_stringified() -> None:
    params = {
        "model": {"class": "LGBModel", "kwargs": {"lr": 0.1, "layers": [64, 32], "loss": None}},
        "seed": 7,
        "shuffle": True,
        "empty": {},
        "path": Path("/data/x"),
    }
    assert flatten_params(params) == {
        "model.class": "LGBModel",
        "model.kwargs.lr": "0.1",
        "model.kwargs.layers": "[64, 32]",
        "model.kwargs.loss": "None",
        "seed": "7",
        "shuffle": "True",
        "empty": "{}",
        "path": "/data/x",
    }


def test_long_param_and_tag_values_are_truncated_to_mlflow_limits(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        flat = flatten_params({"blob": "x" * 7000})
    assert len(flat["blob"]) == values.MAX_PARAM_VAL_LENGTH == 6000
    assert flat["blob"].endswith(TRUNCATED)
    assert "blob" in caplog.text
    tags = tag_values({"note": "y" * 9000, "n": 3})
    assert len(tags["note"]) == values.MAX_TAG_VAL_LENGTH == 8000
    assert tags["n"] == "3"


def test_limits_match_mlflow() -> None:
    from mlflow.utils import validation

    assert values.MAX_PARAM_VAL_LENGTH == validation.MAX_PARAM_VAL_LENGTH
    assert values.MAX_TAG_VAL_LENGTH == validation.MAX_TAG_VAL_LENGTH
    assert values.MAX_ENTITY_KEY_LENGTH == validation.MAX_ENTITY_KEY_LENGTH
    assert values.MAX_METRICS_PER_BATCH == validation.MAX_METRICS_PER_BATCH
    assert values.MAX_PARAMS_TAGS_PER_BATCH == validation.MAX_PARAMS_TAGS_PER_BATCH


def test_same_flat_key_twice_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"'a\.b' is given twice"):
        flatten_params({"a.b": 1, "a": {"b": 2}})


def test_overlong_param_key_is_an_error_not_a_truncation() -> None:
    with pytest.raises(ConfigError, match="MLflow allows 250"):
        flatten_params({"k" * 251: 1})


def test_metrics_keep_nan_skip_inf_and_accept_numpy() -> None:
    clean = clean_metrics({"a": 1, "b": np.float32(0.5), "nan": float("nan"), "inf": math.inf, "ninf": -np.inf})
    assert clean.values["a"] == 1.0 and clean.values["b"] == 0.5
    assert math.isnan(clean.values["nan"])
    assert clean.skipped == ("inf", "ninf")
    assert "inf" not in clean.values


@pytest.mark.parametrize("bad", ["0.5", None, [1.0], b"1"])
def test_non_numeric_metric_names_its_key(bad: object) -> None:
    with pytest.raises(ConfigError, match="metric 'loss' has value"):
        clean_metrics({"loss": bad})
