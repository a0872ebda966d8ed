"""The launcher's config node (``hydra.launcher.*``), registered as ``hydra/launcher=celery``.

No ``from __future__ import annotations`` here: Hydra imports plugin modules without registering them in
``sys.modules`` first, and dataclasses then cannot resolve string annotations.
"""

from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore


@dataclass
class CeleryLauncherConf:
    _target_: str = "hydra_plugins.qtrain_celery_launcher.launcher.CeleryLauncher"
    pool: Optional[str] = None  # noqa: UP045 - OmegaConf needs typing.Optional here  # task pool name; default: the jobs' experiment_name
    priority: int = 0  # higher is claimed first
    max_attempts: int = 3  # per task, counting lease expiries (killed workers) and errors
    detach: bool = False  # submit and return at once; follow with `qtrain pool status POOL`
    poll_s: float = 1.0
    timeout_s: Optional[float] = None  # noqa: UP045


ConfigStore.instance().store(group="hydra/launcher", name="celery", node=CeleryLauncherConf, provider="qtrain")
