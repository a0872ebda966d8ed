"""`qtrain run` end to end on a small market: presets, sweeps, rolling, delayed training, and bad configs
that fail before anything is trained."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from app.config.jobs import validate_jobs
from app.core.errors import QtrainError
from app.data.synth import SynthSpec, write_synth_market
from app.tracking.manager import ExpManager
from tests.small_specs import QUICK_LGBM, SEGMENTS, qtrain_in

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("market")
    write_synth_market(root, SynthSpec(instruments=25, days=360, seed=8))
    # a market whose only member left before the test segment starts
    (root / "instruments" / "ghost.txt").write_text("SH600000\t2015-01-05\t2015-03-31\n")
    return root


def _qtrain(work: Path, market: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return qtrain_in(work, market, *args, timeout=900)


def _runs(work: Path, experiment: str = "qtrain") -> pd.DataFrame:
    return ExpManager(f"sqlite:///{work / 'mlflow.db'}").search_records([experiment])


def test_the_lgbm_preset_trains_and_records(tmp_path: Path, market: Path) -> None:
    # experiment=lgbm_alpha158 is the default config recorded under its own experiment name
    out = _qtrain(tmp_path, market, "run", "experiment=lgbm_alpha158", SEGMENTS, *QUICK_LGBM, "seed=3")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "finished" in out.stdout and "Rank IC" in out.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'}" in out.stdout
    runs = _runs(tmp_path, "lgbm_alpha158")
    assert list(runs["status"]) == ["FINISHED"] and runs["tags.feature_cache"].iloc[0] == "miss"
    assert runs["params.seed"].iloc[0] == "3" and "metrics.1day.excess_return_with_cost.annualized_return" in runs
    page = f"http://127.0.0.1:5000/#/experiments/{runs['experiment_id'].iloc[0]}/runs/{runs['run_id'].iloc[0]}"
    assert f", then {page}?workflowType=machine_learning\n" in out.stdout  # the run, in model-training mode
    report = _qtrain(tmp_path, market, "report", "lgbm_alpha158")
    assert report.returncode == 0 and "LightGBMModel" in report.stdout and "FINISHED" in report.stdout


@pytest.mark.parametrize(
    ("experiment", "overrides"),
    [
        ("double_ensemble_alpha158", ["model.num_models=2", "model.sub_weights=[1,1]", "model.epochs=15",
                                      "model.num_threads=1", "model.num_leaves=15", "model.lambda_l1=0"]),
        ("gru_alpha158", ["model.n_epochs=2", "model.batch_size=256", "model.device=cpu"]),
        ("mlp_alpha158", ["model.n_epochs=2", "model.device=cpu"]),
    ],
)  # fmt: skip
def test_each_experiment_preset_runs_end_to_end(tmp_path: Path, market: Path, experiment: str,
                                                overrides: list[str]) -> None:  # fmt: skip
    out = _qtrain(
        tmp_path, market, "run", f"experiment={experiment}", SEGMENTS, *overrides,
        "record.port_ana.config.topk=5", "record.port_ana.config.n_drop=1",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    runs = _runs(tmp_path, experiment)
    assert list(runs["status"]) == ["FINISHED"]
    assert runs["metrics.Rank IC"].notna().all() and "metrics.1day.excess_return_with_cost.annualized_return" in runs


def test_sweep_builds_features_once_and_prints_the_summary(tmp_path: Path, market: Path) -> None:
    out = _qtrain(tmp_path, market, "run", "-m", SEGMENTS, *QUICK_LGBM, "seed=0,1,2,3")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[sweep 4/4]" in out.stdout and "## sweep: 4 of 4 jobs finished" in out.stdout
    assert "Launching 4 jobs locally" in out.stdout + out.stderr
    assert "composing the config of job" not in out.stdout + out.stderr  # each job composed once, to validate it
    summary = out.stdout.split("mean ± std per configuration")[1]
    assert "(defaults)" in summary and "±" in summary and "|      4 |" in summary
    runs = _runs(tmp_path)
    assert sorted(runs["status"]) == ["FINISHED"] * 4
    assert sorted(runs["tags.feature_cache"]) == ["hit", "hit", "hit", "miss"]
    assert sorted(runs["params.seed"]) == ["0", "1", "2", "3"]
    cached = list((tmp_path / ".qtrain" / "cache" / "features").rglob("*.arrow"))
    assert len(cached) == 3  # raw features, infer view, learn view: built by the first job only
    [saved] = (tmp_path / ".qtrain" / "hydra" / "multirun").glob("*/summary.md")
    assert out.stdout.rstrip().endswith(f"summary saved to {saved}")
    assert sorted(name.rsplit("-", 1)[0] for name in runs["run_name"]) == [f"lgbm-alpha158-seed{s}" for s in range(4)]


def test_joblib_launcher_sweeps_in_parallel_processes(tmp_path: Path, market: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    out = _qtrain(
        tmp_path, market, "run", "-m", SEGMENTS, *QUICK_LGBM, "seed=0,1", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "## sweep: 2 of 2 jobs finished" in out.stdout
    assert sorted(_runs(tmp_path)["status"]) == ["FINISHED", "FINISHED"]


def test_rolling_trains_windows_and_evaluates_the_merged_signal(tmp_path: Path, market: Path) -> None:
    out = _qtrain(tmp_path, market, "run", SEGMENTS, *QUICK_LGBM, "trainer=rolling", "trainer.rolling.step=40")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "rolling: 3 windows of 40 trading days (expanding)" in out.stdout
    runs = _runs(tmp_path)
    merged = runs[runs["tags.rolling"] == "merged"]
    windows = runs[runs["tags.rolling"] != "merged"]
    assert len(merged) == 1 and len(windows) == 3 and set(runs["status"]) == {"FINISHED"}
    assert set(merged["tags.rolling_runs"].iloc[0].split(",")) == set(windows["run_id"])
    assert len(set(windows["run_name"])) == 3 and all(n.startswith("lgbm-alpha158-seed0-") for n in windows["run_name"])
    assert merged["run_name"].iloc[0] == f"lgbm-alpha158-seed0-rolling-{merged['tags.task_hash'].iloc[0][:6]}"
    manager = ExpManager(f"sqlite:///{tmp_path / 'mlflow.db'}")
    preds = [manager.get_recorder(r).load_object("pred") for r in windows["run_id"]]
    merged_pred = manager.get_recorder(merged["run_id"].iloc[0]).load_object("pred")
    assert merged_pred.index.equals(pd.concat(preds).sort_index().index) and merged_pred.index.is_unique
    calendar = pd.DatetimeIndex(sorted({d for p in preds for d in p.index.get_level_values("datetime")}))
    assert calendar[0] == pd.Timestamp("2016-01-04")
    full_calendar = pd.DatetimeIndex(pd.read_csv(market / "calendars" / "day.txt", header=None)[0])
    for run_id in windows["run_id"]:
        segments = manager.get_recorder(run_id).load_object("spec")["data"]["segments"]
        test_start = full_calendar.get_loc(pd.Timestamp(segments["test"][0]))
        for name in ("train", "valid"):
            assert full_calendar.get_loc(pd.Timestamp(segments[name][1])) <= test_start - 2  # no label leak
    assert merged["metrics.IC"].notna().all()
    assert merged["metrics.1day.excess_return_with_cost.max_drawdown"].notna().all()


def test_delayed_trainer_prepares_then_qtrain_end_fits(tmp_path: Path, market: Path) -> None:
    out = _qtrain(tmp_path, market, "run", SEGMENTS, *QUICK_LGBM, "trainer=delayed", "trainer.end=false")
    assert out.returncode == 0, out.stderr[-3000:]
    (run_id,) = _runs(tmp_path)["run_id"]
    assert f"qtrain end {run_id}" in out.stdout and list(_runs(tmp_path)["status"]) == ["SCHEDULED"]
    end = _qtrain(tmp_path, market, "end", run_id)
    assert end.returncode == 0, end.stderr[-3000:]
    assert list(_runs(tmp_path)["status"]) == ["FINISHED"]
    again = _qtrain(tmp_path, market, "end", run_id)
    assert again.returncode == 2 and "already FINISHED" in again.stderr


def test_a_bad_config_exits_2_with_one_line_and_trains_nothing(tmp_path: Path, market: Path) -> None:
    out = _qtrain(tmp_path, market, "run", SEGMENTS, "model.num_boost_round=many")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: model.num_boost_round: expected int, got 'many' (str)"]
    assert not (tmp_path / "mlflow.db").exists()
    out = _qtrain(tmp_path, market, "run", "model=nope")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def _base(market: Path) -> list[str]:
    return ["data=import", f"data.store.root={market}", "data.market=synth", SEGMENTS]


@pytest.mark.parametrize(
    ("overrides", "multirun", "message"),
    [
        (["model=nope"], False, r"^model=nope: no such option in conf/model/; choose one of: .*lgbm"),
        (["experiment=nope"], False, r"^experiment=nope: no such option"),
        (["model.num_leavs=3"], False, r"^model.num_leavs: no such key in the config"),
        (["+model.num_leavs=3"], False, r"^model: LightGBMModel: 'num_leavs' \(top level\) is neither a field"),
        (["model.num_boost_round=many"], False, r"^model.num_boost_round: expected int, got 'many'"),
        (["record.port_ana.config.topk=ten"], False, r"^record.port_ana.config.topk: expected int"),
        (["dataset.step_len=long"], False, r"^dataset.step_len: expected int \| None"),
        (["data.segments.test=[2030-01-02,2030-03-01]"], False, r"^dataset.segments.test \[2030-01-02, 2030-03-01\]"),
        (["data.market=ghost"], False, r"^dataset.handler.market: market 'ghost' .* lists no instrument during"),
        (["data.market=nomarket"], False, r"^dataset.handler.market: unknown market 'nomarket'"),
        (["data.store.root=/nonexistent/store"], False, r"/nonexistent/store"),
        (["seed=0,1"], False, r"^seed=0,1 is a sweep; add -m"),
        (["seed=0,1", "model=lgbm,nope"], True, r"^job 1 \(.*model=nope.*\): model=nope: no such option"),
        (
            ["trainer=rolling", "trainer.rolling.mode=weekly"],
            False,
            r"^trainer.rolling.mode: expected one of 'expanding'",
        ),
        (["trainer=rolling", "trainer.rolling.step=0"], False, r"^trainer.rolling.step"),
        (["trainer.fail_fast=maybe"], False, r"trainer.fail_fast"),
        (["data.segments.test=[2016-01-04"], False, r"2016-01-04"),
        (["limits.time_limit_s=-5"], False, r"^limits.time_limit_s must be a positive number of seconds"),
        (["seed=0,1", "+limits.hard_s=3"], True, r"^job 0 .*limits.hard_s: not a time limit"),
    ],
)
def test_bad_configs_fail_before_training_naming_the_key(
    market: Path, overrides: list[str], multirun: bool, message: str
) -> None:
    with pytest.raises(QtrainError, match=message):
        validate_jobs([*_base(market), *overrides], multirun=multirun)


def test_time_limits_are_not_part_of_a_tasks_identity(market: Path) -> None:
    from app.config.jobs import validated_job

    limits = ["limits.soft_time_limit_s=60", "limits.time_limit_s=90"]
    jobs = validate_jobs([*_base(market), *QUICK_LGBM, "seed=0", "limits.time_limit_s=null,90"], multirun=True)
    specs = [validated_job(job) for job in jobs]
    assert len(jobs) == 2 and specs[0] and specs[1]
    assert specs[0][0].hash == specs[1][0].hash and "limits" not in specs[0][0].body
    (job,) = validate_jobs([*_base(market), *QUICK_LGBM, "seed=0", *limits], multirun=False)
    entry = validated_job(job)
    assert entry is not None and entry[0].hash == specs[0][0].hash


def test_data_import_without_a_root_says_how_to_give_one() -> None:
    with pytest.raises(QtrainError, match=r"^data.store.root is missing: pass the store directory"):
        validate_jobs(["data=import"], multirun=False)


def test_valid_jobs_are_listed_in_sweep_order(market: Path) -> None:
    jobs = validate_jobs([*_base(market), *QUICK_LGBM, "seed=0,1", "model.max_depth=3,4"], multirun=True)
    assert [j[-2:] for j in jobs] == [
        ["seed=0", "model.max_depth=3"], ["seed=0", "model.max_depth=4"],
        ["seed=1", "model.max_depth=3"], ["seed=1", "model.max_depth=4"],
    ]  # fmt: skip


def test_sweep_jobs_are_served_the_config_hydras_launcher_would_compose(market: Path) -> None:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from app.config.compose import conf_dir, prepare_config
    from app.config.jobs import _COMPOSED, JOB_NAME, job_config
    from app.core.settings import get_settings

    command = [*_base(market), *QUICK_LGBM, "seed=0,1", "model.max_depth=3,4", "hydra.job.chdir=False"]
    jobs = validate_jobs(command, multirun=True)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name=JOB_NAME):
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None
        # the master config as `hydra.main` composes it for -m (it appends hydra.mode)
        master = hydra.compose_config("config", [*command, "hydra.mode=MULTIRUN"], run_mode=RunMode.MULTIRUN)
        assert list(master.hydra.overrides.hydra) == ["hydra.job.chdir=False", "hydra.mode=MULTIRUN"]
        for job in jobs:
            expected = hydra.config_loader.load_sweep_config(master, list(job))
            prepare_config(expected, expected.hydra.runtime.choices.get("data"), get_settings())  # as the job does
            key = (*master.hydra.overrides.hydra, *job)
            assert key in _COMPOSED
            served = job_config(hydra.config_loader, master, job)
            assert key not in _COMPOSED  # served from validation, not composed again
            assert OmegaConf.to_container(served, resolve=False) == OmegaConf.to_container(expected, resolve=False)
    assert not _COMPOSED  # each served once
    # a job validation did not compose (e.g. chosen later by a sweeper) is composed by Hydra
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name=JOB_NAME):
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None
        master = hydra.compose_config("config", [*command, "hydra.mode=MULTIRUN"], run_mode=RunMode.MULTIRUN)
        assert job_config(hydra.config_loader, master, jobs[0]).seed == 0


def test_a_single_run_gets_the_config_hydras_run_would_compose(market: Path) -> None:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from app.config.compose import conf_dir, prepare_config
    from app.config.jobs import _COMPOSED, JOB_NAME
    from app.core.settings import get_settings

    command = [*_base(market), *QUICK_LGBM, "seed=5", "hydra.job.chdir=False"]
    validate_jobs(command, multirun=False)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name=JOB_NAME):
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None
        # what `hydra.main` composes for a run (it appends hydra.mode=RUN), from the shell's overrides
        expected = hydra.compose_config("config", [*command, "hydra.mode=RUN"], run_mode=RunMode.RUN)
        prepare_config(expected, expected.hydra.runtime.choices.get("data"), get_settings())
    own = ["hydra.job.chdir=False", "hydra.mode=RUN"]
    served = _COMPOSED.pop((*own, *[o for o in command if not o.startswith("hydra.")]))
    assert OmegaConf.to_container(served, resolve=False) == OmegaConf.to_container(expected, resolve=False)
