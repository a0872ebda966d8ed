"""An Optuna sweep through the Celery launcher on a real worker: each batch of trials becomes pool tasks, each job
returns its ``objective`` from the worker's result, and the best trial is printed."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from omegaconf import OmegaConf

from tests.integration.celery_harness import Cluster, finish, runs_of
from tests.small_specs import QUICK_LGBM, SEGMENTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")


def test_an_optuna_sweep_on_a_celery_worker_minimises_the_objective(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(13)
    cluster.start_worker("w1")
    fixed = [o for o in QUICK_LGBM if not o.startswith("model.num_leaves=")]
    proc = cluster.qtrain(
        "run", "-m", SEGMENTS, *fixed, "seed=0", "hydra/launcher=celery", "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler.seed=3",
        "model.num_leaves=int(interval(4,64))", "objective=IC",  # Optuna's default direction: minimize
    )  # fmt: skip
    code, out, err = finish(proc)
    assert code == 0, out[-3000:] + err[-3000:] + cluster.worker_log("w1")
    assert "submitted 2 task(s) to pool qtrain" in out  # one batch of n_jobs trials
    assert "## sweep: 2 of 2 jobs finished" in out
    assert cluster.pool.stats("qtrain")["done"] == 2
    assert [status for _, status, _ in runs_of(cluster)] == ["FINISHED", "FINISHED"]

    runs = cluster.manager.search_records(["qtrain"])
    best = runs.loc[runs["metrics.IC"].idxmin()]
    (path,) = (cluster.work / ".qtrain" / "hydra" / "multirun").glob("*/optimization_results.yaml")
    found = OmegaConf.load(path)
    assert found.best_value == best["metrics.IC"]  # the value the job returned is the run's recorded IC
    assert str(found.best_params["model.num_leaves"]) == best["params.model.num_leaves"]
    line = re.search(r"^### best trial: IC = \S+ \(job \d, run (\w+)\)$", out, flags=re.M)
    assert line and line.group(1) == best["run_id"], out[-3000:]
