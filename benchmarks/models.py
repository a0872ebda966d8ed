"""Fit time of each benchmark model on the 100 x 1500 sample market, with its test IC.

Usage: python benchmarks/models.py [--models lgbm,double_ensemble,gru_ts,gru,mlp] [--epochs 2]

Datasets and models come from conf/ (the benchmark presets); torch models run --epochs epochs so the
figure is per-epoch cost, not a full 200-epoch training. Features are cached under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from app.config.compose import conf_dir
from app.data.describe import ensure_sample_market
from app.data.store import QlibStore
from app.dataset.cache import FeatureCache

RESULTS = Path(__file__).parent / "results"
DATASET_OF = {"lgbm": "alpha158", "double_ensemble": "alpha158", "gru_ts": "alpha158_gru20", "gru": "alpha360",
              "mlp": "alpha158_nn"}  # fmt: skip


def _daily_ic(score: pd.Series, label: pd.Series) -> float:
    frame = pd.DataFrame({"score": score, "label": label}).dropna()
    ic = frame.groupby(level="datetime").apply(lambda d: d["score"].corr(d["label"], method="spearman"))
    return float(np.nanmean(ic.to_numpy(dtype=float)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lgbm,double_ensemble,gru_ts,gru,mlp")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    root = RESULTS / "synth_100x1500"
    ensure_sample_market(root, 100, 1500)
    store, cache = QlibStore(root), FeatureCache(RESULTS / "cache")
    for name in args.models.split(","):
        overrides = [f"+dataset={DATASET_OF[name]}", f"+model={name}", "+seed=0"]
        if name in ("lgbm", "double_ensemble"):
            overrides.append("model.num_threads=2")
        else:
            overrides.append(f"model.n_epochs={args.epochs}")
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(overrides=overrides)
        started = time.perf_counter()
        dataset = instantiate(cfg.dataset).build(store, cache)
        data_time = time.perf_counter() - started
        model = instantiate(cfg.model, _convert_="all")
        started = time.perf_counter()
        model.fit(dataset)
        fit_time = time.perf_counter() - started
        score = model.predict(dataset, "test")
        label = dataset.prepare("test", "label", view="raw").iloc[:, 0]
        unit = (
            ""
            if name in ("lgbm", "double_ensemble")
            else f" ({args.epochs} epochs, {fit_time / args.epochs:.1f}s/epoch)"
        )
        print(
            f"{name:<16} data {data_time:5.1f}s  fit {fit_time:6.1f}s{unit}  test rank IC {_daily_ic(score, label):.4f}"
        )


if __name__ == "__main__":
    main()
