"""DoubleEnsembleModel: Qlib's SR/FS arithmetic and random draws (checked against Qlib's own code, spelled out here
or run from Qlib's source), fitting, persistence."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from app.core.errors import ConfigError
from app.core.progress import report_to
from app.dataset.dataset import Dataset
from app.models.base import Model, load_model
from app.models.double_ensemble import (
    ENSEMBLE_FILE,
    DoubleEnsembleModel,
    ensemble_loss,
    loss_curve_ends,
    permutation_importance,
    pick_features,
    sample_weights,
)
from app.models.lgbm import LearnData, LightGBMModel, booster_params
from tests.unit.models import market
from tests.unit.models.market import (
    BENCHMARK_PARAMS,
    SIGNAL20_COLUMNS,
    QlibDataset,
    RecordingCurves,
    daily_ic,
    qlib_namespace,
    raw_label,
    with_segments,
)

FAST = {"num_leaves": 7, "learning_rate": 0.1, "num_threads": 1}


@pytest.fixture(scope="session")
def signal20(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return market.small_dataset(tmp_path_factory, columns=SIGNAL20_COLUMNS)


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return market.sample_dataset(tmp_path_factory)


@pytest.fixture(scope="module")
def fitted(signal20: Dataset) -> tuple[DoubleEnsembleModel, RecordingCurves]:
    model = DoubleEnsembleModel(num_models=3, epochs=20, early_stopping_rounds=5, sub_weights=[1, 0.5, 0.5], **FAST)
    recorder = RecordingCurves()
    model.fit(signal20, recorder)
    return model, recorder


def _toy(n: int = 2000, seed: int = 0, rounds: int = 25) -> tuple[LearnData, lgb.Booster]:
    """y depends on feature 0 strongly, feature 1 weakly, features 2..5 not at all; a booster fitted on it."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = 1.0 * x[:, 0] + 0.2 * x[:, 1] + rng.standard_normal(n)
    params = {"objective": "mse", "verbosity": -1, "num_leaves": 7, "num_threads": 1, "deterministic": True}
    booster = lgb.train(params, lgb.Dataset(x, label=y), num_boost_round=rounds)
    return LearnData(x, y, [f"f{i}" for i in range(6)]), booster


@pytest.mark.parametrize("rounds", [25, 97])  # 10 % of 97 trees: 9 columns averaged, where numpy would pair them
def test_loss_curve_ends_match_qlibs_tree_by_tree_curve(rounds: int) -> None:
    data, booster = _toy(rounds=rounds)
    # Qlib's retrieve_loss_curve + the first lines of sample_reweight, spelled as Qlib spells them
    n, trees = len(data.y), booster.num_trees()
    curve = pd.DataFrame(np.zeros((n, trees)))
    pred = np.zeros(n)
    for t in range(trees):
        pred += booster.predict(data.x, start_iteration=t, num_iteration=1)
        curve.iloc[:, t] = (data.y - pred) ** 2
    norm = curve.rank(axis=0, pct=True)
    part = max(int(trees * 0.1), 1)
    start, end = loss_curve_ends(booster, data.x, data.y)
    np.testing.assert_array_equal(start, norm.iloc[:, :part].mean(axis=1).to_numpy())
    np.testing.assert_array_equal(end, norm.iloc[:, -part:].mean(axis=1).to_numpy())
    np.testing.assert_array_equal(pred, booster.predict(data.x))  # the leaf sum is the model's prediction


def test_sample_weights_match_qlibs_formula() -> None:
    rng = np.random.default_rng(3)
    loss, l_start, l_end = rng.exponential(size=500), rng.uniform(0.1, 1, 500), rng.uniform(0.1, 1, 500)
    loss[:50] = loss[0]  # ties
    ours = sample_weights(loss, l_start, l_end, alpha1=1.0, alpha2=0.5, bins=10, decay_k=0.5**2)
    # Qlib's sample_reweight, k_th = 2
    h = pd.DataFrame(
        {"h_value": 1.0 * pd.Series(-loss).rank(pct=True) + 0.5 * pd.Series(l_end / l_start).rank(pct=True)}
    )
    h["bins"] = pd.cut(h["h_value"], 10)
    h_avg = h.groupby("bins", group_keys=False, observed=False)["h_value"].mean()
    expected = pd.Series(np.zeros(500))
    for b in h_avg.index:
        expected[h["bins"] == b] = 1.0 / (0.5**2 * h_avg[b] + 0.1)
    np.testing.assert_array_equal(ours, expected.to_numpy())
    assert ours.min() > 0 and len(np.unique(ours)) <= 10


@pytest.mark.parametrize("models", [3, 11])
def test_ensemble_loss_adds_sub_models_as_qlibs_row_sum(models: int) -> None:
    rng = np.random.default_rng(models)
    y, preds = rng.standard_normal(5000), rng.standard_normal((5000, models))
    weights = rng.uniform(0.1, 1.0, models)
    # Qlib's fit: pred_sub.iloc[:, k] = pred_k; (pred_sub.iloc[:, : k + 1] * sub_weights[0 : k + 1]).sum(axis=1) / ...
    pred_sub = pd.DataFrame(np.zeros((5000, models), dtype=float))
    for k in range(models):
        pred_sub.iloc[:, k] = preds[:, k]
    ensemble = (pred_sub.iloc[:, :models] * list(weights)).sum(axis=1) / np.sum(list(weights))
    expected = pd.Series((y - ensemble.values) ** 2).to_numpy()
    np.testing.assert_array_equal(ensemble_loss(y, preds, weights), expected)


def test_permutation_importance_is_qlibs_feature_selection_loop() -> None:
    data, _ = _toy()
    x = np.column_stack([data.x, np.ones(len(data.y), dtype=np.float32)])  # column 6: constant, never split on
    data = LearnData(np.ascontiguousarray(x), data.y, [*data.features, "const"])
    subsets = [np.arange(7), np.array([0, 2, 6])]
    params = {"objective": "mse", "verbosity": -1, "num_leaves": 5, "num_threads": 1, "deterministic": True}
    boosters = [booster_on(data, subsets[0], params), booster_on(data, subsets[1], params)]
    preds = np.column_stack([b.predict(data.x[:, s]) for b, s in zip(boosters, subsets, strict=True)])
    loss = ensemble_loss(data.y, preds, np.array([1.0, 0.5]))
    g = permutation_importance(boosters, subsets, preds, data, loss, np.random.RandomState(7))
    # Qlib's feature_selection, spelled as Qlib spells it: permute one column's values with the global RNG, let
    # every sub-model predict again, average them uniformly (not by sub_weights)
    state = np.random.get_state()
    try:
        np.random.seed(7)
        frame = pd.DataFrame(data.x, columns=data.features)
        tmp = frame.copy()
        loss_values = pd.Series(loss)
        expected = np.zeros(7)
        for i_f, feat in enumerate(data.features):
            tmp.loc[:, feat] = np.random.permutation(tmp.loc[:, feat].values)
            pred = pd.Series(np.zeros(len(data.y)))
            for booster, s in zip(boosters, subsets, strict=True):
                pred += pd.Series(booster.predict(tmp.iloc[:, s].values)) / len(boosters)
            loss_feat = (data.y - pred.values) ** 2
            expected[i_f] = np.mean(loss_feat - loss_values) / (np.std(loss_feat - loss_values) + 1e-7)
            tmp.loc[:, feat] = frame.loc[:, feat].copy()
        after = np.random.randint(2**31)
    finally:
        np.random.set_state(state)
    np.testing.assert_array_equal(g, expected)
    rng = np.random.RandomState(7)
    permutation_importance(boosters, subsets, preds, data, loss, rng)
    assert rng.randint(2**31) == after  # the same number of draws as Qlib's loop
    # strong > weak > never split on; as in Qlib, a column no sub-model uses still scores the gap between the
    # uniform mean it re-predicts and the weighted mean loss_values come from (0 only for equal sub_weights)
    d = pd.Series((data.y - (preds[:, 0] / 2 + preds[:, 1] / 2)) ** 2 - loss)
    assert g[0] == g.max() and g[0] > g[1] > g[6] and g[6] == np.mean(d) / (np.std(d) + 1e-7) != 0


def booster_on(data: LearnData, subset: np.ndarray, params: dict[str, object]) -> lgb.Booster:
    return lgb.train(params, lgb.Dataset(data.x[:, subset], label=data.y), num_boost_round=10)


def test_pick_features_takes_shares_of_non_empty_bins_from_the_top() -> None:
    g = np.array([3.0, 2.9, 1.0, 0.0, 0.0, 0.0, 0.0, -0.1])
    # 5 bins of width 0.62: {0, 1} top, {2} in the middle, {3..7} at the bottom, two bins empty. As in Qlib the
    # ratios go to the non-empty bins in order: ceil(0.8·2) = 2, ceil(0.7·1) = 1, ceil(0.6·5) = 3
    chosen = pick_features(g, bins=5, ratios=(0.8, 0.7, 0.6, 0.5, 0.4), rng=np.random.RandomState(0))
    assert len(chosen) == 6 and {0, 1, 2} <= set(chosen.tolist()) and list(chosen) == sorted(chosen)
    again = pick_features(g, bins=5, ratios=(0.8, 0.7, 0.6, 0.5, 0.4), rng=np.random.RandomState(0))
    np.testing.assert_array_equal(chosen, again)
    flat = pick_features(np.zeros(10), bins=5, ratios=(0.8, 0.7, 0.6, 0.5, 0.4), rng=np.random.RandomState(0))
    assert len(flat) == 8  # one non-empty bin gets the first ratio


def test_pick_features_draws_what_qlibs_global_rng_draws() -> None:
    rng = np.random.default_rng(5)
    g = rng.standard_normal(40)
    names = pd.Index([f"F{i}" for i in range(40)])
    ratios = (0.8, 0.7, 0.6, 0.5, 0.4)
    state = np.random.get_state()
    try:
        # Qlib's feature_selection after the g values, with the global RNG seeded
        np.random.seed(11)
        frame = pd.DataFrame({"g_value": g})
        frame["bins"] = pd.cut(frame["g_value"], 5)
        picked: list[str] = []
        for i_b, b in enumerate(sorted(frame["bins"].unique(), reverse=True)):
            b_feat = names[frame["bins"] == b]
            num_feat = int(np.ceil(ratios[i_b] * len(b_feat)))
            picked = picked + np.random.choice(b_feat, size=num_feat, replace=False).tolist()
    finally:
        np.random.set_state(state)
    chosen = pick_features(g, bins=5, ratios=ratios, rng=np.random.RandomState(11))
    assert names[chosen].tolist() == [n for n in names if n in set(picked)]  # Qlib's set, in column order


def test_fit_predict_positive_ic_and_weighted_mean(
    fitted: tuple[DoubleEnsembleModel, RecordingCurves], signal20: Dataset
) -> None:
    model, _ = fitted
    score = model.predict(signal20)
    ic, rank_ic = daily_ic(score, raw_label(signal20))
    assert ic > 0.03 and rank_ic > 0.03, (ic, rank_ic)
    assert score.name == "score" and score.index.equals(signal20.prepare("test", "feature", view="infer").index)
    # sub_weights-weighted mean of the sub-models on their own features
    x = signal20.prepare("test", "feature", view="infer")
    parts = [
        b.predict(x.loc[:, f].to_numpy()) * w
        for b, f, w in zip(model._boosters, model.sub_features, [1, 0.5, 0.5], strict=True)
    ]
    np.testing.assert_allclose(score.to_numpy(), sum(parts) / 2.0, rtol=1e-12)
    assert len(model.sub_features) == 3 and model.sub_features[0] == list(x.columns)
    assert all(set(f) <= set(x.columns) for f in model.sub_features[1:])


def test_recorder_gets_one_curve_set_per_sub_model(fitted: tuple[DoubleEnsembleModel, RecordingCurves]) -> None:
    _, recorder = fitted
    keys = set().union(*(m for m, _ in recorder.calls))
    assert keys == {f"sub{k}.{s}.l2" for k in (1, 2, 3) for s in ("train", "valid")}
    first = [step for m, step in recorder.calls if "sub1.train.l2" in m]
    assert first == list(range(len(first)))


def test_feature_selection_reports_its_progress_column_by_column(signal20: Dataset) -> None:
    reports: list[dict[str, object]] = []
    model = DoubleEnsembleModel(num_models=2, epochs=5, early_stopping_rounds=5, sub_weights=[1, 1], **FAST)
    with report_to(lambda fields: reports.append(dict(fields))):
        model.fit(signal20)
    columns = len(model.sub_features[0])  # the first sub-model is fitted on every column
    selection = [r for r in reports if r["unit"] == "features"]
    assert [r["done"] for r in selection] == list(range(1, columns + 1))
    assert {(r["step"], r["total"]) for r in selection} == {("DoubleEnsembleModel feature selection", columns)}
    before = reports[reports.index(selection[0]) - 1]
    assert before["unit"] == "sub-models" and before["note"] == "selecting features for sub-model 2"


def test_save_load_predict_identical(
    fitted: tuple[DoubleEnsembleModel, RecordingCurves], signal20: Dataset, tmp_path: Path
) -> None:
    model, _ = fitted
    model.save(tmp_path / "de")
    files = sorted(p.name for p in (tmp_path / "de").iterdir())
    assert files == ["ensemble.json", "model.json", "sub_model_0.txt", "sub_model_1.txt", "sub_model_2.txt"]
    doc = json.loads((tmp_path / "de" / ENSEMBLE_FILE).read_text())
    assert doc["sub_features"] == model.sub_features and doc["sub_weights"] == [1.0, 0.5, 0.5]
    for loaded in (DoubleEnsembleModel.load(tmp_path / "de"), load_model(tmp_path / "de")):
        assert isinstance(loaded, DoubleEnsembleModel) and loaded == model
        pd.testing.assert_series_equal(loaded.predict(signal20), model.predict(signal20))


def test_seeding(signal20: Dataset) -> None:
    def scores(seed: int) -> tuple[pd.Series, list[list[str]]]:
        model = DoubleEnsembleModel(num_models=2, epochs=8, seed=seed, bagging_freq=1, subsample=0.7, **FAST)
        model.fit(signal20)
        return model.predict(signal20), model.sub_features

    (a, fa), (b, fb), (c, _) = scores(4), scores(4), scores(5)
    pd.testing.assert_series_equal(a, b)
    assert fa == fb
    assert not np.allclose(a.to_numpy(), c.to_numpy())


def test_without_sr_and_fs_every_sub_model_is_the_plain_lightgbm(signal20: Dataset) -> None:
    train = signal20.segment("train")
    no_valid = with_segments(signal20, {"train": [str(train.start.date()), str(train.end.date())]})
    de = DoubleEnsembleModel(num_models=2, epochs=10, enable_sr=False, enable_fs=False, **FAST)
    de.fit(no_valid)
    single = LightGBMModel(num_boost_round=10, **FAST)
    single.fit(no_valid)
    pd.testing.assert_series_equal(de.predict(signal20), single.predict(signal20))


def test_qlib_benchmark_kwargs_are_accepted() -> None:
    # workflow_config_doubleensemble_Alpha158.yaml's model kwargs, verbatim
    qlib = {
        "base_model": "gbm", "loss": "mse", "num_models": 6, "enable_sr": True, "enable_fs": True, "alpha1": 1,
        "alpha2": 1, "bins_sr": 10, "bins_fs": 5, "decay": 0.5, "sample_ratios": [0.8, 0.7, 0.6, 0.5, 0.4],
        "sub_weights": [1, 0.2, 0.2, 0.2, 0.2, 0.2], "epochs": 28, "num_threads": 20, "verbosity": -1,
        **BENCHMARK_PARAMS,
    }  # fmt: skip
    model = DoubleEnsembleModel(**qlib)  # type: ignore[arg-type]
    assert isinstance(model, Model) and model.queue == "cpu"
    assert model.params == {"verbosity": -1, **BENCHMARK_PARAMS}
    assert model.sub_weights == (1.0, 0.2, 0.2, 0.2, 0.2, 0.2) and model.sample_ratios == (0.8, 0.7, 0.6, 0.5, 0.4)
    default = DoubleEnsembleModel()
    assert (default.num_models, default.epochs, default.decay, default.early_stopping_rounds) == (6, 100, 0.5, None)
    assert default.sub_weights == (1.0,) * 6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sample_ratios": [0.8, 0.7]}, r"sample_ratios=\[0\.8, 0\.7\] must hold bins_fs=5"),
        ({"num_models": 3, "sub_weights": [1, 1]}, r"sub_weights=\[1\.0, 1\.0\] must hold num_models=3"),
        ({"decay": 0}, r"decay=0 must be > 0"),
        ({"num_models": "six"}, r"num_models='six' \(str\) is not int"),
        ({"base_model": "mlp"}, r"base_model='mlp'.*one of 'gbm'"),
        ({"n_estimators": 5}, r"'n_estimators'.*set model\.epochs"),
        ({"colsample_by_tree": 0.5}, r"'colsample_by_tree'.*did you mean colsample_bytree"),
        ({"bins_sr": 0}, r"bins_sr=0 must be >= 1"),
        ({"linear_trees": True}, r"linear_tree and boosting='rf' are not supported"),
        ({"params": {"boosting_type": "rf"}}, r"linear_tree and boosting='rf' are not supported"),
    ],
)
def test_bad_configuration_is_a_config_error(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DoubleEnsembleModel(**kwargs)  # type: ignore[arg-type]


def test_unfitted_and_empty_train(signal20: Dataset) -> None:
    with pytest.raises(ConfigError, match="not fitted"):
        DoubleEnsembleModel().predict(signal20)
    last = str(signal20.views.raw.index.get_level_values("datetime").max().date())
    with pytest.raises(ConfigError, match=r"segments\.train has no rows"):
        DoubleEnsembleModel(**FAST).fit(with_segments(signal20, {"train": [last, last]}))


@pytest.mark.qlib
@pytest.mark.slow
@pytest.mark.parametrize(
    "common",
    [
        {"num_models": 3, "epochs": 30, "early_stopping_rounds": 5, "enable_fs": False, "sub_weights": [1, 0.5, 0.5]},
        {"num_models": 3, "epochs": 30, "early_stopping_rounds": 5, "sub_weights": [1, 0.5, 0.5]},
        {"num_models": 9, "epochs": 6, "sub_weights": [1, 0.9, 0.3, 0.7, 0.2, 0.6, 0.1, 0.5, 0.4], "bins_sr": 7},
    ],
    ids=["sr", "sr_fs", "nine_models"],
)
def test_matches_qlibs_double_ensemble(qlib_python: Path, signal20: Dataset, common: dict[str, object]) -> None:
    """Qlib's DEnsembleModel, its global RNG seeded with the model's seed before fit, and ours give identical scores:
    same SR weights, loss curves, feature draws and sub-models. Qlib's selected features come out of a ``set``;
    they are put in the dataset's column order (ours) before the next sub-model trains."""
    stubs = {"Model": type("Model", (), {}), "FeatureInt": type("FeatureInt", (), {})}
    stubs["get_module_logger"] = logging.getLogger
    qlib_cls = qlib_namespace(qlib_python, "double_ensemble.py", stubs)["DEnsembleModel"]
    ours = DoubleEnsembleModel(**common, **FAST, seed=3)  # type: ignore[arg-type]
    ours.fit(signal20)
    params = booster_params("mse", 3, FAST["num_threads"], ours.params)
    del params["objective"]
    theirs = qlib_cls(loss="mse", decay=0.5, **common, **params)  # type: ignore[operator]
    select = theirs.feature_selection

    def in_column_order(df_train: pd.DataFrame, loss_values: pd.Series) -> pd.Index:
        columns = df_train["feature"].columns
        return columns[columns.isin(select(df_train, loss_values))]

    theirs.feature_selection = in_column_order
    state = np.random.get_state()
    try:
        np.random.seed(3)
        theirs.fit(QlibDataset(signal20))
    finally:
        np.random.set_state(state)
    assert [list(f) for f in theirs.sub_features] == ours.sub_features
    if common.get("enable_fs", True):
        assert len({len(f) for f in ours.sub_features}) > 1  # FS dropped features
    qlib_scores = theirs.predict(QlibDataset(signal20))
    np.testing.assert_array_equal(ours.predict(signal20).to_numpy(), qlib_scores.to_numpy())


@pytest.mark.slow
def test_acceptance_sample_market_ic(sample_dataset: Dataset) -> None:
    """The DoubleEnsemble benchmark (3 sub-models, 1000 epochs, early stop 50) on the sample market: IC >= 0.03."""
    model = DoubleEnsembleModel(
        num_models=3, epochs=1000, early_stopping_rounds=50, decay=0.5, num_threads=2, **BENCHMARK_PARAMS
    )
    model.fit(sample_dataset)
    ic, rank_ic = daily_ic(model.predict(sample_dataset), raw_label(sample_dataset))
    assert ic >= 0.03 and rank_ic >= 0.03, (ic, rank_ic)
    assert math.isfinite(ic)
