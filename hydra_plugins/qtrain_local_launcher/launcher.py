"""Hydra's basic launcher, serving each job the config ``qtrain run`` composed when it validated the sweep.

``qtrain run`` composes and checks every job before Hydra starts (``app.config.jobs.validate_jobs``), with the same
call and overrides Hydra's launchers use (``load_sweep_config``); this launcher takes those configs
(``app.config.jobs.job_config``) instead of composing each job a second time, and runs the jobs in order in this
process, exactly as ``hydra/launcher=basic`` does.

No ``from __future__ import annotations`` here: Hydra imports plugin modules without registering them in
``sys.modules`` first, and dataclasses then cannot resolve string annotations.
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import open_dict

log = logging.getLogger(__name__)


@dataclass
class LocalLauncherConf:
    _target_: str = "hydra_plugins.qtrain_local_launcher.launcher.LocalLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="local", node=LocalLauncherConf, provider="qtrain")


class LocalLauncher(BasicLauncher):
    """Runs the jobs one after another in this process, each on its validated config."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from app.config.jobs import job_config
        from app.evaluation.drawing import use_drawing_process
        from app.evaluation.records import wait_for_plots

        setup_globals()
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally")
        use_drawing_process()  # a job's figures are drawn while the next job runs, without holding its GIL
        try:
            returns = self._run_jobs(job_overrides, initial_job_idx, job_config)
        finally:
            wait_for_plots()
            use_drawing_process(False)  # and the drawing process stops
        return returns

    def _run_jobs(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int, job_config: Callable[..., Any]
    ) -> list[JobReturn]:
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        returns = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            cfg = job_config(self.hydra_context.config_loader, self.config, overrides)
            with open_dict(cfg):
                cfg.hydra.job.id = idx
                cfg.hydra.job.num = idx
            returns.append(
                run_job(
                    hydra_context=self.hydra_context,
                    task_function=self.task_function,
                    config=cfg,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            )
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns
