"""LightGBMModel: Qlib's LGBModel semantics on synthetic markets, persistence, seeding and config errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.core.errors import ConfigError
from app.data.store import QlibStore
from app.dataset.dataset import Dataset
from app.models.base import Model, load_model
from app.models.lgbm import BOOSTER_FILE, LightGBMModel, booster_params
from tests.unit.models import market
from tests.unit.models.market import (
    BENCHMARK_PARAMS,
    QlibDataset,
    RecordingCurves,
    daily_ic,
    qlib_namespace,
    raw_label,
    small_segments,
    with_segments,
)

FAST = {"num_leaves": 15, "learning_rate": 0.1, "num_threads": 1}


@pytest.fixture(scope="session")
def market_store(tmp_path_factory: pytest.TempPathFactory) -> QlibStore:
    return market.small_market(tmp_path_factory)


@pytest.fixture(scope="session")
def market_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return market.small_dataset(tmp_path_factory)


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return market.sample_dataset(tmp_path_factory)


@pytest.fixture(scope="module")
def fitted(market_dataset: Dataset) -> tuple[LightGBMModel, RecordingCurves]:
    model = LightGBMModel(num_boost_round=200, early_stopping_rounds=10, **FAST)
    recorder = RecordingCurves()
    model.fit(market_dataset, recorder)
    return model, recorder


def test_positive_ic_on_planted_signal(fitted: tuple[LightGBMModel, RecordingCurves], market_dataset: Dataset) -> None:
    model, _ = fitted
    score = model.predict(market_dataset)
    ic, rank_ic = daily_ic(score, raw_label(market_dataset))
    assert ic > 0.03 and rank_ic > 0.03, (ic, rank_ic)


def test_predict_returns_named_series_on_infer_rows(
    fitted: tuple[LightGBMModel, RecordingCurves], market_dataset: Dataset
) -> None:
    model, _ = fitted
    score = model.predict(market_dataset, "valid")
    infer = market_dataset.prepare("valid", "feature", view="infer")
    assert score.name == "score" and score.dtype == np.float64
    assert score.index.equals(infer.index) and list(score.index.names) == ["datetime", "instrument"]
    assert np.isfinite(score.to_numpy()).all()


def test_early_stopping_keeps_the_best_iteration(
    fitted: tuple[LightGBMModel, RecordingCurves], market_dataset: Dataset, market_store: QlibStore
) -> None:
    model, recorder = fitted
    best = model.best_iteration
    assert best is not None and 1 <= best < 200
    valid = [m["valid.l2"] for m, _ in recorder.calls]
    assert len(valid) == best + 10  # stopped 10 rounds after the best one
    assert int(np.argmin(valid)) + 1 == best
    # the same training without a valid set, for exactly `best` rounds, gives the same scores
    no_valid = with_segments(market_dataset, without_valid(market_store))
    again = LightGBMModel(num_boost_round=best, **FAST)
    again.fit(no_valid)
    pd.testing.assert_series_equal(model.predict(market_dataset), again.predict(no_valid))


def without_valid(store: QlibStore) -> dict[str, list[str]]:
    return {k: v for k, v in small_segments(store).items() if k != "valid"}


def test_recorder_receives_train_and_valid_curves(fitted: tuple[LightGBMModel, RecordingCurves]) -> None:
    _, recorder = fitted
    steps = [step for _, step in recorder.calls]
    assert steps == list(range(len(steps)))
    assert all(set(m) == {"train.l2", "valid.l2"} for m, _ in recorder.calls)
    train = [m["train.l2"] for m, _ in recorder.calls]
    assert train[-1] < train[0]  # the training loss falls


def test_without_valid_segment_trains_every_round(
    market_dataset: Dataset, market_store: QlibStore, caplog: pytest.LogCaptureFixture
) -> None:
    dataset = with_segments(market_dataset, without_valid(market_store))
    recorder = RecordingCurves()
    model = LightGBMModel(num_boost_round=12, early_stopping_rounds=3, **FAST)
    with caplog.at_level(logging.INFO, logger="app.models.lgbm"):
        model.fit(dataset, recorder)
    assert model.best_iteration == 12
    assert any(
        "no 'valid' segment" in r.getMessage() and "without early stopping" in r.getMessage() for r in caplog.records
    )
    assert len(recorder.calls) == 12 and set(recorder.calls[0][0]) == {"train.l2"}


def test_save_load_predict_identical(
    fitted: tuple[LightGBMModel, RecordingCurves], market_dataset: Dataset, tmp_path: Path
) -> None:
    model, _ = fitted
    model.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["type"] == "lgbm" and doc["params"]["num_boost_round"] == 200
    assert doc["params"]["params"] == {"num_leaves": 15, "learning_rate": 0.1}
    assert (tmp_path / "m" / BOOSTER_FILE).is_file()
    for loaded in (LightGBMModel.load(tmp_path / "m"), load_model(tmp_path / "m")):
        assert isinstance(loaded, LightGBMModel) and loaded == model
        assert loaded.best_iteration == model.best_iteration
        pd.testing.assert_series_equal(loaded.predict(market_dataset), model.predict(market_dataset))


def test_same_seed_same_scores_other_seed_other_scores(market_dataset: Dataset) -> None:
    bagging = {"num_boost_round": 15, "bagging_freq": 1, "subsample": 0.7, "colsample_bytree": 0.7, **FAST}

    def scores(seed: int) -> pd.Series:
        model = LightGBMModel(seed=seed, **bagging)  # type: ignore[arg-type]
        model.fit(market_dataset)
        return model.predict(market_dataset)

    first = scores(1)
    pd.testing.assert_series_equal(first, scores(1))
    assert not np.allclose(first.to_numpy(), scores(2).to_numpy())


def test_model_contract_and_params_routing() -> None:
    # Qlib's benchmark kwargs, as its YAML spells them, all at the top level
    model = LightGBMModel(loss="mse", num_threads=20, **BENCHMARK_PARAMS)
    assert isinstance(model, Model) and model.queue == "cpu" and model.registry_name == "lgbm"
    assert model.params == dict(BENCHMARK_PARAMS) and model.num_threads == 20
    both = LightGBMModel(params={"max_bin": 63}, reg_alpha=1.0)  # an alias is a LightGBM name too
    assert both.params == {"max_bin": 63, "reg_alpha": 1.0}
    assert both.hyperparameters()["params"] == {"max_bin": 63, "reg_alpha": 1.0}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"learning_rat": 0.1}, r"'learning_rat'.*did you mean learning_rate"),
        ({"params": {"num_leafs": 3}}, r"'num_leafs' \(params\).*did you mean num_leaf"),
        ({"n_estimators": 10}, r"'n_estimators'.*num_iterations.*set model\.num_boost_round"),
        ({"params": {"objective": "huber"}}, r"'objective'.*field 'loss'"),
        ({"subsample": 0.5, "bagging_fraction": 0.6}, r"'subsample' and 'bagging_fraction' both set"),
        ({"num_boost_round": "many"}, r"num_boost_round='many' \(str\) is not int"),
        ({"early_stopping_rounds": 2.5}, r"early_stopping_rounds=2.5"),
        ({"loss": "mae"}, r"loss='mae'.*one of 'mse', 'binary'"),
        ({"params": ["num_leaves", 3]}, r"params=\['num_leaves', 3\]"),
        ({"num_boost_round": 0}, r"num_boost_round=0 must be >= 1"),
        ({"early_stopping_rounds": 0}, r"early_stopping_rounds=0 must be >= 1, or null"),
        ({"seed": -1}, r"seed=-1"),
    ],
)
def test_bad_configuration_is_a_config_error(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LightGBMModel(**kwargs)  # type: ignore[arg-type]


def test_empty_train_segment_fails_before_training(market_dataset: Dataset) -> None:
    cal = market_dataset.views.raw.index.get_level_values("datetime").unique()
    # the last day's label needs two future closes: DropnaLabel leaves no row
    dataset = with_segments(market_dataset, {"train": [str(cal[-1].date())] * 2})
    with pytest.raises(ConfigError, match=r"segments\.train has no rows in the learn view"):
        LightGBMModel(**FAST).fit(dataset)


def test_unfitted_model_and_missing_files(tmp_path: Path, market_dataset: Dataset) -> None:
    model = LightGBMModel()
    with pytest.raises(ConfigError, match="not fitted"):
        model.predict(market_dataset)
    with pytest.raises(ConfigError, match="not fitted"):
        model.save(tmp_path)
    with pytest.raises(ConfigError, match=r"model\.json missing"):
        LightGBMModel.load(tmp_path)


@pytest.mark.qlib
@pytest.mark.slow
def test_matches_qlibs_lgbmodel(qlib_python: Path, market_dataset: Dataset) -> None:
    """Same LightGBM parameters -> the same scores and curves as Qlib's LGBModel (which logs them as l2.train)."""
    logged: list[tuple[dict[str, float], int]] = []

    class R:
        @staticmethod
        def log_metrics(step: int, **metrics: float) -> None:
            logged.append((metrics, step))

    stubs = {"ModelFT": type("ModelFT", (), {}), "LightGBMFInt": type("LightGBMFInt", (), {}), "R": R}
    stubs["Reweighter"] = type("Reweighter", (), {})
    qlib_cls = qlib_namespace(qlib_python, "gbdt.py", stubs)["LGBModel"]
    ours = LightGBMModel(num_boost_round=300, early_stopping_rounds=10, **FAST)
    recorder = RecordingCurves()
    ours.fit(market_dataset, recorder)
    params = booster_params("mse", 0, FAST["num_threads"], ours.params)
    del params["objective"]
    theirs = qlib_cls(loss="mse", num_boost_round=300, early_stopping_rounds=10, **params)  # type: ignore[operator]
    theirs.fit(QlibDataset(market_dataset))
    qlib_scores = theirs.predict(QlibDataset(market_dataset))
    np.testing.assert_array_equal(ours.predict(market_dataset).to_numpy(), qlib_scores.to_numpy())
    for ours_name, qlib_name in (("train.l2", "l2.train"), ("valid.l2", "l2.valid")):
        assert [m[ours_name] for m, _ in recorder.calls] == [m[qlib_name] for m, _ in logged if qlib_name in m]


@pytest.mark.slow
def test_acceptance_sample_market_ic(sample_dataset: Dataset) -> None:
    """Benchmark parameters on the default sample market: test IC >= 0.03 (about 3 s to fit on 2 threads)."""
    model = LightGBMModel(loss="mse", num_threads=2, **BENCHMARK_PARAMS)
    model.fit(sample_dataset)
    ic, rank_ic = daily_ic(model.predict(sample_dataset), raw_label(sample_dataset))
    assert ic >= 0.03 and rank_ic >= 0.03, (ic, rank_ic)
