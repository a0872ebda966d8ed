"""Hydra's basic sweeper without its own pre-launch composition of every job.

``qtrain run`` composes, resolves and checks every job of the command line before Hydra starts
(``app.config.jobs.validate_jobs``), with one-line errors; the basic sweeper would compose each batch once more only to
find composition errors, before its launcher composes each job again. Everything else is the basic sweeper's.

No ``from __future__ import annotations`` here: Hydra imports plugin modules without registering them in
``sys.modules`` first, and dataclasses then cannot resolve string annotations.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore


@dataclass
class QtrainSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.qtrain_sweeper.sweeper.QtrainSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="qtrain", node=QtrainSweeperConf, provider="qtrain")


class QtrainSweeper(BasicSweeper):
    """The basic sweeper; the jobs were validated by ``qtrain run`` already."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        return None
