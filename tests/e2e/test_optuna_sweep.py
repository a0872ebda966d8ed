"""``qtrain run -m hydra/sweeper=optuna`` with the local launcher on a small market: each job returns its
``objective`` to Optuna, the counter knows the trial budget, the best trial is printed, and a sweep that cannot
optimise fails before anything trains."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from app.config.jobs import validate_jobs
from app.core.errors import ConfigError
from app.data.synth import SynthSpec, write_synth_market
from app.tracking.manager import ExpManager
from tests.small_specs import QUICK_LGBM, SEGMENTS, qtrain_in

pytestmark = pytest.mark.slow
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")

# two trials of a seeded TPE (its first trials are random draws) over the number of leaves
OPTUNA = ["hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=3",
          "model.num_leaves=int(interval(4,64))"]  # fmt: skip
FIXED = [o for o in QUICK_LGBM if not o.startswith("model.num_leaves=")]


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("market")
    write_synth_market(root, SynthSpec(instruments=25, days=360, seed=8))
    return root


def _qtrain(work: Path, market: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return qtrain_in(work, market, *args, timeout=600)


def test_a_local_optuna_sweep_optimises_the_objective_and_prints_the_best_trial(tmp_path: Path, market: Path) -> None:
    out = _qtrain(tmp_path, market, "run", "-m", SEGMENTS, *FIXED, *OPTUNA, "hydra.sweeper.direction=maximize",
                  "objective=Rank IC")  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "[sweep 1/2]" in out.stdout and "[sweep 2/2]" in out.stdout and "[sweep 3/" not in out.stdout
    assert "setup plugin alembic" not in text and "Context impl" not in text
    assert "## sweep: 2 of 2 jobs finished" in out.stdout

    runs = ExpManager(f"sqlite:///{tmp_path / 'mlflow.db'}").search_records(["qtrain"])
    assert sorted(runs["status"]) == ["FINISHED", "FINISHED"]
    assert runs["params.model.num_leaves"].nunique() == 2  # two different trials
    (results,) = (tmp_path / ".qtrain" / "hydra" / "multirun").glob("*/optimization_results.yaml")
    found = OmegaConf.load(results)
    # the value Optuna kept as best is the larger Rank IC MLflow recorded, for that run's number of leaves
    best = runs.loc[runs["metrics.Rank IC"].idxmax()]
    assert found.best_value == best["metrics.Rank IC"]
    assert str(found.best_params["model.num_leaves"]) == best["params.model.num_leaves"]
    line = re.search(r"^### best trial: Rank IC = (\S+) \(job \d, run (\w+)\)$", out.stdout, flags=re.M)
    assert line, out.stdout[-3000:]
    assert float(line.group(1)) == pytest.approx(best["metrics.Rank IC"], rel=1e-5)
    assert line.group(2) == best["run_id"]
    assert f"model.num_leaves={best['params.model.num_leaves']}\n" in out.stdout


def test_a_sweep_that_cannot_optimise_fails_before_training(tmp_path: Path, market: Path) -> None:
    base = ["data=import", f"data.store.root={market}", "data.market=synth", SEGMENTS, *FIXED]
    with pytest.raises(ConfigError, match=r"^hydra/sweeper=optuna optimises a number each job returns, and objective"):
        validate_jobs([*base, *OPTUNA], multirun=True)
    with pytest.raises(ConfigError, match=r"^objective: 'Sharpe' is not a metric this job's records log; choose"):
        validate_jobs([*base, *OPTUNA, "objective=Sharpe"], multirun=True)
    with pytest.raises(ConfigError, match=r"^objective: 'IC' is not a metric"):  # a run without signal analysis
        validate_jobs([*base, "record=[signal,port_ana]", "objective=IC"], multirun=False)

    out = _qtrain(tmp_path, market, "run", "-m", SEGMENTS, *FIXED, *OPTUNA)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: hydra/sweeper=optuna optimises a number each job returns")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / ".qtrain" / "hydra").exists()
