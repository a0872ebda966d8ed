from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from app.core.errors import ConfigError
from app.workflow.spec import TaskSpec

SPEC = {
    "seed": 0,
    "model": {"_target_": "app.models.lgbm.LightGBMModel", "learning_rate": 0.2, "num_leaves": 210},
    "dataset": {"segments": {"train": ["2015-01-05", "2018-12-31"], "test": ["2020-01-02", "2020-12-15"]}},
    "records": [{"_target_": "app.evaluation.records.SignalRecord"}],
}
REORDERED = {
    "records": [{"_target_": "app.evaluation.records.SignalRecord"}],
    "dataset": {"segments": {"test": ["2020-01-02", "2020-12-15"], "train": ["2015-01-05", "2018-12-31"]}},
    "model": {"num_leaves": 210.0, "learning_rate": 2e-1, "_target_": "app.models.lgbm.LightGBMModel"},
    "seed": 0.0,
}


def test_same_spec_same_hash_whatever_key_order_or_number_spelling() -> None:
    assert TaskSpec.from_mapping(SPEC).hash == TaskSpec.from_mapping(REORDERED).hash
    assert TaskSpec.from_mapping(SPEC).to_json() == TaskSpec.from_mapping(REORDERED).to_json()


def test_same_hash_across_processes() -> None:
    code = (
        "import json, sys\nfrom app.workflow.spec import TaskSpec\n"
        "print(TaskSpec.from_mapping(json.loads(sys.argv[1])).hash)"
    )
    hashes = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(REORDERED)], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-2000:]
        hashes.add(out.stdout.strip())
    assert hashes == {TaskSpec.from_mapping(SPEC).hash}


@pytest.mark.parametrize(
    "change",
    [{"seed": 1}, {"model": {**SPEC["model"], "learning_rate": 0.21}}, {"records": []}],  # type: ignore[dict-item]
)
def test_different_spec_different_hash(change: dict[str, object]) -> None:
    assert TaskSpec.from_mapping({**SPEC, **change}).hash != TaskSpec.from_mapping(SPEC).hash


def test_bool_is_not_a_number() -> None:
    assert TaskSpec.from_mapping({"x": True}).hash != TaskSpec.from_mapping({"x": 1}).hash


def test_json_round_trip_and_flat_params() -> None:
    spec = TaskSpec.from_mapping(SPEC)
    assert TaskSpec.from_json(spec.to_json()) == spec
    flat = spec.flat_params()
    assert flat["model.learning_rate"] == "0.2" and flat["seed"] == "0"
    assert flat["dataset.segments.train"] == '["2015-01-05", "2018-12-31"]'


def test_bad_values_name_their_path() -> None:
    with pytest.raises(ConfigError, match=r"spec.model.lr is nan"):
        TaskSpec.from_mapping({"model": {"lr": float("nan")}})
    with pytest.raises(ConfigError, match=r"spec.model.net = <object .*> of type object is not JSON"):
        TaskSpec.from_mapping({"model": {"net": object()}})
    with pytest.raises(ConfigError, match=r"task spec is not valid JSON"):
        TaskSpec.from_json("{nope")
    with pytest.raises(ConfigError, match=r"must be a JSON object, got list"):
        TaskSpec.from_json("[1, 2]")
