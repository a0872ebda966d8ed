"""A task's label (its model and the overrides that set it apart in its sweep) and where people see it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.config.labels import job_label
from app.taskpool import SQLiteTaskPool


def test_a_label_is_the_model_and_the_overrides_the_sweep_chose() -> None:
    command_line = ["data=import", "model=lgbm,double_ensemble", "seed=0,1", "model.num_leaves=15"]
    job = ["data=import", "model=double_ensemble", "seed=1", "model.num_leaves=15"]
    assert job_label(job, command_line, "double_ensemble") == "double_ensemble seed=1"


def test_a_swept_key_also_given_fixed_shows_the_value_the_job_runs_with() -> None:
    command_line = ["model.num_leaves=15", "seed=0,1", "model.num_leaves=7,15"]
    job = ["model.num_leaves=15", "seed=0", "model.num_leaves=7"]
    assert job_label(job, command_line, "lgbm") == "lgbm seed=0 model.num_leaves=7"


def test_a_sweepers_trial_shows_its_sampled_values_not_hydras_settings() -> None:
    command_line = ["hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "model.num_leaves=int(interval(16,64))"]
    job = ["hydra.sweeper.n_trials=2", "model.num_leaves=37", "+hydra.job.tag=x"]
    assert job_label(job, command_line, "lgbm") == "lgbm model.num_leaves=37"
    assert job_label([], [], None) == ""


def test_pool_list_shows_each_tasks_label(tmp_path: Path) -> None:
    store = tmp_path / "tasks.db"
    pool = SQLiteTaskPool(store)
    first, _ = pool.submit("sweep", {"seed": 0}, "h0", label="lgbm seed=0")
    second, _ = pool.submit("sweep", {"seed": 1}, "h1", label="double_ensemble seed=1")
    pool.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QTRAIN_", "MLFLOW_"))}
    env.update(QTRAIN_HOME=str(tmp_path / "home"), QTRAIN_TASK_STORE=f"sqlite:///{store}")
    qtrain = Path(sys.executable).with_name("qtrain")
    out = subprocess.run([str(qtrain), "pool", "list", "sweep"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {
        line.split("│")[1].strip(): line for line in out.stdout.splitlines() if first.id in line or second.id in line
    }
    assert "│ lgbm seed=0 " in rows[first.id] and "│ double_ensemble seed=1 " in rows[second.id]
    assert " job " in out.stdout


def test_the_sent_event_names_the_task_as_the_worker_does() -> None:
    """Flower keeps the name of whichever of task-sent (client) and task-received (worker) comes last: both must
    carry the label, or a late task-sent shows plain ``qtrain.train`` again."""
    from app.core.settings import load_settings
    from app.distributed.broker import TRAIN_TASK
    from app.distributed.celery_config import make_app

    celery = make_app(load_settings({"QTRAIN_BROKER_URL": "redis://127.0.0.1:6379/9"}, Path("/tmp")))
    labelled = celery.amqp.create_task_message(
        "t.1", TRAIN_TASK, ["pool", "t"], {}, create_sent_event=True, shadow=f"{TRAIN_TASK} lgbm seed=1"
    )
    assert labelled.headers["task"] == TRAIN_TASK  # what the worker runs
    assert labelled.headers["shadow"] == labelled.sent_event["name"] == f"{TRAIN_TASK} lgbm seed=1"
    plain = celery.amqp.create_task_message("t.2", TRAIN_TASK, ["pool", "t"], {}, create_sent_event=True)
    assert plain.sent_event["name"] == TRAIN_TASK
    celery.close()
