"""Hydra composition at the edge: find ``conf/``, compose a group option, instantiate it.

Only entry points (the CLI, later the Celery tasks and launcher) use this module; the library below receives
built objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.errors import ConfigError


def conf_dir() -> Path:
    """The ``conf/`` tree shipped beside the ``app`` package.

    Raises:
        ConfigError: it is missing (qtrain was installed without its config tree).
    """
    path = Path(__file__).resolve().parents[1] / "conf"
    if not path.is_dir():
        raise ConfigError(
            f"qtrain's config tree was not found at {path}; install qtrain from its source checkout "
            "(pip install -e . --config-settings editable_mode=compat)."
        )
    return path


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
        f"+dataset={option}",
        f"dataset.handler.market={market}",
        f"dataset.segments={{train:[{start},{end}],valid:[{start},{end}],test:[{start},{end}]}}",
    ]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(overrides=overrides)
    return instantiate(cfg.dataset)


def build_components(spec: Any) -> Any:
    """Instantiate a task spec's ``data``, ``dataset``, ``model`` and ``records`` nodes (``app.workflow.spec``).

    Raises:
        ConfigError: a node cannot be built; the message is the underlying error (key named), not Hydra's
            wrapper.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from app.workflow.train import Components

    body = spec.body
    missing = [k for k in ("data", "dataset", "model") if k not in body]
    if missing:
        raise ConfigError(f"task spec lacks {', '.join(missing)}; a task needs data, dataset and model")
    built = {}
    for key in ("data", "dataset", "model", "records"):
        try:
            built[key] = instantiate(body.get(key, []), _convert_="all")
        except InstantiationException as exc:
            cause = exc.__cause__ or exc
            raise ConfigError(f"{key}: {cause}") from cause
    return Components(store=built["data"], dataset=built["dataset"], model=built["model"], records=built["records"])


def task_spec_from_config(cfg: Any) -> Any:
    """Resolve a composed ``conf/config.yaml`` (minus Hydra's own node) into a :class:`TaskSpec`.

    Raises:
        ConfigError: an interpolation cannot be resolved, or a value is not JSON.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from app.workflow.spec import TaskSpec

    try:
        body = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"config cannot be resolved: {exc}") from None
    assert isinstance(body, dict)
    spec = {str(key): value for key, value in body.items() if key != "hydra"}
    spec["records"] = list((spec.pop("record", None) or {}).values())
    return TaskSpec.from_mapping(spec)
