"""DoubleEnsemble (Qlib's ``DEnsembleModel``, Zhang et al. 2020) with LightGBM sub-models.

Sub-model k trains on re-weighted samples (SR) and a selected feature subset (FS) decided after sub-model k-1:

* **SR.** ``loss_values`` = squared error of the ensemble so far (``sub_weights``-weighted mean of the sub-models'
  train predictions, added sub-model by sub-model as pandas' row sum adds them). ``loss_curve[i, t]`` = squared
  error on sample i after the first t+1 trees of the last sub-model; each iteration's column is ranked across
  samples (pct), and ``l_start``/``l_end`` average those ranks over the first/last 10 % of iterations (at least
  one). ``h = alpha1·rank_pct(-loss_values) +
  alpha2·rank_pct(l_end / l_start)`` is cut into ``bins_sr`` equal-width bins (``pd.cut``); a sample's weight
  is ``1 / (decay^k · mean(h in its bin) + 0.1)`` with k = the number of sub-models trained so far.
* **FS.** For each feature in the dataset's column order, its train column is permuted (one permutation shared
  by every sub-model), the ensemble re-predicts as the *uniform* mean of its sub-models (Qlib's arithmetic:
  each prediction divided by their count, then added; ``sub_weights`` are not used here, although
  ``loss_values`` uses them), and ``g = mean(d) / (std(d) + 1e-7)`` with ``d`` = loss after − loss before (std
  ddof=0; NaN g → 0). ``g`` is cut into ``bins_fs`` equal-width bins; walking the non-empty bins from the
  highest g down, the i-th keeps ``ceil(sample_ratios[i] · size)`` of its features, drawn at random.

Prediction is the ``sub_weights``-weighted mean of the sub-models, each on its own features.

Random draws: Qlib draws FS's permutations and choices from NumPy's global RNG, which it never seeds. Here they
come from ``numpy.random.RandomState(seed)`` (the legacy generator behind the global one) in Qlib's order: per
FS step, one ``permutation`` of the rows per feature, then one ``choice(..., replace=False)`` per non-empty bin
from the top. So a Qlib run whose global RNG was seeded with ``np.random.seed(seed)`` before ``fit`` picks the
same features, and the sub-models are the same boosters.

Differences from Qlib, on purpose: ``decay`` defaults to 0.5 (Qlib's None crashes); the draws are seeded (above);
the features a sub-model trains on keep the dataset's column order, where Qlib's come out of a ``set`` of names
(an order that changes with the interpreter's string hash seed, PYTHONHASHSEED, and with it LightGBM's column
sampling, so Qlib's own DoubleEnsemble differs from one process to the next); the ``valid`` segment is optional.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from app.core.errors import ConfigError
from app.core.progress import ProgressBar
from app.dataset.dataset import Dataset
from app.models.base import CurveRecorder, check_hyperparameters, read_model_json, write_model_json
from app.models.lgbm import (
    LGBM_RESERVED,
    LearnData,
    booster_params,
    check_common_values,
    collect_lightgbm_params,
    infer_features,
    learn_data,
    load_booster,
    log_curves,
    train_booster,
)
from app.models.lightgbm_lib import lightgbm_aliases

if TYPE_CHECKING:
    import lightgbm as lgb  # imported where training needs it: ~1.5 s, and config checks need the class only

log = logging.getLogger(__name__)

ENSEMBLE_FILE = "ensemble.json"
LEAF_CHUNK = 64  # trees per pred_leaf call while rebuilding loss curves (bounds memory: rows × 64 ints)
DE_RESERVED: Mapping[str, str] = {**LGBM_RESERVED, "num_iterations": "epochs"}


def rank_pct(values: np.ndarray) -> np.ndarray:
    """Average-tie rank / count, as pandas' ``rank(pct=True)`` (which Qlib uses)."""
    return np.asarray(pd.Series(values).rank(pct=True).to_numpy(), dtype=np.float64)


def leaf_values(booster: lgb.Booster) -> list[np.ndarray]:
    """Per tree, the output of each leaf (index = LightGBM's leaf index)."""
    counts = [int(info["num_leaves"]) for info in booster.dump_model()["tree_info"]]
    return [np.array([booster.get_leaf_output(t, leaf) for leaf in range(n)]) for t, n in enumerate(counts)]


def loss_curve_ends(booster: lgb.Booster, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Qlib's ``l_start`` and ``l_end``: each sample's rank (pct, across samples) of its squared error after
    t+1 trees, averaged over the first and the last ``max(int(0.1·T), 1)`` iterations.

    Equals Qlib's tree-by-tree ``predict(start_iteration=t, num_iteration=1)`` accumulation, computed from
    leaf indices so the whole curve costs about one prediction.
    """
    trees = booster.num_trees()
    part = max(int(trees * 0.1), 1)
    values = leaf_values(booster)
    pred = np.zeros(len(y))
    start, end = np.zeros(len(y)), np.zeros(len(y))
    for first in range(0, trees, LEAF_CHUNK):
        count = min(LEAF_CHUNK, trees - first)
        leaves = np.asarray(booster.predict(x, start_iteration=first, num_iteration=count, pred_leaf=True))
        leaves = leaves.reshape(len(y), count).astype(np.intp)
        for j in range(count):
            t = first + j
            pred += values[t][leaves[:, j]]
            if t < part or t >= trees - part:
                ranks = rank_pct((y - pred) ** 2)
                if t < part:
                    start += ranks
                if t >= trees - part:
                    end += ranks
    return start / part, end / part


def sample_weights(
    loss_values: np.ndarray,
    l_start: np.ndarray,
    l_end: np.ndarray,
    *,
    alpha1: float,
    alpha2: float,
    bins: int,
    decay_k: float,
) -> np.ndarray:
    """SR weights ``1 / (decay_k · mean(h in bin) + 0.1)`` (see the module docstring)."""
    h = alpha1 * rank_pct(-loss_values) + alpha2 * rank_pct(l_end / l_start)
    codes = np.asarray(pd.cut(h, bins, labels=False))
    means = pd.Series(h).groupby(codes).mean()
    return np.asarray(1.0 / (decay_k * means.reindex(codes).to_numpy() + 0.1), dtype=np.float64)


def ensemble_loss(y: np.ndarray, train_preds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Squared error of the ``weights``-weighted mean of the columns of ``train_preds``.

    The weighted predictions are added column after column, as Qlib's ``DataFrame.sum(axis=1)`` adds them
    (numpy's row sum would pair them up from 8 sub-models on), and divided by ``np.sum(weights)``.
    """
    total = np.zeros(len(y))
    for i, weight in enumerate(weights):
        total = total + train_preds[:, i] * weight
    loss: np.ndarray = (y - total / np.sum(weights)) ** 2
    return loss


def permutation_importance(
    boosters: Sequence[lgb.Booster],
    subsets: Sequence[np.ndarray],
    train_preds: np.ndarray,
    train: LearnData,
    loss_values: np.ndarray,
    rng: np.random.RandomState,
    on_column: Callable[[], object] | None = None,
) -> np.ndarray:
    """FS's ``g`` per column of ``train.x`` (module docstring); draws one permutation per column from ``rng``;
    ``on_column()`` is called as each column is done (progress: this is most of the time between sub-models).

    Sub-model i uses the columns ``subsets[i]``; ``train_preds[:, i]`` is its unpermuted train prediction,
    reused when it never splits on the permuted column (its prediction cannot change then).
    """
    n, n_features = train.x.shape
    count = len(boosters)
    sub_x = [np.ascontiguousarray(train.x[:, s]) for s in subsets]
    used = [booster.feature_importance("split") > 0 for booster in boosters]
    position = [{int(f): j for j, f in enumerate(s) if used[i][j]} for i, s in enumerate(subsets)]
    g = np.zeros(n_features)
    for f in range(n_features):
        shuffled = train.x[rng.permutation(n), f]  # the same draws as Qlib's permutation of the column's values
        total = np.zeros(n)
        for i, booster in enumerate(boosters):
            j = position[i].get(f)
            if j is None:
                total += train_preds[:, i] / count
                continue
            kept = sub_x[i][:, j].copy()
            sub_x[i][:, j] = shuffled
            total += np.asarray(booster.predict(sub_x[i])) / count
            sub_x[i][:, j] = kept
        d = pd.Series((train.y - total) ** 2 - loss_values)
        g[f] = np.mean(d) / (np.std(d) + 1e-7)  # pandas' mean and std(ddof=0), which np.mean/np.std call on a Series
        if on_column is not None:
            on_column()
    return np.nan_to_num(g, nan=0.0)


def pick_features(g: np.ndarray, *, bins: int, ratios: Sequence[float], rng: np.random.RandomState) -> np.ndarray:
    """Sorted indices kept by FS: ``g`` cut into ``bins`` equal-width bins; the i-th non-empty bin from the top
    keeps ``ceil(ratios[i] · size)`` of its members, drawn from ``rng`` (Qlib counts only non-empty bins)."""
    codes = np.asarray(pd.cut(g, bins, labels=False))
    chosen: list[int] = []
    for i, b in enumerate(sorted(set(codes.tolist()), reverse=True)):
        members = np.flatnonzero(codes == b)
        count = math.ceil(ratios[i] * len(members))
        chosen += rng.choice(members, size=count, replace=False).tolist()
    return np.sort(np.asarray(chosen, dtype=np.intp))


def _columns(data: LearnData, subset: np.ndarray) -> LearnData:
    if len(subset) == data.x.shape[1]:
        return data
    return LearnData(np.ascontiguousarray(data.x[:, subset]), data.y, [data.features[i] for i in subset])


@dataclass(kw_only=True, init=False)
class DoubleEnsembleModel:
    """DoubleEnsemble of LightGBM sub-models; defaults are Qlib's class defaults (``decay`` 0.5, see module).

    Fields as Qlib's ``DEnsembleModel``: ``base_model`` (``gbm``), ``loss`` (``mse``), ``num_models``,
    ``enable_sr``, ``enable_fs``, ``alpha1``, ``alpha2``, ``bins_sr``, ``bins_fs``, ``decay``,
    ``sample_ratios`` (one per FS bin), ``sub_weights`` (one per sub-model; null: all 1), ``epochs`` (rounds
    per sub-model), ``early_stopping_rounds`` (null: off); plus ``seed``, ``num_threads`` and LightGBM
    ``params`` (unknown keywords that LightGBM knows are added to them).

    Raises:
        ConfigError: a wrong type or range, mismatched list lengths, or an unknown keyword.
    """

    registry_name = "double_ensemble"

    base_model: Literal["gbm"]
    loss: Literal["mse"]
    num_models: int
    enable_sr: bool
    enable_fs: bool
    alpha1: float
    alpha2: float
    bins_sr: int
    bins_fs: int
    decay: float
    sample_ratios: tuple[float, ...]
    sub_weights: tuple[float, ...]
    epochs: int
    early_stopping_rounds: int | None
    seed: int
    num_threads: int | None
    params: dict[str, object]
    _boosters: list[lgb.Booster] = field(init=False, repr=False, compare=False)
    _sub_features: list[list[str]] = field(init=False, repr=False, compare=False)
    _features: list[str] = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        *,
        base_model: Literal["gbm"] = "gbm",
        loss: Literal["mse"] = "mse",
        num_models: int = 6,
        enable_sr: bool = True,
        enable_fs: bool = True,
        alpha1: float = 1.0,
        alpha2: float = 1.0,
        bins_sr: int = 10,
        bins_fs: int = 5,
        decay: float = 0.5,
        sample_ratios: Sequence[float] = (0.8, 0.7, 0.6, 0.5, 0.4),
        sub_weights: Sequence[float] | None = None,
        epochs: int = 100,
        early_stopping_rounds: int | None = None,
        seed: int = 0,
        num_threads: int | None = None,
        params: Mapping[str, object] | None = None,
        **lightgbm_params: object,
    ) -> None:
        self.base_model, self.loss, self.num_models = base_model, loss, num_models
        self.enable_sr, self.enable_fs, self.alpha1, self.alpha2 = enable_sr, enable_fs, alpha1, alpha2
        self.bins_sr, self.bins_fs, self.decay, self.epochs = bins_sr, bins_fs, decay, epochs
        self.early_stopping_rounds, self.seed, self.num_threads = early_stopping_rounds, seed, num_threads
        # unchecked values go in as given, so check_hyperparameters names the field that is wrong
        self.sample_ratios = _as_tuple(sample_ratios)  # type: ignore[assignment]
        ones = (1.0,) * num_models if isinstance(num_models, int) and num_models > 0 else None
        self.sub_weights = _as_tuple(ones if sub_weights is None else sub_weights)  # type: ignore[assignment]
        self.params = {} if params is None else params  # type: ignore[assignment]
        check_hyperparameters(self)
        name = type(self).__name__
        self.params = collect_lightgbm_params(name, self.params, lightgbm_params, DE_RESERVED)
        _check_additive_trees(name, self.params)
        self.sample_ratios = tuple(float(r) for r in self.sample_ratios)
        self.sub_weights = tuple(float(w) for w in self.sub_weights)
        self._check_values()
        self._boosters, self._sub_features, self._features = [], [], []

    def _check_values(self) -> None:
        name = type(self).__name__
        for key in ("num_models", "bins_sr", "bins_fs", "epochs"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{name}: {key}={getattr(self, key)} must be >= 1; fix model.{key}.")
        if not self.decay > 0:
            raise ConfigError(f"{name}: decay={self.decay} must be > 0 (the benchmark uses 0.5); fix model.decay.")
        if len(self.sample_ratios) != self.bins_fs or not all(0 < r <= 1 for r in self.sample_ratios):
            raise ConfigError(
                f"{name}: sample_ratios={list(self.sample_ratios)} must hold bins_fs={self.bins_fs} shares in (0, 1], "
                "one per feature-selection bin (most important first)."
            )
        if len(self.sub_weights) != self.num_models or min(self.sub_weights) < 0 or sum(self.sub_weights) <= 0:
            raise ConfigError(
                f"{name}: sub_weights={list(self.sub_weights)} must hold num_models={self.num_models} weights >= 0 "
                "with a positive sum (or be null for equal weights)."
            )
        check_common_values(name, self.seed, self.num_threads, self.early_stopping_rounds)

    @property
    def queue(self) -> str:
        """LightGBM sub-models train on CPU."""
        return "cpu"

    @property
    def sub_features(self) -> list[list[str]]:
        """The feature names each fitted sub-model uses (empty before fit/load)."""
        return [list(s) for s in self._sub_features]

    def hyperparameters(self) -> dict[str, object]:
        """The constructor's keyword arguments (what ``model.json`` stores)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    def fit(self, dataset: Dataset, recorder: CurveRecorder | None = None) -> None:
        """Train the sub-models in turn with SR and FS between them; curves go to ``recorder`` as
        ``sub<k>.train.l2`` / ``sub<k>.valid.l2`` (k from 1).

        Raises:
            ConfigError: empty train/valid segment, NaN or multiple labels, no features.
        """
        name = type(self).__name__
        train = learn_data(dataset, "train", name)
        valid = learn_data(dataset, "valid", name) if "valid" in dataset.segments else None
        params = booster_params(self.loss, self.seed, self.num_threads, self.params)
        rng = np.random.RandomState(self.seed)  # Qlib's draws come from the (legacy) global RNG; module docstring
        weights = np.asarray(self.sub_weights)
        n, n_features = train.x.shape
        sample_weight = np.ones(n)
        subset = np.arange(n_features)
        boosters: list[lgb.Booster] = []
        subsets: list[np.ndarray] = []
        preds = np.zeros((n, self.num_models))
        with ProgressBar(self.num_models, name, unit="sub-models") as bar:
            for k in range(self.num_models):
                owner = f"{name} sub-model {k + 1}/{self.num_models}"
                bar.update(note=f"training sub-model {k + 1}")
                log.info("%s: %d samples, %d of %d features", owner, n, len(subset), n_features)
                sub_train = _columns(train, subset)
                sub_valid = None if valid is None else _columns(valid, subset)
                booster, curves = train_booster(
                    params,
                    sub_train,
                    sub_valid,
                    rounds=self.epochs,
                    early_stopping_rounds=self.early_stopping_rounds,
                    owner=owner,
                    weight=sample_weight,
                )
                boosters.append(booster)
                subsets.append(subset)
                log_curves(recorder, curves, prefix=f"sub{k + 1}.")
                bar.advance()
                if k + 1 == self.num_models:
                    break
                bar.update(note=f"preparing sub-model {k + 2}")
                preds[:, k] = np.asarray(booster.predict(sub_train.x))
                loss_values = ensemble_loss(train.y, preds[:, : k + 1], weights[: k + 1])
                if self.enable_sr:
                    l_start, l_end = loss_curve_ends(booster, sub_train.x, train.y)
                    sample_weight = sample_weights(
                        loss_values,
                        l_start,
                        l_end,
                        alpha1=self.alpha1,
                        alpha2=self.alpha2,
                        bins=self.bins_sr,
                        decay_k=self.decay ** (k + 1),
                    )
                if self.enable_fs:
                    bar.update(note=f"selecting features for sub-model {k + 2}")
                    with ProgressBar(n_features, f"{name} feature selection", unit="features") as columns:
                        g = permutation_importance(
                            boosters, subsets, preds[:, : k + 1], train, loss_values, rng, on_column=columns.advance
                        )
                    subset = pick_features(g, bins=self.bins_fs, ratios=self.sample_ratios, rng=rng)
        self._boosters = boosters
        self._sub_features = [[train.features[i] for i in s] for s in subsets]
        self._features = train.features

    def predict(self, dataset: Dataset, segment: str = "test") -> pd.Series:
        """Weighted mean of the sub-models' scores on ``segment`` (infer view), named ``score``.

        Raises:
            ConfigError: not fitted, or the dataset lacks a trained feature.
        """
        if not self._boosters:
            raise ConfigError(f"{type(self).__name__} is not fitted; call fit(dataset) or load(directory) first.")
        x = infer_features(dataset, segment, self._features, type(self).__name__)
        total = np.zeros(len(x))
        if len(x):
            for booster, names, weight in zip(self._boosters, self._sub_features, self.sub_weights, strict=True):
                total += np.asarray(booster.predict(x.loc[:, names].to_numpy())) * weight
        return pd.Series(total / np.sum(self.sub_weights), index=x.index, name="score")

    def save(self, directory: Path) -> None:
        """Write ``model.json``, one LightGBM text model per sub-model and ``ensemble.json`` (feature names and
        weights) to ``directory``.

        Raises:
            ConfigError: not fitted.
        """
        if not self._boosters:
            raise ConfigError(f"{type(self).__name__} is not fitted; nothing to save.")
        write_model_json(directory, self.registry_name, self.hyperparameters())
        for k, booster in enumerate(self._boosters):
            booster.save_model(str(directory / _booster_file(k)))
        doc = {"features": self._features, "sub_features": self._sub_features, "sub_weights": self.sub_weights}
        (directory / ENSEMBLE_FILE).write_text(json.dumps(doc, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> DoubleEnsembleModel:
        """The model saved in ``directory`` by :meth:`save`.

        Raises:
            ConfigError: not a saved DoubleEnsemble, or its files are missing or inconsistent.
        """
        kind, params = read_model_json(directory)
        if kind != cls.registry_name:
            raise ConfigError(f"{directory} holds a {kind!r} model, not {cls.registry_name!r}; use load_model().")
        model = cls(**params)
        path = directory / ENSEMBLE_FILE
        try:
            doc: dict[str, Any] = json.loads(path.read_text())
            features, subs = list(doc["features"]), [list(s) for s in doc["sub_features"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is missing or malformed ({exc}); save the model again.") from None
        if len(subs) != model.num_models:
            raise ConfigError(f"{path} lists {len(subs)} sub-models but model.json says num_models={model.num_models}.")
        model._boosters = [load_booster(directory / _booster_file(k), cls.__name__) for k in range(len(subs))]
        model._features, model._sub_features = features, subs
        return model


def _check_additive_trees(owner: str, params: Mapping[str, object]) -> None:
    """Loss curves and FS read a prediction as the sum of its trees' leaf values (as Qlib's code assumes)."""
    aliases = lightgbm_aliases()
    main = {aliases[k]: v for k, v in params.items()}
    if main.get("linear_tree") or str(main.get("boosting", "gbdt")).lower() in ("rf", "random_forest"):
        raise ConfigError(
            f"{owner}: linear_tree and boosting='rf' are not supported (a prediction must be the sum of its "
            "trees' leaf values); remove them from the model's LightGBM parameters."
        )


def _booster_file(k: int) -> str:
    return f"sub_model_{k}.txt"


def _as_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
