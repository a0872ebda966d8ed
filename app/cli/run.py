"""``qtrain run [overrides]``: the Hydra application that composes, validates and trains task specs.

Before Hydra starts, every job of the command line (one, or each point of a ``-m`` sweep) is composed, resolved,
type-checked and checked against its data, so a bad config fails at once with one line naming the key, and a
sweep never half-runs. Then each Hydra job trains its spec with the configured trainer (``trainer=local``,
``delayed`` or ``rolling``) and writes ``result.json`` into its output directory; the sweep callback
(:mod:`app.config.sweep`) turns those into the summary table. Heavy libraries load only once a job starts.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from app.config.compose import conf_dir
from app.config.jobs import (
    CELERY_LAUNCHER,
    JOB_NAME,
    builder,
    check_trainer,
    composed_config,
    composed_targets,
    expand_sweep,
    planned_jobs,
    rolling_specs,
    sends_work,
    validate_jobs,
    validated_job,
)
from app.config.objective import objective_value
from app.core.errors import QtrainError
from app.core.settings import get_settings
from app.tracking.backend import check_tracking_location

EXIT_CONFIG = 2
EXIT_TASK_FAILED = 1
E_ONE_JOB_SWEEP = (
    "hydra/launcher=celery launches sweeps (-m) only: sending this single job to the Celery workers as a "
    "one-job sweep (qtrain run -m ...)"
)


def run(argv: Sequence[str]) -> int:
    """Run the Hydra app with ``argv`` as its command line; returns the exit status."""
    import hydra
    from hydra._internal.utils import get_args_parser

    from app.config import sweep

    argv = list(argv)
    args = get_args_parser().parse_args(argv)
    inspecting = args.help or args.hydra_help or args.cfg or args.info or args.shell_completion
    if not inspecting:
        try:
            config_name = args.config_name or "config"
            check_tracking_location(get_settings().tracking_uri)  # a dead tracking server: one line, before any work
            jobs = validate_jobs(args.overrides, multirun=args.multirun, config_name=config_name)
            if not args.multirun and composed_targets("hydra.launcher") & {CELERY_LAUNCHER}:
                # Hydra hands a run without -m to no launcher: it would train here, silently
                print(E_ONE_JOB_SWEEP, flush=True)
                argv, args.multirun = ["-m", *argv], True
                jobs = validate_jobs(args.overrides, multirun=True, config_name=config_name)
            if sends_work(multirun=args.multirun):
                from app.distributed.infra_check import check_services

                check_services(get_settings())  # before Hydra starts: nothing is stored, no sweep directory made
        except QtrainError as exc:
            if get_settings().debug:
                raise
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        sweep.begin(total=planned_jobs(jobs) if args.multirun else None)
    status = {"code": 0}
    sys.argv = ["qtrain run", *argv]

    def job(cfg: Any) -> float | None:
        """Train one job; in a sweep, returns the value of its ``objective`` (for a sweeper that optimises it)."""
        from hydra.core.hydra_config import HydraConfig

        metrics: dict[str, float] = {}
        try:
            ok, metrics = train_job(cfg)
            if not ok:
                status["code"] = EXIT_TASK_FAILED
        except QtrainError as exc:
            if get_settings().debug:
                raise
            print(f"error: {exc}", file=sys.stderr)
            status["code"] = EXIT_CONFIG
        sweeper = str(HydraConfig.get().sweeper._target_)
        return objective_value(cfg.get("objective"), metrics, sweeper=sweeper) if args.multirun else None

    if inspecting or not _run_validated(args, job):
        hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(job)()
    return status["code"] or (EXIT_TASK_FAILED if sweep.failed_jobs() else 0)


def abort(exc: QtrainError) -> NoReturn:
    """End ``qtrain run`` from inside Hydra (a launcher) with the CLI's one-line error and exit status 2.

    Hydra turns an exception raised there into a traceback and status 1; ``SystemExit`` passes through it.
    """
    if get_settings().debug:
        raise exc
    print(f"error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_CONFIG)


def _run_validated(args: Any, task_function: Any) -> bool:
    """A single run (no -m) as Hydra's ``run`` does it, on the config validation composed; False (nothing run)
    when the command line asks for more than a plain run.

    ``hydra.main`` would compose the config twice more: once to read ``hydra.mode``, once to run (~0.35 s each).
    """
    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import configure_log, run_job
    from hydra.types import HydraContext

    plain = not (args.multirun or args.config_path or args.config_dir or args.experimental_rerun)
    if not plain or any(o.replace("+", "").startswith("hydra.mode") for o in args.overrides):
        return False
    own, (task,) = expand_sweep(args.overrides, multirun=False)
    cfg = composed_config((*own, "hydra.mode=RUN", *task))
    if cfg is None:
        return False
    config_name = args.config_name or "config"
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name=JOB_NAME):
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None
        configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
        callbacks = Callbacks(cfg)
        callbacks.on_run_start(config=cfg, config_name=config_name)
        context = HydraContext(config_loader=hydra.config_loader, callbacks=callbacks)
        ret = run_job(
            hydra_context=context, task_function=task_function, config=cfg, job_dir_key="hydra.run.dir",
            job_subdir_key=None,
        )  # fmt: skip
        callbacks.on_run_end(config=cfg, config_name=config_name, job_return=ret)
        _ = ret.return_value  # re-raises what the job raised
    return True


def train_job(cfg: Any) -> tuple[bool, dict[str, float]]:
    """One Hydra job: build its spec(s), run the configured trainer, print and save the outcome.

    Every trainer is built (``from_services``) and run (``run``) the same way; what it could not finish here
    (runs prepared, tasks submitted) it says in ``pending``.

    Returns:
        True when no task failed, and the metrics of the job's (final) run (none when it was only submitted).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from hydra.utils import instantiate

    from app.config.compose import prepare_config, task_limits, task_spec_from_config
    from app.config.sweep import job_outcome, write_outcome
    from app.runtime import get_runtime
    from app.workflow.trainer import RunSettings

    settings = get_settings()
    wiring = get_runtime(settings)
    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    manager = wiring.tracking(background=True)  # opens while the job starts
    prepare_config(cfg, hydra_cfg.runtime.choices.get("data"), settings)
    validated = validated_job(hydra_cfg.overrides.task)
    spec = validated[0] if validated else task_spec_from_config(cfg)
    trainer_node = check_trainer(cfg)
    rolling = trainer_node.pop("rolling")  # task generation (Qlib's RollingGen), not a trainer setting
    experiment = str(cfg.experiment_name)
    make = instantiate(trainer_node)  # the trainer class with its config options
    # in a sweep, a job's figures are drawn while the next job trains (the process waits for them at exit)
    run = RunSettings(draw_plots_later=sweeping, limits=task_limits(cfg))
    build = builder([validated] if validated else [])
    trainer = make.func.from_services(wiring, build, experiment_name=experiment, run=run, **make.keywords)
    specs = rolling_specs(cfg, rolling) if rolling else [spec]
    trained = trainer.run(specs)
    results = trained.results
    if trained.pending:
        print(trained.pending)
        outcome = job_outcome(list(hydra_cfg.overrides.task), cfg, spec.hash, None, pending=trained.pending)
        write_outcome(hydra_cfg.runtime.output_dir, outcome)
        return all(r.error is None for r in results), {}
    final = results[-1]
    if rolling and all(r.error is None for r in results):
        final = _merge_rolling(manager, results, spec, rolling, experiment)
    elif rolling:
        final = next(r for r in results if r.error)
    outcome = job_outcome(
        list(hydra_cfg.overrides.task), cfg, spec.hash, final, windows=[r.run_id for r in results] if rolling else None
    )
    write_outcome(hydra_cfg.runtime.output_dir, outcome)
    _report(outcome, experiment, spec.hash, manager, settings.tracking_uri, quiet=sweeping)
    return final.error is None, dict(outcome["metrics"])


def _merge_rolling(manager: Any, results: list[Any], spec: Any, rolling: dict[str, Any], experiment: str) -> Any:
    from hydra.utils import instantiate

    from app.workflow.rolling import evaluate_rolling

    records = instantiate(spec.body["records"], _convert_="all")
    store = instantiate(spec.body["data"]["store"])
    return evaluate_rolling(manager, results, experiment_name=experiment, store=store, records=records, rolling=rolling)


def _report(
    outcome: dict[str, Any], experiment: str, task_hash: str, manager: Any, tracking_uri: str, *, quiet: bool
) -> None:
    from app.core.credentials import mask_url
    from app.tracking.backend import LOCAL_UI, run_page_url
    from app.tracking.summary import KEY_METRICS

    run = outcome["run_id"] or "(none)"
    if outcome["error"]:
        print(f"run {run} (experiment {experiment}, task {task_hash[:12]}) FAILED: {outcome['error']}")
        return
    print(f"run {run} (experiment {experiment}, task {task_hash[:12]}) finished")
    for title, key in KEY_METRICS if not quiet else ():
        if key in outcome["metrics"]:
            print(f"  {title:<32} {outcome['metrics'][key]: .4f}")
    if tracking_uri.startswith(("http://", "https://")):  # a tracking server: its UI shows the run (each job's)
        experiment_id = manager.client.get_run(run).info.experiment_id
        print(f"see it in the MLflow UI: {run_page_url(tracking_uri, experiment_id, run)}")
    elif not quiet:
        page = run_page_url(LOCAL_UI, manager.client.get_run(run).info.experiment_id, run)
        print(f"open the MLflow UI on it: mlflow ui --backend-store-uri {mask_url(tracking_uri)}, then {page}")
