"""Sweep jobs before Hydra runs them: each job of a command line composed as Hydra's launchers compose it,
validated (types, data, trainer), its spec and components built once and served to whoever runs the job (a
single run, the local launcher, the Celery launcher); rolling windows expanded into specs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from app.config.compose import conf_dir
from app.core.errors import ConfigError, QtrainError
from app.core.settings import get_settings

JOB_NAME = "run"  # what hydra.main names the job of this module (hydra.job.name)
CELERY_LAUNCHER = "hydra_plugins.qtrain_celery_launcher.launcher.CeleryLauncher"
BASIC_SWEEPERS = (  # they launch one job per point of the command line's sweeps (expand_sweep)
    "hydra_plugins.qtrain_sweeper.sweeper.QtrainSweeper",
    "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
)
POOL_TRAINERS = "app.workflow.trainer_rm."  # the trainers that send their tasks to the workers (trainer=celery)

# Each job's overrides -> its spec and components as validation built them, so the job (when Hydra runs it in
# this process) does not resolve, check and build them a second time. Taken once.
_VALIDATED: dict[tuple[str, ...], tuple[Any, Any]] = {}
# Each job's full override list (Hydra's own overrides, then the job's) -> the config validation composed, which
# is what Hydra would compose again (a launcher: ``job_config``; a single run: ``_run_validated``). Taken once.
_COMPOSED: dict[tuple[str, ...], Any] = {}


def sends_work(*, multirun: bool) -> bool:
    """Whether the jobs validation composed send tasks to Celery workers: through the Celery launcher (a sweep),
    or through a pool trainer (``trainer=celery``)."""
    launched = multirun and CELERY_LAUNCHER in composed_targets("hydra.launcher")
    return launched or any(target.startswith(POOL_TRAINERS) for target in composed_targets("trainer"))


def planned_jobs(jobs: Sequence[Sequence[str]]) -> int | None:
    """How many jobs the sweep will launch: one per point of a basic sweep, or the trial budget of a sweeper that
    picks its own points (``hydra.sweeper.n_trials``, Optuna's; Optuna launches them in batches of ``n_jobs``);
    None when that is unknown."""
    from omegaconf import OmegaConf

    if composed_targets("hydra.sweeper") <= set(BASIC_SWEEPERS):
        return len(jobs)
    budgets = {OmegaConf.select(cfg, "hydra.sweeper.n_trials", default=None) for cfg in _COMPOSED.values()}
    budget = budgets.pop() if len(budgets) == 1 else None
    return budget if isinstance(budget, int) else None


def composed_targets(key: str) -> set[str]:
    """The ``_target_`` of ``key`` in each config validation composed."""
    from omegaconf import OmegaConf

    return {str(OmegaConf.select(cfg, f"{key}._target_", default="")) for cfg in _COMPOSED.values()}


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

    from app.config.compose import build_components, prepare_config, task_limits, task_spec_from_config
    from app.config.objective import check_objective

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
                task_limits(cfg)  # checked now: a bad limit must not stop a sweep half-submitted
                trainer = check_trainer(cfg)
                components = build_components(spec)
                check_objective(cfg, components.records)
                _VALIDATED[tuple(job_overrides)] = (spec, components)
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

    # the override strings as given: resolving them would fail on one like hydra.sweep.subdir=${hydra.job.num}
    hydra_overrides = OmegaConf.to_container(master.hydra.overrides.hydra, resolve=False)
    assert isinstance(hydra_overrides, list)
    cfg = _COMPOSED.pop((*map(str, hydra_overrides), *overrides), None)
    if cfg is None or cfg.hydra.job.name != master.hydra.job.name:
        logging.getLogger(__name__).info("composing the config of job %s (not validated before)", list(overrides))
        return loader.load_sweep_config(master, list(overrides))
    OmegaConf.copy_cache(from_config=master, to_config=cfg)  # as load_sweep_config: the master's ${now:} values
    return cfg


def composed_config(overrides: Sequence[str]) -> Any:
    """The config validation composed for this full override list (Hydra's own overrides, then the job's), once;
    None if there is none."""
    return _COMPOSED.pop(tuple(overrides), None)


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

    from app.config.schema import check_spec_types

    resolved: Any = OmegaConf.to_container(cfg.trainer, resolve=True)
    node = dict(resolved or {})
    rolling = node.pop("rolling", None)
    check_spec_types({"trainer": node})
    if rolling is not None:
        unknown = set(rolling) - {"step", "mode", "trunc_days"}
        if unknown:
            raise ConfigError(f"trainer.rolling.{sorted(unknown)[0]}: unknown; rolling takes step, mode, trunc_days")
        target = {"_target_": "app.dataset.segments.rolling_segments", "_partial_": True}
        check_spec_types({"trainer": {"rolling": {**target, **rolling}}})
    return {**node, "rolling": rolling}


def builder(validated: Sequence[tuple[Any, Any]]) -> Any:
    """``build_components``, except that each spec validation built is served its components (once)."""
    from app.config.compose import build_components

    prebuilt = {spec.hash: components for spec, components in validated}

    def build(spec: Any) -> Any:
        components = prebuilt.pop(spec.hash, None)
        return components if components is not None else build_components(spec)

    return build


def rolling_specs(cfg: Any, rolling: dict[str, Any]) -> list[Any]:
    """One task spec per rolling window of ``cfg`` (see :func:`app.dataset.segments.rolling_segments`).

    Every window's handler spans all windows' data, so the raw features are computed once for the lot.

    Raises:
        ConfigError: the windows cannot be cut from the config's segments.
    """
    import copy

    from app.config.compose import task_spec_from_config

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
