"""Hydra composition at the edge: find ``conf/``, compose a group option, instantiate it.

Only entry points (the CLI, later the Celery tasks and launcher) use this module; the library below receives
built objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.core.errors import ConfigError, DataError
from app.core.settings import SAMPLE_DAYS, SAMPLE_INSTRUMENTS, Settings


def conf_dir() -> Path:
    """The config tree: ``app/_conf`` in an installed wheel, else ``conf/`` of the source checkout beside ``app``.

    Raises:
        ConfigError: neither exists (qtrain was installed without its config tree).
    """
    package = Path(__file__).resolve().parents[1]  # app/
    for path in (package / "_conf", package.parent / "conf"):
        if (path / "config.yaml").is_file():
            return path
    raise ConfigError(
        f"qtrain's config tree was not found in {package / '_conf'} nor {package.parent / 'conf'}; install qtrain "
        "from its wheel or source checkout (pip install .)."
    )


def group_options(group: str) -> list[str]:
    """The options of config group ``group`` (file names under ``conf/<group>/``)."""
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def compose_dataset(option: str, *, market: str, start: str, end: str) -> Any:
    """Build ``conf/dataset/<option>.yaml`` for one market with every segment and the fit window = [start, end].

    Raises:
        ConfigError: unknown option.
    """
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    options = group_options("dataset")
    if option not in options:
        raise ConfigError(f"unknown dataset handler {option!r}; choose one of: {', '.join(options)}")
    overrides = [
        f"dataset={option}",
        f"data.market={market}",
        f"data.segments={{train:[{start},{end}],valid:[{start},{end}],test:[{start},{end}]}}",
    ]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return instantiate(cfg.dataset)


def prepare_config(cfg: Any, data_choice: str | None, settings: Settings) -> None:
    """Settle what depends on the machine, in place, before the config is resolved.

    The sample market lives in ``settings.data_dir`` (created on first use); ``data.segments: auto`` becomes
    dates from the store's calendar.

    Raises:
        ConfigError: ``data.store.root`` is missing, or ``auto`` segments cannot be computed.
        DataError: the store cannot be read.
    """
    from omegaconf import OmegaConf

    from app.data.describe import ensure_sample_market
    from app.data.store import QlibStore
    from app.dataset.segments import auto_segments

    if data_choice == "sample":
        cfg.data.store.root = str(settings.data_dir)
        if ensure_sample_market(settings.data_dir, SAMPLE_INSTRUMENTS, SAMPLE_DAYS):
            print(f"created the sample market at {settings.data_dir}")
    if OmegaConf.is_missing(cfg.data.store, "root"):
        raise ConfigError("data.store.root is missing: pass the store directory, e.g. data.store.root=/path/to/store")
    if OmegaConf.select(cfg, "data.segments") == "auto":
        cfg.data.segments = auto_segments(QlibStore(cfg.data.store.root), str(cfg.data.market))


def resolve_config(cfg: Any) -> dict[str, Any]:
    """The composed config as plain data: interpolations resolved, Hydra's own node dropped.

    Raises:
        ConfigError: an interpolation cannot be resolved, or a mandatory value (``???``) was not given.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    body: dict[str, Any] = {}
    for key in cfg:
        if key == "hydra":  # Hydra's node holds job-time values (hydra.job.num) that only exist inside a job
            continue
        try:
            node = cfg[key]
            body[str(key)] = (
                OmegaConf.to_container(node, resolve=True, throw_on_missing=True) if OmegaConf.is_config(node) else node
            )
        except OmegaConfBaseException as exc:
            full_key = getattr(exc, "full_key", None) or key
            message = str(exc).splitlines()[0]
            if "Missing mandatory value" in message:
                message = "no value given (???); set it on the command line"
            raise ConfigError(f"{full_key}: {message}") from None
    return body


def task_spec_from_config(cfg: Any) -> Any:
    """Resolve a composed ``conf/config.yaml`` into a checked :class:`TaskSpec` (everything but ``trainer``,
    ``limits`` and ``objective``).

    Raises:
        ConfigError: an unresolved value, a key a target does not take, or a value of the wrong type (key named).
    """
    from app.config.schema import check_spec_types
    from app.workflow.spec import TaskSpec

    body = resolve_config(cfg)
    body.pop("trainer", None)
    body.pop("limits", None)  # a run setting, stored on the pool task (see task_limits): not the task's identity
    body.pop("objective", None)  # what a sweep optimises (app.config.objective): not the task's identity
    check_spec_types(body)
    body["records"] = list((body.pop("record", None) or {}).values())
    return TaskSpec.from_mapping(body)


def task_limits(cfg: Any) -> dict[str, float]:
    """The Celery time limits a composed config sets for its task (``limits.*``), checked.

    Raises:
        ConfigError: an unknown key, or a value that is not a positive number of seconds.
    """
    from omegaconf import OmegaConf

    from app.taskpool.rules import check_limits

    node = OmegaConf.select(cfg, "limits", default=None)
    limits = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    if not isinstance(limits, dict):
        raise ConfigError(f"limits must be a mapping of time limits, got {limits!r}")
    return check_limits({str(k): v for k, v in limits.items()})


def build_components(spec: Any) -> Any:
    """Instantiate a task spec's ``data.store``, ``dataset``, ``model`` and ``records`` (``app.workflow.spec``)
    and check the dataset against the store (segments inside the calendar, a non-empty universe).

    Raises:
        ConfigError, DataError: a node cannot be built or does not fit the data; the message names the key.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from app.workflow.train import Components

    body = spec.body
    missing = [k for k in ("data", "dataset", "model") if k not in body]
    if missing:
        raise ConfigError(f"task spec lacks {', '.join(missing)}; a task needs data, dataset and model")
    if not isinstance(body["data"], dict) or "store" not in body["data"]:
        raise ConfigError("data: expected a node with store (a _target_ node), market, benchmark and segments")
    nodes = {"data.store": body["data"]["store"], "dataset": body["dataset"], "model": body["model"]}
    nodes["records"] = body.get("records", [])
    built = {}
    for key, node in nodes.items():
        try:
            built[key] = instantiate(node, _convert_="all")
        except InstantiationException as exc:
            cause = exc.__cause__ or exc
            raise ConfigError(f"{key}: {cause}") from cause
    components = Components(
        store=built["data.store"], dataset=built["dataset"], model=built["model"], records=built["records"]
    )
    try:
        components.dataset.check(components.store)
    except (ConfigError, DataError) as exc:
        raise type(exc)(f"dataset.{exc} (the market and segments come from data.market and data.segments)") from None
    check_job_files(components)
    return components


def check_job_files(components: Any) -> None:
    """Refuse a job whose feature files are cut short or do not fit the calendar, before anything is queued.

    Checks the files the dataset and the backtest records will read, by their size and 4-byte start index.

    Raises:
        StoreFormatError: a file is broken; the message names it and how to repair it.
    """
    from app.data.check import check_feature_files
    from app.evaluation.backtest import BacktestConfig

    store, handler = components.store, components.dataset.handler
    fields = handler.fields()
    files = {(symbol, name) for symbol in store.instruments(handler.market) for name in fields}
    for record in components.records:
        config = getattr(record, "config", None)
        if isinstance(config, BacktestConfig) and "all" in store.markets():
            # what app.evaluation.exchange.load_quote reads of the universe, and of a benchmark outside it
            names = {config.deal_price.lstrip("$"), "close", "factor", "change"}
            files |= {(symbol, name) for symbol in store.instruments("all") for name in names}
            files |= {(config.benchmark, "close")} if config.benchmark else set()
    check_feature_files(store, files)
