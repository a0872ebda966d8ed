"""``qtrain run [overrides]``: the Hydra application that composes, validates and trains one task spec.

Sweeps use Hydra's multirun (``qtrain run -m seed=0,1,2 model=lgbm,double_ensemble``); each job trains one
spec. Heavy libraries load only once a job starts.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from app.config import conf_dir
from app.errors import QtrainError
from app.settings import get_settings


def run(argv: Sequence[str]) -> int:
    """Run the Hydra app with ``argv`` as its command line; returns the exit status."""
    import hydra

    sys.argv = ["qtrain run", *argv]

    @hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
    def job(cfg: Any) -> None:
        try:
            _train(cfg)
        except QtrainError as exc:
            if get_settings().debug:
                raise
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    job()
    return 0


def _train(cfg: Any) -> None:
    from hydra.core.hydra_config import HydraConfig

    from app.config import build_components, task_spec_from_config
    from app.data.describe import ensure_sample_market
    from app.dataset.cache import FeatureCache
    from app.tracking.manager import ExpManager
    from app.tracking.summary import KEY_METRICS
    from app.workflow.train import task_train

    settings = get_settings()
    if HydraConfig.get().runtime.choices.get("data") == "sample":
        cfg.data.root = str(settings.data_dir)  # the sample market lives where QTRAIN_DATA_DIR says
        if ensure_sample_market(settings.data_dir, 100, 1500):
            print(f"created the sample market at {settings.data_dir}")
    spec = task_spec_from_config(cfg)
    components = build_components(spec)
    manager = ExpManager(settings.tracking_uri, settings.artifact_root)
    result = task_train(
        spec, components, manager, experiment_name=str(cfg.experiment_name),
        cache=FeatureCache(settings.cache_dir / "features"),
    )  # fmt: skip
    print(f"run {result.run_id} (experiment {cfg.experiment_name}, task {spec.hash[:12]}) finished")
    for title, key in KEY_METRICS:
        if key in result.metrics:
            print(f"  {title:<20} {result.metrics[key]: .4f}")
    print(f"open the MLflow UI on it: mlflow ui --backend-store-uri {settings.tracking_uri}")
