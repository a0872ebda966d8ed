"""Binned LightGBM Datasets reused across jobs: the same booster as from freshly binned data, keyed correctly."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.dataset.cache import FeatureCache
from app.dataset.dataset import Dataset
from app.models.lgbm import LightGBMModel, booster_params, import_lightgbm, learn_data, train_booster
from app.models.lgbm_binned import BinnedCache, dataset_params
from tests.unit.models import market

FAST = {"num_leaves": 15, "learning_rate": 0.1, "num_threads": 1, "subsample": 0.8, "subsample_freq": 1}


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return market.small_dataset(tmp_path_factory)


def cached(plain: Dataset, root: Path, fingerprint: str = "views-1") -> Dataset:
    """The same views as if they had come through a feature cache at ``root``."""
    return Dataset(plain.views, {k: [str(s.start.date()), str(s.end.date())] for k, s in plain.segments.items()},
                   cache=FeatureCache(root), fingerprint=fingerprint)  # fmt: skip


def model_string(dataset: Dataset, seed: int, **extra: object) -> str:
    model = LightGBMModel(num_boost_round=40, early_stopping_rounds=10, seed=seed, **(FAST | extra))  # type: ignore[arg-type]
    model.fit(dataset)
    assert model._booster is not None
    return str(model._booster.model_to_string())


def bin_files(root: Path) -> list[Path]:
    return sorted((root / "lightgbm").glob("*.bin"))


def test_reused_binned_data_trains_the_same_booster_as_fresh_data(plain: Dataset, tmp_path: Path) -> None:
    fresh = {seed: model_string(plain, seed) for seed in (0, 1)}
    first = cached(plain, tmp_path)
    assert model_string(first, 0) == fresh[0]  # bins and saves
    assert len(bin_files(tmp_path)) == 2  # train and valid
    stamps = [p.stat().st_mtime_ns for p in bin_files(tmp_path)]
    again = cached(plain, tmp_path)
    assert model_string(again, 0) == fresh[0]  # loads
    assert model_string(cached(plain, tmp_path), 1) == fresh[1]  # another seed, same bins (rows < sample count)
    assert [p.stat().st_mtime_ns for p in bin_files(tmp_path)] == stamps
    assert fresh[0] != fresh[1]


def test_binning_parameters_and_other_views_get_their_own_files(plain: Dataset, tmp_path: Path) -> None:
    model_string(cached(plain, tmp_path), 0)
    assert model_string(cached(plain, tmp_path), 0, max_bin=63) == model_string(plain, 0, max_bin=63)
    assert len(bin_files(tmp_path)) == 4
    model_string(cached(plain, tmp_path, fingerprint="views-2"), 0)
    assert len(bin_files(tmp_path)) == 6
    model_string(cached(plain, tmp_path), 0, learning_rate=0.05)  # a training parameter: no new bins
    assert len(bin_files(tmp_path)) == 6


def test_key_follows_lightgbms_dataset_parameters() -> None:
    lgb = import_lightgbm()
    params = booster_params("mse", 3, 2, {"max_bin": 63, "num_leaves": 7, "min_data_in_leaf": 5})
    assert dataset_params(lgb, params, rows=1000) == {"max_bin": 63, "min_data_in_leaf": 5}
    sampled = dataset_params(lgb, params, rows=10**6)  # rows are sampled to find the bins: the seed matters
    assert sampled == {"max_bin": 63, "min_data_in_leaf": 5, "seed": 3}  # LightGBM derives data_random_seed
    assert dataset_params(lgb, {**params, "max_bins": 31}, rows=10) == {"max_bin": 31, "min_data_in_leaf": 5}


def test_a_torn_file_is_binned_again(plain: Dataset, tmp_path: Path) -> None:
    expected = model_string(plain, 0)
    model_string(cached(plain, tmp_path), 0)
    for path in bin_files(tmp_path):
        path.write_bytes(path.read_bytes()[:100])
    assert model_string(cached(plain, tmp_path), 0) == expected


def test_weights_bypass_the_cache(plain: Dataset, tmp_path: Path) -> None:
    import numpy as np

    train = learn_data(plain, "train", "test")
    cache = BinnedCache(tmp_path / "lightgbm", "views-1")
    params = booster_params("mse", 0, 1, {"num_leaves": 7})
    train_booster(params, train, None, rounds=3, early_stopping_rounds=None, owner="test",
                  weight=np.ones(len(train.y)), binned=(cache, {"train": ["a", "b"]}))  # fmt: skip
    assert bin_files(tmp_path) == []


def test_shipped_alias_table_is_the_installed_lightgbms() -> None:
    """Config checks read the alias table from a file so they need not import LightGBM; it must be current."""
    import json

    from app.models.lightgbm_lib import ALIASES_FILE

    lgb = import_lightgbm()
    doc = json.loads(ALIASES_FILE.read_text())
    current = lgb.basic._ConfigAliases._get_all_param_aliases()
    assert doc["lightgbm"] == lgb.__version__, f"regenerate {ALIASES_FILE.name} for LightGBM {lgb.__version__}"
    assert doc["aliases"] == current


def test_config_checks_do_not_import_lightgbm() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from app.models.lgbm import LightGBMModel; LightGBMModel(num_leaves=7, max_bin=63); "
        "print('lightgbm' in sys.modules, 'sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_lightgbm_loads_without_scikit_learn_and_sklearn_still_imports() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from app.models.lgbm import import_lightgbm; lgb = import_lightgbm(); "
        "print('sklearn' in sys.modules, lgb.compat.SKLEARN_INSTALLED); import sklearn; print(sklearn.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "sklearn"]
