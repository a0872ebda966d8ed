"""``qtrain run [overrides]``: the Hydra application that composes, validates and trains task specs.

Before Hydra starts, every job of the command line (one, or each point of a ``-m`` sweep) is composed, resolved,
type-checked and checked against its data, so a bad config fails at once with one line naming the key, and a
sweep never half-runs. Then each Hydra job trains its spec with the configured trainer (``trainer=local``,
``delayed`` or ``rolling``) and writes ``result.json`` into its output directory; the sweep callback
(:mod:`app.sweep`) turns those into the summary table. Heavy libraries load only once a job starts.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from app.config import conf_dir
from app.errors import ConfigError, QtrainError
from app.settings import get_settings

EXIT_CONFIG = 2
EXIT_TASK_FAILED = 1
JOB_NAME = "run"  # what hydra.main names the job of this module (hydra.job.name)
CELERY_LAUNCHER = "hydra_plugins.qtrain_celery_launcher.launcher.CeleryLauncher"
POOL_TRAINERS = "app.workflow.trainer_rm."  # the trainers that send their tasks to the workers (trainer=celery)
E_ONE_JOB_SWEEP = (
    "hydra/launcher=celery launches sweeps (-m) only: sending this single job to the Celery workers as a "
    "one-job sweep (qtrain run -m ...)"
)
E_RESUME = (
    "the tasks stored so far stay in the pool; once it is fixed, run the same command again to resume (a spec "
    "already in the pool is not stored twice, and a stored task without a message gets one)"
)

# Each job's overrides -> its spec and components as validation built them, so the job (when Hydra runs it in
# this process) does not resolve, check and build them a second time. Taken once.
_VALIDATED: dict[tuple[str, ...], tuple[Any, Any]] = {}
# Each job's full override list (Hydra's own overrides, then the job's) -> the config validation composed, which
# is what Hydra would compose again (a launcher: ``job_config``; a single run: ``_run_validated``). Taken once.
_COMPOSED: dict[tuple[str, ...], Any] = {}


def run(argv: Sequence[str]) -> int:
    """Run the Hydra app with ``argv`` as its command line; returns the exit status."""
    import hydra
    from hydra._internal.utils import get_args_parser

    from app import sweep

    argv = list(argv)
    args = get_args_parser().parse_args(argv)
    inspecting = args.help or args.hydra_help or args.cfg or args.info or args.shell_completion
    if not inspecting:
        try:
            config_name = args.config_name or "config"
            jobs = validate_jobs(args.overrides, multirun=args.multirun, config_name=config_name)
            if not args.multirun and _targets("hydra.launcher") & {CELERY_LAUNCHER}:
                # Hydra hands a run without -m to no launcher: it would train here, silently
                print(E_ONE_JOB_SWEEP, flush=True)
                argv, args.multirun = ["-m", *argv], True
                jobs = validate_jobs(args.overrides, multirun=True, config_name=config_name)
            if sends_work(multirun=args.multirun):
                from app.infra_check import check_services

                check_services(get_settings())  # before Hydra starts: nothing is stored, no sweep directory made
        except QtrainError as exc:
            if get_settings().debug:
                raise
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        sweep.begin(total=len(jobs) if args.multirun else None)
    status = {"code": 0}
    sys.argv = ["qtrain run", *argv]

    def job(cfg: Any) -> None:
        try:
            if not train_job(cfg):
                status["code"] = EXIT_TASK_FAILED
        except QtrainError as exc:
            if get_settings().debug:
                raise
            print(f"error: {exc}", file=sys.stderr)
            status["code"] = EXIT_CONFIG

    if inspecting or not _run_validated(args, job):
        hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(job)()
    return status["code"] or (EXIT_TASK_FAILED if sweep.failed_jobs() else 0)


def sends_work(*, multirun: bool) -> bool:
    """Whether the jobs validation composed send tasks to Celery workers: through the Celery launcher (a sweep),
    or through a pool trainer (``trainer=celery``)."""
    launched = multirun and CELERY_LAUNCHER in _targets("hydra.launcher")
    return launched or any(target.startswith(POOL_TRAINERS) for target in _targets("trainer"))


def _targets(key: str) -> set[str]:
    """The ``_target_`` of ``key`` in each config validation composed."""
    from omegaconf import OmegaConf

    return {str(OmegaConf.select(cfg, f"{key}._target_", default="")) for cfg in _COMPOSED.values()}


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
    cfg = _COMPOSED.pop((*own, "hydra.mode=RUN", *task), None)
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


def validate_jobs(overrides: Sequence[str], *, multirun: bool, config_name: str = "config") -> list[list[str]]:
    """Compose and check every job the command line asks for; returns each job's overrides.

    Raises:
        ConfigError: an override cannot be parsed, names an unknown option or key, a value has the wrong type,
            or a job's dataset does not fit its data (segments outside the calendar, empty universe).
        DataError: a store cannot be read.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from app.config import build_components, prepare_config, task_spec_from_config

    own, jobs = expand_sweep(overrides, multirun=multirun)
    hydra_overrides = [*own, f"hydra.mode={'MULTIRUN' if multirun else 'RUN'}"]  # as hydra.main appends it
    settings = get_settings()
    _VALIDATED.clear()
    _COMPOSED.clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name=JOB_NAME):
        for i, job_overrides in enumerate(jobs):
            where = f"job {i} ({' '.join(job_overrides) or 'defaults'}): " if len(jobs) > 1 else ""
            composing = [*hydra_overrides, *job_overrides]  # the order Hydra's launchers compose a job in
            try:
                try:
                    cfg = compose(config_name, overrides=composing, return_hydra_config=True)
                except (HydraException, OmegaConfBaseException) as exc:
                    raise ConfigError(compose_error_message(exc)) from None
                prepare_config(cfg, cfg.hydra.runtime.choices.get("data"), settings)
                spec = task_spec_from_config(cfg)
                trainer = check_trainer(cfg)
                _VALIDATED[tuple(job_overrides)] = (spec, build_components(spec))
                _COMPOSED[tuple(composing)] = cfg
                if trainer["rolling"]:
                    rolling_windows(cfg, trainer["rolling"])
            except QtrainError as exc:
                if where:
                    exc.args = (f"{where}{exc}",)
                raise
    return jobs


def job_config(loader: Any, master: Any, overrides: Sequence[str]) -> Any:
    """One sweep job's config, as Hydra's launchers compose it (``loader.load_sweep_config``).

    Validation composed every job of the command line already, with the same call and overrides; that config
    is served (once) instead of composing the job a second time (~0.4 s a job).
    """
    from omegaconf import OmegaConf

    cfg = _COMPOSED.pop((*master.hydra.overrides.hydra, *overrides), None)
    if cfg is None or cfg.hydra.job.name != master.hydra.job.name:
        logging.getLogger(__name__).info("composing the config of job %s (not validated before)", list(overrides))
        return loader.load_sweep_config(master, list(overrides))
    OmegaConf.copy_cache(from_config=master, to_config=cfg)  # as load_sweep_config: the master's ${now:} values
    return cfg


def validated_job(overrides: Sequence[str]) -> tuple[Any, Any] | None:
    """The task spec and components validation built for the job with these task overrides (once); None if there
    are none."""
    return _VALIDATED.pop(tuple(overrides), None)


def expand_sweep(overrides: Sequence[str], *, multirun: bool) -> tuple[list[str], list[list[str]]]:
    """Hydra's own overrides (``hydra/...``, ``hydra.x=``) and the jobs Hydra's basic sweeper will launch (the
    cartesian product of ``a=1,2`` sweeps; one job without -m), each as its task overrides.

    With another sweeper (``hydra/sweeper=optuna``) or non-enumerable sweeps (``interval(...)``) only the
    non-sweep overrides are checked (the sweeper picks the values later).

    Raises:
        ConfigError: an override does not parse, or a sweep was given without ``-m``.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError(compose_error_message(exc)) from None
    sweeps = [o for o in parsed if o.is_sweep_override()]
    if sweeps and not multirun:
        raise ConfigError(f"{sweeps[0].input_line} is a sweep; add -m to run one job per value (qtrain run -m ...)")
    custom_sweeper = any(o.key_or_group == "hydra/sweeper" and o.value() not in ("basic", "qtrain") for o in parsed)
    own = [str(o.input_line) for o in parsed if o.is_hydra_override()]
    task = [o for o in parsed if not o.is_hydra_override()]
    fixed = [[str(o.input_line) for o in task if not o.is_sweep_override()]]
    if not sweeps or custom_sweeper:
        return own, fixed
    try:
        batches = BasicSweeper.split_arguments(task, None)
    except HydraException:
        return own, fixed
    return own, [list(job) for job in batches[0]]


def compose_error_message(exc: BaseException) -> str:
    """Hydra's multi-line composition errors as one line that names the override or key."""
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException) and exc.options:
        group = (exc.missing_cfg_file or "").rsplit("/", 1)[0]
        wanted = (exc.missing_cfg_file or "").rsplit("/", 1)[-1]
        return f"{group}={wanted}: no such option in conf/{group}/; choose one of: {', '.join(exc.options)}"
    cause = exc
    while cause.__cause__ is not None and not getattr(cause, "full_key", None):
        cause = cause.__cause__
    key = getattr(cause, "full_key", None)
    first = " ".join(str(exc).split("\n\n", 1)[0].split())
    detail = " ".join(str(cause).splitlines()[0].split()) if cause is not exc else ""
    text = f"{first} ({detail})" if detail and detail not in first else first
    if key and "not in struct" in f"{cause} {text}":
        return (
            f"{key}: no such key in the config; check the spelling (qtrain run --cfg job shows every key), "
            f"or add a new one with a leading + (+{key}=...)"
        )
    return f"{key}: {text}" if key and not first.startswith(str(key)) else text


def check_trainer(cfg: Any) -> dict[str, Any]:
    """The ``trainer`` node, checked (its target's parameters, rolling settings); returns it resolved.

    Raises:
        ConfigError: unknown trainer parameters or rolling settings.
    """
    from omegaconf import OmegaConf

    from app.schema import check_spec_types

    resolved: Any = OmegaConf.to_container(cfg.trainer, resolve=True)
    node = dict(resolved or {})
    rolling, end = node.pop("rolling", None), node.pop("end", True)
    check_spec_types({"trainer": node})
    if rolling is not None:
        unknown = set(rolling) - {"step", "mode", "trunc_days"}
        if unknown:
            raise ConfigError(f"trainer.rolling.{sorted(unknown)[0]}: unknown; rolling takes step, mode, trunc_days")
        target = {"_target_": "app.dataset.segments.rolling_segments", "_partial_": True}
        check_spec_types({"trainer": {"rolling": {**target, **rolling}}})
    return {**node, "rolling": rolling, "end": bool(end)}


def train_job(cfg: Any) -> bool:
    """One Hydra job: build its spec(s), train with the configured trainer, print and save the outcome.

    Returns:
        True when every task finished.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from hydra.utils import instantiate

    from app import wiring
    from app.config import prepare_config, task_spec_from_config
    from app.sweep import job_outcome, write_outcome
    from app.workflow.trainer_rm import TrainerRM

    settings = get_settings()
    hydra_cfg = HydraConfig.get()
    manager = wiring.tracking(settings, background=True)  # opens while the job starts
    prepare_config(cfg, hydra_cfg.runtime.choices.get("data"), settings)
    validated = validated_job(hydra_cfg.overrides.task)
    spec = validated[0] if validated else task_spec_from_config(cfg)
    trainer_node = check_trainer(cfg)
    rolling, end = trainer_node.pop("rolling"), trainer_node.pop("end")
    experiment = str(cfg.experiment_name)
    make = instantiate(trainer_node)
    # in a sweep, a job's figures are drawn while the next job trains (the process waits for them at exit)
    later = {"draw_plots_later": hydra_cfg.mode == RunMode.MULTIRUN}
    pool_kwargs = _pool_kwargs(settings) if issubclass(make.func, TrainerRM) else later
    build = builder([validated] if validated else [])
    trainer = make(manager, build, experiment_name=experiment, cache=wiring.feature_cache(settings), **pool_kwargs)
    specs = rolling_specs(cfg, rolling) if rolling else [spec]
    results = _train(trainer, specs)
    if isinstance(trainer, TrainerRM) and not trainer.wait_for_results:
        print(f"submitted {len(specs)} task(s) to pool {trainer.pool_name}; follow with: qtrain pool status")
        write_outcome(hydra_cfg.runtime.output_dir, job_outcome(list(hydra_cfg.overrides.task), cfg, spec.hash, None))
        return True
    if trainer.delayed:
        if not end:
            print(f"prepared {len(results)} run(s); fit them with: qtrain end {' '.join(r.run_id for r in results)}")
            return all(r.error is None for r in results)
        results = trainer.end_train(results)
    final = results[-1]
    if rolling and all(r.error is None for r in results):
        final = _merge_rolling(manager, results, spec, rolling, experiment)
    elif rolling:
        final = next(r for r in results if r.error)
    outcome = job_outcome(
        list(hydra_cfg.overrides.task), cfg, spec.hash, final, windows=[r.run_id for r in results] if rolling else None
    )
    write_outcome(hydra_cfg.runtime.output_dir, outcome)
    _report(outcome, experiment, spec.hash, settings.tracking_uri, quiet=hydra_cfg.mode == RunMode.MULTIRUN)
    return final.error is None


def _train(trainer: Any, specs: list[Any]) -> list[Any]:
    """``trainer.train(specs)``; a pool trainer whose broker or store fails says how to resume, and one that does
    not wait sends the messages an interrupted submission left unsent (a waiting one's reconciler does)."""
    from app.errors import InfrastructureError, TaskStoreError
    from app.workflow.trainer_rm import TrainerRM, reconcile

    if not isinstance(trainer, TrainerRM):
        return list(trainer.train(specs))
    try:
        results = list(trainer.train(specs))
        if not trainer.wait_for_results:
            reconcile(trainer.pool, trainer.pool_name, trainer.broker)
    except (InfrastructureError, TaskStoreError) as exc:
        exc.args = (f"{exc}; {E_RESUME}",)
        raise
    return results


def builder(validated: Sequence[tuple[Any, Any]]) -> Any:
    """``build_components``, except that each spec validation built is served its components (once)."""
    from app.config import build_components

    prebuilt = {spec.hash: components for spec, components in validated}

    def build(spec: Any) -> Any:
        components = prebuilt.pop(spec.hash, None)
        return components if components is not None else build_components(spec)

    return build


def _pool_kwargs(settings: Any) -> dict[str, Any]:
    """What a pool trainer needs beyond its config: the task store, the broker, lease and checkpoints."""
    from app.broker import CeleryBroker
    from app.celery import app
    from app.taskpool import open_pool

    return {
        "pool": open_pool(settings.task_store),
        "broker": CeleryBroker(app),
        "lease_s": settings.lease_s,
        "checkpoint_root": settings.checkpoint_dir,
    }


def rolling_specs(cfg: Any, rolling: dict[str, Any]) -> list[Any]:
    """One task spec per rolling window of ``cfg`` (see :func:`app.dataset.segments.rolling_segments`).

    Every window's handler spans all windows' data, so the raw features are computed once for the lot.

    Raises:
        ConfigError: the windows cannot be cut from the config's segments.
    """
    import copy

    from app.config import task_spec_from_config

    windows = rolling_windows(cfg, rolling)
    start = min(w["train"][0] for w in windows)
    specs = []
    for window in windows:
        window_cfg = copy.deepcopy(cfg)
        window_cfg.data.segments = window
        window_cfg.dataset.handler.start_time = start
        window_cfg.dataset.handler.end_time = windows[-1]["test"][1]
        specs.append(task_spec_from_config(window_cfg))
    print(f"rolling: {len(specs)} windows of {rolling['step']} trading days ({rolling['mode']})")
    return specs


def rolling_windows(cfg: Any, rolling: dict[str, Any]) -> list[dict[str, list[str]]]:
    """The segments of each rolling window of ``cfg`` (``trainer.rolling``: step, mode, trunc_days).

    Raises:
        ConfigError: bad rolling settings, or segments that leave no window.
    """
    from omegaconf import OmegaConf

    from app.data.store import QlibStore
    from app.dataset.segments import rolling_segments

    segments: Any = OmegaConf.to_container(cfg.data.segments, resolve=True)
    if not isinstance(segments, dict):
        raise ConfigError(f"data.segments: expected {{train: [START, END], ...}}, got {segments!r}")
    return rolling_segments(QlibStore(cfg.data.store.root).calendar(), segments, **rolling)


def _merge_rolling(manager: Any, results: list[Any], spec: Any, rolling: dict[str, Any], experiment: str) -> Any:
    from hydra.utils import instantiate

    from app.workflow.rolling import evaluate_rolling

    records = instantiate(spec.body["records"], _convert_="all")
    store = instantiate(spec.body["data"]["store"])
    return evaluate_rolling(manager, results, experiment_name=experiment, store=store, records=records, rolling=rolling)


def _report(outcome: dict[str, Any], experiment: str, task_hash: str, tracking_uri: str, *, quiet: bool) -> None:
    from app.tracking.summary import KEY_METRICS
    from app.urls import mask_url

    run = outcome["run_id"] or "(none)"
    if outcome["error"]:
        print(f"run {run} (experiment {experiment}, task {task_hash[:12]}) FAILED: {outcome['error']}")
        return
    print(f"run {run} (experiment {experiment}, task {task_hash[:12]}) finished")
    if quiet:
        return
    for title, key in KEY_METRICS:
        if key in outcome["metrics"]:
            print(f"  {title:<20} {outcome['metrics'][key]: .4f}")
    print(f"open the MLflow UI on it: mlflow ui --backend-store-uri {mask_url(tracking_uri)}")
