"""The Celery launcher's work: submits a sweep to the task pool and Celery, waits (unless ``detach``), and
reports like a local sweep.

Each job's config is composed here, on the client, and resolved into a JSON task spec (nothing is pickled);
all jobs are validated and built, and the broker, result backend and task store checked (``qtrain run``), before
the first one is submitted. Should the broker or the store fail during the submission, the command ends with
one line saying so: the tasks stored until then stay, and the same command run again resumes the sweep (the
pool deduplicates specs by hash; stored tasks without a message get one). Results land in each job's output
directory as ``result.json``, so ``app.config.sweep.SweepSummary`` prints the same summary table as for local sweeps.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

if TYPE_CHECKING:
    from hydra_plugins.qtrain_celery_launcher.config import CeleryLauncherConf
    from hydra_plugins.qtrain_celery_launcher.launcher import CeleryLauncher

log = logging.getLogger(__name__)


def launch(launcher: CeleryLauncher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Submit every job (each composed once, by validation), wait for them unless ``detach``, write each job's
    ``result.json`` and return Hydra's job returns (the value of ``objective`` where one is set)."""
    from app.config.compose import prepare_config, task_limits, task_spec_from_config
    from app.config.jobs import builder, job_config, validated_job
    from app.config.labels import job_label
    from app.config.sweep import job_outcome, write_outcome
    from app.core.settings import get_settings

    assert launcher.config is not None and launcher.hydra_context is not None
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    settings = get_settings()
    jobs, validated = [], []
    for offset, overrides in enumerate(job_overrides):
        idx = initial_job_idx + offset
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        cfg = job_config(launcher.hydra_context.config_loader, launcher.config, overrides)
        with open_dict(cfg):
            cfg.hydra.job.id = f"{cfg.hydra.job.name}_{idx}"
            cfg.hydra.job.num = idx
        HydraConfig.instance().set_config(cfg)
        output_dir = Path(str(cfg.hydra.sweep.dir)) / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = str(output_dir.resolve())
        prepare_config(cfg, cfg.hydra.runtime.choices.get("data"), settings)
        entry = validated_job(overrides)
        validated += [entry] if entry else []
        jobs.append((list(overrides), cfg, entry[0] if entry else task_spec_from_config(cfg), output_dir))
    # each spec is built once: TrainerRM.submit checks specs by building them, and validation built them already
    trainers = _trainers(launcher.conf, {str(cfg.experiment_name) for _, cfg, _, _ in jobs}, builder(validated))
    command_line = list(launcher.config.hydra.overrides.task)
    tasks = _submit(trainers, [
        (str(cfg.experiment_name), spec, task_limits(cfg),
         job_label(overrides, command_line, cfg.hydra.runtime.choices.get("model")))
        for overrides, cfg, spec, _ in jobs
    ])  # fmt: skip
    any_trainer = next(iter(trainers.values()))
    print(f"submitted {len(tasks)} task(s) to pool {any_trainer.pool_name} "
          f"({sum(t.status == 'done' for t in tasks)} already done)", flush=True)  # fmt: skip
    if launcher.conf.detach:
        results = [None] * len(tasks)
        _send_missing(any_trainer)
        print(f"detached; follow with: qtrain pool status {any_trainer.pool_name}")
    else:
        results = list(any_trainer.wait([t.id for t in tasks]))
    returns = []
    for (overrides, cfg, spec, output_dir), task, result in zip(jobs, tasks, results, strict=True):
        outcome = job_outcome(overrides, cfg, spec.hash, result, task_id=task.id, pool=task.pool)
        write_outcome(output_dir, outcome)
        returns.append(_job_return(overrides, cfg, outcome["metrics"]))
    return returns


def _trainers(conf: CeleryLauncherConf, experiments: set[str], build: Any) -> dict[str, Any]:
    """One pool trainer per experiment of the sweep, all on one pool; built as ``qtrain run`` builds trainers."""
    from app.runtime import get_runtime
    from app.workflow.trainer_rm import TrainerRM

    wiring = get_runtime()
    wiring.tracking(background=True)  # MLflow loads while the tasks are submitted
    options = {"pool_name": conf.pool or sorted(experiments)[0], "priority": conf.priority,
               "max_attempts": conf.max_attempts, "poll_s": conf.poll_s, "timeout_s": conf.timeout_s}  # fmt: skip
    return {name: TrainerRM.from_services(wiring, build, experiment_name=name, **options) for name in experiments}


def _submit(trainers: dict[str, Any], jobs: list[tuple[str, Any, dict[str, float], str]]) -> list[Any]:
    """Submit each ``(experiment, spec, limits, label)`` with its experiment's trainer; a broker or store failure
    ends the command with one line (exit status 2) that says how to resume."""
    from app.cli.run import abort
    from app.core.errors import InfrastructureError, TaskStoreError
    from app.workflow.trainer_rm import E_RESUME

    tasks = []
    for number, (experiment, spec, limits, label) in enumerate(jobs, start=1):
        trainer = trainers[experiment]
        try:
            tasks.extend(trainer.submit([spec], limits=limits, labels=[label]))
        except (InfrastructureError, TaskStoreError) as exc:
            exc.args = (f"{exc}; this stopped the submission at job {number} of {len(jobs)}: {E_RESUME}",)
            abort(exc)
    return tasks


def _send_missing(trainer: Any) -> None:
    """Messages for the pool's waiting tasks that have none (an interrupted submission stored them), which a
    waiting launcher's reconciler would send."""
    from app.cli.run import abort
    from app.core.errors import InfrastructureError, TaskStoreError
    from app.workflow.trainer_rm import E_RESUME, reconcile

    try:
        sent = reconcile(trainer.pool, trainer.pool_name, trainer.broker).dispatched
    except (InfrastructureError, TaskStoreError) as exc:
        exc.args = (f"{exc}; {E_RESUME}",)
        abort(exc)
    if sent:
        print(f"sent {sent} message(s) for waiting tasks of pool {trainer.pool_name} that had none", flush=True)


def _job_return(overrides: list[str], cfg: DictConfig, metrics: dict[str, float]) -> JobReturn:
    """Hydra's return of one job: the value of ``objective`` (None without one), as a local job returns it; a job
    without a value of its objective is a failed job."""
    from app.config.objective import objective_value
    from app.core.errors import ObjectiveError

    task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    ret = JobReturn(overrides=overrides, cfg=task_cfg, hydra_cfg=cfg, working_dir=os.getcwd(),
                    task_name=str(cfg.hydra.job.name), status=JobStatus.COMPLETED)  # fmt: skip
    try:
        ret.return_value = objective_value(cfg.get("objective"), metrics, sweeper=str(cfg.hydra.sweeper._target_))
    except ObjectiveError as exc:
        ret.status, ret.return_value = JobStatus.FAILED, exc
    return ret
