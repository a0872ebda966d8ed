"""LightGBM as Qlib's ``LGBModel``, plus the LightGBM plumbing DoubleEnsemble shares.

Qlib semantics kept: ``loss`` becomes LightGBM's ``objective`` (``mse`` or ``binary``); every other LightGBM
parameter passes through, either inside ``params`` or as a top-level keyword (Qlib's configs put
``learning_rate``, ``num_leaves``, ... next to ``loss``); training uses the ``learn`` view of ``train``, early
stopping watches ``valid`` (when the dataset has one) and keeps the best iteration; prediction uses the
``infer`` view. Unlike Qlib, a parameter name LightGBM does not know is an error (Qlib hands it to LightGBM,
which only warns), and training is seeded and deterministic.
"""

from __future__ import annotations

import difflib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np
import pandas as pd

from app.core.errors import ConfigError
from app.core.interrupt import check_stop
from app.core.progress import ProgressBar
from app.dataset.dataset import Dataset
from app.models.base import CurveRecorder, check_hyperparameters, read_model_json, write_model_json
from app.models.lgbm_binned import BinnedCache
from app.models.lightgbm_lib import import_lightgbm, lightgbm_aliases

if TYPE_CHECKING:
    import lightgbm as lgb  # imported where training needs it: ~1.5 s, and config checks need the class only

log = logging.getLogger(__name__)

BOOSTER_FILE = "model.txt"
LOG_PERIOD = 20  # Qlib's verbose_eval
Curves = dict[str, dict[str, list[float]]]  # {"train": {"l2": [...]}, "valid": {...}}, as record_evaluation

# LightGBM parameter (main name) -> the model field that sets it; its aliases are refused in ``params``.
LGBM_RESERVED: Mapping[str, str] = {
    "objective": "loss",
    "num_iterations": "num_boost_round",
    "early_stopping_round": "early_stopping_rounds",
    "seed": "seed",
    "num_threads": "num_threads",
}


def collect_lightgbm_params(
    owner: str, params: Mapping[str, object], extra: Mapping[str, object], reserved: Mapping[str, str]
) -> dict[str, object]:
    """Merge ``params`` and top-level keywords ``extra`` into one dict of LightGBM parameters, checking names.

    Raises:
        ConfigError: a name LightGBM does not know (with the closest valid names), a name that a model
            field sets (``reserved``: LightGBM main name -> field), or two names for one parameter.
    """
    aliases = lightgbm_aliases()
    merged: dict[str, object] = {}
    seen: dict[str, str] = {}  # main name -> the key that set it
    for where, source in (("params", params), ("top level", extra)):
        for key, value in source.items():
            if not isinstance(key, str) or key not in aliases:
                close = difflib.get_close_matches(str(key), list(aliases), n=3, cutoff=0.6)
                hint = f"did you mean {', '.join(close)}? " if close else ""
                raise ConfigError(
                    f"{owner}: {key!r} ({where}) is neither a field of the model nor a LightGBM parameter; {hint}"
                    "see https://lightgbm.readthedocs.io/en/latest/Parameters.html for the valid names."
                )
            main = aliases[key]
            if main in reserved:
                raise ConfigError(
                    f"{owner}: {key!r} ({where}) is LightGBM's {main!r}, which the model sets from its "
                    f"field {reserved[main]!r}; set model.{reserved[main]} instead."
                )
            if main in seen:
                raise ConfigError(
                    f"{owner}: {seen[main]!r} and {key!r} both set LightGBM's {main!r}; keep only one of them."
                )
            seen[main] = key
            merged[key] = value
    return merged


def booster_params(
    objective: str, seed: int, num_threads: int | None, params: Mapping[str, object]
) -> dict[str, object]:
    """The parameters handed to ``lightgbm.train``: seeded, deterministic and quiet unless ``params`` says otherwise.

    ``force_col_wise`` pins the histogram layout, which LightGBM otherwise picks by timing both (a run-to-run
    difference that ``deterministic`` alone does not remove). Only ``seed`` is set, as Qlib's configs set it:
    LightGBM derives ``bagging_seed``, ``feature_fraction_seed`` and ``data_random_seed`` from it, and pinning
    any of them to ``seed`` as well gives a different model than Qlib's.
    """
    aliases = lightgbm_aliases()
    given = {aliases[k] for k in params}
    defaults: dict[str, object] = {
        "objective": objective,
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": "force_row_wise" not in given,
    }
    if num_threads is not None:
        defaults["num_threads"] = num_threads
    return {**{k: v for k, v in defaults.items() if k not in given}, **params}


def check_common_values(owner: str, seed: int, num_threads: int | None, early_stopping_rounds: int | None) -> None:
    """Range checks shared by the LightGBM-based models (types are checked by ``check_hyperparameters``).

    Raises:
        ConfigError: naming the field, its value and the allowed range.
    """
    if not 0 <= seed < 2**31:
        raise ConfigError(f"{owner}: seed={seed} must be in 0..2147483647 (LightGBM seeds are C ints); fix model.seed.")
    if num_threads is not None and num_threads < 1:
        raise ConfigError(f"{owner}: num_threads={num_threads} must be >= 1, or null for all cores.")
    if early_stopping_rounds is not None and early_stopping_rounds < 1:
        raise ConfigError(
            f"{owner}: early_stopping_rounds={early_stopping_rounds} must be >= 1, or null to train every round."
        )


class LearnData:
    """One segment of the learn view as arrays: features ``x`` (rows × features), label ``y``.

    ``x`` may be given as the feature frame; its C-ordered array is made on first use only, because a model
    whose binned Datasets come from the cache never needs it (the copy is ~0.1 s per segment).
    """

    __slots__ = ("_x", "features", "y")

    def __init__(self, x: np.ndarray | pd.DataFrame, y: np.ndarray, features: list[str]) -> None:
        self._x, self.y, self.features = x, y, features

    @property
    def x(self) -> np.ndarray:
        if not isinstance(self._x, np.ndarray):
            self._x = np.ascontiguousarray(self._x.to_numpy())
        return self._x

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self._x.shape
        return rows, cols


def learn_data(dataset: Dataset, segment: str, owner: str) -> LearnData:
    """``segment`` of the learn view as arrays for LightGBM.

    Raises:
        ConfigError: the segment has no rows after the learn processors, more than one label column,
            NaN labels (no DropnaLabel), or no feature columns.
    """
    df = dataset.prepare(segment, ["feature", "label"], view="learn")
    if len(df) == 0:
        raise ConfigError(
            f"{owner}: segments.{segment} has no rows in the learn view (after the learn processors, e.g. "
            f"DropnaLabel); move segments.{segment} to dates with labels, or check the label expression."
        )
    labels, feats = df["label"], cast(pd.DataFrame, df["feature"])
    if labels.shape[1] != 1:
        raise ConfigError(
            f"{owner}: the dataset has {labels.shape[1]} label columns ({', '.join(map(str, labels.columns))}); "
            "LightGBM trains on exactly one, so configure a single label."
        )
    y = labels.to_numpy(dtype=np.float64).ravel()
    if np.isnan(y).any():
        raise ConfigError(
            f"{owner}: segments.{segment} has {int(np.isnan(y).sum())} rows with a NaN label in the learn view; "
            "add DropnaLabel to the handler's learn_processors."
        )
    if feats.shape[1] == 0:
        raise ConfigError(f"{owner}: the dataset has no feature columns; configure the handler's features.")
    return LearnData(feats, y, [str(c) for c in feats.columns])


def infer_features(dataset: Dataset, segment: str, features: list[str], owner: str) -> pd.DataFrame:
    """``segment`` of the infer view with exactly the trained ``features``, in training order.

    Raises:
        ConfigError: a trained feature is missing from the dataset.
    """
    x = dataset.prepare(segment, "feature", view="infer")
    if list(x.columns) == features:
        return x
    missing = [f for f in features if f not in x.columns]
    if missing:
        raise ConfigError(
            f"{owner} was trained on {len(features)} features, but segments.{segment} lacks "
            f"{len(missing)} of them ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); "
            "predict with the dataset configuration the model was trained on."
        )
    return x.loc[:, features]


def _progress(owner: str, bar: ProgressBar) -> Callable[[lgb.callback.CallbackEnv], None]:
    """Log the scores every ``LOG_PERIOD`` rounds and move ``bar`` to the rounds done."""

    def callback(env: lgb.callback.CallbackEnv) -> None:
        check_stop()  # a cancelled task stops at its next round
        results = env.evaluation_result_list or []
        note = " ".join(f"{data} {name} {value:.4g}" for data, name, value, *_ in results)
        bar.update(completed=env.iteration - env.begin_iteration + 1, note=note)
        if (env.iteration + 1) % LOG_PERIOD == 0:
            scores = "  ".join(f"{data}'s {name}: {value:.6g}" for data, name, value, *_ in results)
            log.info("%s [%d] %s", owner, env.iteration + 1, scores)

    return callback


def train_booster(
    params: Mapping[str, object],
    train: LearnData,
    valid: LearnData | None,
    *,
    rounds: int,
    early_stopping_rounds: int | None,
    owner: str,
    weight: np.ndarray | None = None,
    binned: tuple[BinnedCache, Mapping[str, object]] | None = None,
    timings: dict[str, float] | None = None,
) -> tuple[lgb.Booster, Curves]:
    """Train one booster; early stopping on ``valid`` when given. The returned booster holds only the
    trees up to the best iteration (LightGBM trims it), and the curves cover every round trained.

    ``binned`` = (cache, what identifies the train/valid rows): the binned Datasets are loaded from, or saved
    to, that cache (not with ``weight``, which the binned file would carry). ``timings["boost"]``, when given,
    receives the seconds spent boosting (what no reuse can save).
    """
    import_lightgbm()
    import lightgbm as lgb

    if binned is not None and weight is None:
        dtrain, dvalid = binned[0].datasets(params, train, valid, binned[1])
    else:
        dtrain = lgb.Dataset(train.x, label=train.y, weight=weight, feature_name=train.features, free_raw_data=False)
        dvalid = (
            None
            if valid is None
            else lgb.Dataset(valid.x, label=valid.y, feature_name=valid.features, reference=dtrain)
        )
    sets, names = [dtrain], ["train"]
    curves: Curves = {}
    bar = ProgressBar(rounds, owner, unit="rounds")
    callbacks: list[Callable[[lgb.callback.CallbackEnv], None]] = [lgb.record_evaluation(curves), _progress(owner, bar)]
    if valid is None:
        log.info("%s: the dataset has no 'valid' segment; training all %d rounds without early stopping", owner, rounds)
    else:
        assert dvalid is not None
        sets.append(dvalid)
        names.append("valid")
        if early_stopping_rounds is None:
            log.info("%s: early_stopping_rounds is null; training all %d rounds", owner, rounds)
        else:
            callbacks.append(lgb.early_stopping(early_stopping_rounds, verbose=False))
    started = time.perf_counter()
    with bar:
        booster = lgb.train(
            dict(params), dtrain, num_boost_round=rounds, valid_sets=sets, valid_names=names, callbacks=callbacks
        )
        trained = max(
            (len(v) for metrics in curves.values() for v in metrics.values()), default=booster.current_iteration()
        )
        if trained < rounds:
            bar.update(note=f"stopped early, kept {booster.current_iteration()}")
    if timings is not None:
        timings["boost"] = time.perf_counter() - started
    log.info("%s: kept %d of %d rounds trained", owner, booster.current_iteration(), trained)
    return booster, curves


def log_curves(recorder: CurveRecorder | None, curves: Curves, prefix: str = "") -> None:
    """Send per-iteration curves to ``recorder`` in one go, keys like ``train.l2``, value i at step i."""
    if recorder is None:
        return
    recorder.log_series(
        {f"{prefix}{data}.{metric}": values for data, metrics in curves.items() for metric, values in metrics.items()}
    )


def load_booster(path: Path, owner: str) -> lgb.Booster:
    """A LightGBM text model from ``path``.

    Raises:
        ConfigError: the file is missing.
    """
    if not path.is_file():
        raise ConfigError(f"{owner}: {path} is missing; the saved model directory is incomplete, save it again.")
    import_lightgbm()
    import lightgbm as lgb

    return lgb.Booster(model_file=str(path))


@dataclass(kw_only=True, init=False)
class LightGBMModel:
    """Gradient-boosted trees (Qlib's ``LGBModel``); see the module docstring for the semantics.

    Fields: ``loss`` (``mse`` | ``binary``), ``num_boost_round`` (max rounds), ``early_stopping_rounds``
    (null: off), ``seed``, ``num_threads`` (null: LightGBM's default), ``params`` (any other LightGBM
    parameter). Unknown keyword arguments that LightGBM knows are added to ``params``.

    Raises:
        ConfigError: a wrong type or range, or a keyword that is neither a field nor a LightGBM parameter.
    """

    registry_name = "lgbm"

    loss: Literal["mse", "binary"]
    num_boost_round: int
    early_stopping_rounds: int | None
    seed: int
    num_threads: int | None
    params: dict[str, object]
    _booster: lgb.Booster | None = field(init=False, repr=False, compare=False)
    _features: list[str] = field(init=False, repr=False, compare=False)
    fit_timings: dict[str, float] = field(init=False, repr=False, compare=False)  # {"boost": s} of the last fit

    def __init__(
        self,
        *,
        loss: Literal["mse", "binary"] = "mse",
        num_boost_round: int = 1000,
        early_stopping_rounds: int | None = 50,
        seed: int = 0,
        num_threads: int | None = None,
        params: Mapping[str, object] | None = None,
        **lightgbm_params: object,
    ) -> None:
        self.loss, self.num_boost_round, self.early_stopping_rounds = loss, num_boost_round, early_stopping_rounds
        self.seed, self.num_threads = seed, num_threads
        self.params = {} if params is None else params  # type: ignore[assignment]  # checked next
        check_hyperparameters(self)
        name = type(self).__name__
        self.params = collect_lightgbm_params(name, self.params, lightgbm_params, LGBM_RESERVED)
        if num_boost_round < 1:
            raise ConfigError(f"{name}: num_boost_round={num_boost_round} must be >= 1; fix model.num_boost_round.")
        check_common_values(name, seed, num_threads, early_stopping_rounds)
        self._booster, self._features, self.fit_timings = None, [], {}

    @property
    def queue(self) -> str:
        """LightGBM trains on CPU."""
        return "cpu"

    @property
    def best_iteration(self) -> int | None:
        """Rounds kept after early stopping (all rounds without it); None before fit/load."""
        return None if self._booster is None else self._booster.current_iteration()

    def hyperparameters(self) -> dict[str, object]:
        """The constructor's keyword arguments (what ``model.json`` stores)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    def fit(self, dataset: Dataset, recorder: CurveRecorder | None = None) -> None:
        """Train on ``train`` (learn view), early-stop on ``valid`` when the dataset has it; curves to ``recorder``.

        Raises:
            ConfigError: empty train/valid segment, NaN or multiple labels, no features.
        """
        name = type(self).__name__
        train = learn_data(dataset, "train", name)
        valid = learn_data(dataset, "valid", name) if "valid" in dataset.segments else None
        params = booster_params(self.loss, self.seed, self.num_threads, self.params)
        cache = BinnedCache.for_dataset(dataset)
        timings: dict[str, float] = {}
        rows: dict[str, object] = {
            k: [str(dataset.segments[k].start.date()), str(dataset.segments[k].end.date())]
            for k in ("train", "valid")
            if k in dataset.segments
        }
        self._booster, curves = train_booster(
            params,
            train,
            valid,
            rounds=self.num_boost_round,
            early_stopping_rounds=self.early_stopping_rounds,
            owner=name,
            binned=None if cache is None else (cache, rows),
            timings=timings,
        )
        self._features = train.features
        log_curves(recorder, curves)
        self.fit_timings = timings

    def predict(self, dataset: Dataset, segment: str = "test") -> pd.Series:
        """Scores for ``segment`` (infer view), a Series named ``score`` indexed ``(datetime, instrument)``.

        Raises:
            ConfigError: not fitted, or the dataset lacks a trained feature.
        """
        booster = self._fitted()
        x = infer_features(dataset, segment, self._features, type(self).__name__)
        values = booster.predict(x.to_numpy(), num_iteration=self.best_iteration) if len(x) else np.empty(0)
        return pd.Series(np.asarray(values, dtype=np.float64), index=x.index, name="score")

    def save(self, directory: Path) -> None:
        """Write ``model.json`` and LightGBM's text model (best iteration only) to ``directory``.

        Raises:
            ConfigError: not fitted.
        """
        booster = self._fitted()
        write_model_json(directory, self.registry_name, self.hyperparameters())
        booster.save_model(str(directory / BOOSTER_FILE), num_iteration=self.best_iteration)

    @classmethod
    def load(cls, directory: Path) -> LightGBMModel:
        """The model saved in ``directory`` by :meth:`save`.

        Raises:
            ConfigError: not a saved LightGBM model, or its files are missing.
        """
        kind, params = read_model_json(directory)
        if kind != cls.registry_name:
            raise ConfigError(f"{directory} holds a {kind!r} model, not {cls.registry_name!r}; use load_model().")
        model = cls(**params)
        model._booster = load_booster(directory / BOOSTER_FILE, cls.__name__)
        model._features = list(model._booster.feature_name())
        return model

    def _fitted(self) -> lgb.Booster:
        if self._booster is None:
            raise ConfigError(f"{type(self).__name__} is not fitted; call fit(dataset) or load(directory) first.")
        return self._booster
