"""``hydra/launcher=celery``: each job of a sweep becomes a task-pool task that Celery workers train; the work is in
``_core.py``, the options (``hydra.launcher.*``, read once here) in ``config.py``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.qtrain_celery_launcher.config import CeleryLauncherConf


class CeleryLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        merged = OmegaConf.merge(OmegaConf.structured(CeleryLauncherConf), params)  # type-checked, defaults filled
        self.conf: CeleryLauncherConf = OmegaConf.to_object(merged)  # type: ignore[assignment]
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.qtrain_celery_launcher import _core

        return _core.launch(self, job_overrides, initial_job_idx)
