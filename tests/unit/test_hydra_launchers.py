"""Hydra's own launcher test suites against qtrain's local launcher (``hydra/launcher=local``), which must behave
as Hydra's basic launcher for any Hydra app, not only for ``qtrain run``'s validated jobs.

The Celery launcher is not run through them: it does not call the task function in-process but sends each job's
qtrain task spec to the workers, so Hydra's generic apps cannot run on it; tests/integration covers it instead.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from omegaconf.errors import ConfigKeyError, ValidationError

from hydra_plugins.qtrain_celery_launcher.config import CeleryLauncherConf
from hydra_plugins.qtrain_celery_launcher.launcher import CeleryLauncher


# hydra.job.chdir: the suites expect Hydra 1.1's default, which an earlier test's version_base 1.3 (kept process-wide
# by Hydra) would turn off
@pytest.mark.parametrize("launcher_name, overrides", [("local", ["hydra.job.chdir=True"])])
class TestLocalLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({"defaults": [{"override hydra/launcher": "local"}, "_self_"]}, ["-m"])],
)
class TestLocalLauncherIntegration(IntegrationTestSuite):
    pass


def test_the_celery_launcher_reads_its_options_once_from_the_config_dataclass() -> None:
    defaults = CeleryLauncher().conf
    # no second set of defaults in the launcher (Hydra's plugin scan may load config.py as another class object)
    assert asdict(defaults) == asdict(CeleryLauncherConf())
    conf = CeleryLauncher(priority="3", max_attempts=5, poll_s=0.5, detach=True).conf
    assert (conf.priority, conf.max_attempts, conf.poll_s, conf.detach) == (3, 5, 0.5, True)
    with pytest.raises(ValidationError):
        CeleryLauncher(priority="high")
    with pytest.raises(ConfigKeyError):
        CeleryLauncher(attempts=3)
