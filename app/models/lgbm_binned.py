"""LightGBM's binned Datasets kept beside the feature cache, so the jobs of a sweep bin their data once.

Constructing an ``lgb.Dataset`` (bin boundaries of every feature, then every row binned) costs more than the
boosting of a small model: ~2.3 s of a 3.9 s fit on 90k rows × 158 features. The binned data depend only on the
matrix, the label and the parameters LightGBM itself calls dataset parameters (``lgb.Dataset.get_params``: max_bin,
min_data_in_bin, use_missing, ...) plus ``min_data_in_leaf`` (``feature_pre_filter`` drops features that cannot
split with it). The seed matters only when LightGBM samples rows to find the bins, i.e. with more rows than
``bin_construct_sample_cnt``. The first job with a key saves its constructed Dataset with ``save_binary``
(written aside, renamed into place); later jobs, in this process or another, load that file: the booster they
train is the same (a test compares the model strings).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.dataset.cache import key_digest
from app.dataset.dataset import Dataset

if TYPE_CHECKING:
    import lightgbm as lgb

    from app.models.lgbm import LearnData

log = logging.getLogger(__name__)

FOLDER = "lightgbm"  # under the feature cache's root
BIN_SAMPLE_DEFAULT = 200_000  # LightGBM's bin_construct_sample_cnt


class BinnedCache:
    """Binned train/valid Datasets of one dataset (its feature-cache ``fingerprint``) under ``root``."""

    def __init__(self, root: Path, fingerprint: str) -> None:
        self.root = Path(root)
        self.fingerprint = fingerprint
        self.hits = 0

    @classmethod
    def for_dataset(cls, dataset: Dataset) -> BinnedCache | None:
        """The binned cache beside ``dataset``'s feature cache; None when its views were not cached."""
        if dataset.cache is None or dataset.fingerprint is None:
            return None
        return cls(dataset.cache.root / FOLDER, dataset.fingerprint)

    def datasets(
        self,
        params: Mapping[str, object],
        train: LearnData,
        valid: LearnData | None,
        segments: Mapping[str, object],
    ) -> tuple[lgb.Dataset, lgb.Dataset | None]:
        """Train (and valid) Datasets for ``params``: loaded when binned before, else built and saved.

        ``segments`` maps ``train``/``valid`` to what identifies their rows within the dataset (the dates).
        """
        from app.models.lightgbm_lib import import_lightgbm

        lgb = import_lightgbm()
        binning = dataset_params(lgb, params, len(train.y))
        train_key = self._key("train", segments["train"], train, binning)
        train_path = self._path(train_key)
        valid_path = (
            self._path(self._key("valid", segments.get("valid"), valid, {"train": train_key})) if valid else None
        )
        if train_path.is_file() and (valid_path is None or valid_path.is_file()):
            try:
                loaded = _load(lgb, params, train_path, valid_path)
            except lgb.basic.LightGBMError as exc:
                log.warning("binned LightGBM data %s is unreadable (%s); binning again", train_path, exc)
            else:
                self.hits += 1
                log.info("LightGBM binned data loaded from %s", train_path)
                return loaded
        dtrain = lgb.Dataset(
            train.x, label=train.y, feature_name=train.features, free_raw_data=False, params=dict(params)
        )
        dvalid = None
        if valid is not None:
            dvalid = lgb.Dataset(
                valid.x, label=valid.y, feature_name=valid.features, reference=dtrain, params=dict(params)
            )
        _save_atomic(dtrain, train_path)
        if dvalid is not None and valid_path is not None:
            _save_atomic(dvalid, valid_path)
        return dtrain, dvalid

    def _key(self, name: str, rows: object, data: LearnData | None, params: Mapping[str, object]) -> dict[str, object]:
        from importlib.metadata import version

        shape = list(data.shape) if data is not None else None
        return {
            "kind": "lightgbm-binned",
            "lightgbm": version("lightgbm"),
            "views": self.fingerprint,
            "segment": name,
            "rows": rows,
            "shape": shape,
            "features": data.features if data is not None else None,
            "params": dict(params),
        }

    def _path(self, key: Mapping[str, object]) -> Path:
        return self.root / f"{key_digest(key)}.bin"


def dataset_params(lgb: object, params: Mapping[str, object], rows: int) -> dict[str, object]:
    """The parameters of ``params`` that change LightGBM's binned Dataset, by main name.

    LightGBM's own list (``Dataset.get_params``) plus ``min_data_in_leaf`` (feature pre-filtering); the row
    sampling seed ``data_random_seed`` only when LightGBM samples (more rows than ``bin_construct_sample_cnt``).
    """
    from app.models.lightgbm_lib import lightgbm_aliases

    aliases = lightgbm_aliases()
    main = {aliases.get(k, k): v for k, v in params.items()}
    probe = lgb.Dataset(np.zeros((1, 1)), params=dict(main))  # type: ignore[attr-defined]  # not constructed
    chosen = {k: v for k, v in probe.get_params().items()}
    if "min_data_in_leaf" in main:
        chosen["min_data_in_leaf"] = main["min_data_in_leaf"]
    sample = main.get("bin_construct_sample_cnt", BIN_SAMPLE_DEFAULT)
    if rows <= int(sample):  # type: ignore[call-overload]
        chosen.pop("data_random_seed", None)
    elif "data_random_seed" not in chosen:  # LightGBM derives it from seed
        chosen["seed"] = main.get("seed")
    return {k: chosen[k] for k in sorted(chosen)}


def _load(
    lgb: object, params: Mapping[str, object], train_path: Path, valid_path: Path | None
) -> tuple[lgb.Dataset, lgb.Dataset | None]:
    dtrain = lgb.Dataset(str(train_path), params=dict(params), free_raw_data=False)  # type: ignore[attr-defined]
    dtrain.construct()
    dvalid = None
    if valid_path is not None:
        dvalid = lgb.Dataset(str(valid_path), reference=dtrain, params=dict(params))  # type: ignore[attr-defined]
        dvalid.construct()
    return dtrain, dvalid


def _save_atomic(data: lgb.Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # save_binary refuses to write over an existing file, so the aside name is fresh rather than pre-created.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        data.save_binary(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
