"""The sweep objective: one metric (``objective: Rank IC``) that each job of ``qtrain run -m`` returns to a sweeper
that optimises it (Hydra's Optuna sweeper), whichever launcher runs the jobs.

Checked with the rest of the config, before anything trains: the name must be a metric the job's records log, and a
sweeper that needs a number from each job must be given one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from app.core.errors import ConfigError, ObjectiveError

# ``hydra.sweeper._target_`` of sweepers that take a float from each job (hydra-optuna-sweeper's OptunaSweeper)
OPTIMISING_SWEEPERS = ("optuna",)
MAXIMISE_HINT = "Optuna minimises by default: add hydra.sweeper.direction=maximize for IC, ICIR and returns"


def check_objective(cfg: Any, records: Sequence[Any]) -> str | None:
    """The composed config's ``objective``, checked against the metrics ``records`` log; None when unset.

    Raises:
        ConfigError: the name is not a metric of these records, or an optimising sweeper runs without one.
    """
    from omegaconf import OmegaConf

    objective = OmegaConf.select(cfg, "objective", default=None)
    names = logged_metrics(records)
    if objective is None:
        sweeper = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default="") or "")
        if optimises(sweeper):
            choice = OmegaConf.select(cfg, "hydra.runtime.choices", default={}).get("hydra/sweeper", sweeper)
            raise ConfigError(
                f"hydra/sweeper={choice} optimises a number each job returns, and objective is not set: add "
                f"objective='Rank IC' (or another metric the records log: {', '.join(names[:4])}, ...); "
                f"{MAXIMISE_HINT}"
            )
        return None
    if objective not in names:
        raise ConfigError(
            f"objective: {objective!r} is not a metric this job's records log; choose one of: {', '.join(names)}"
        )
    return str(objective)


def logged_metrics(records: Sequence[Any]) -> list[str]:
    """The metric names ``records`` log, in record order (a record without ``metric_names`` logs none we know)."""
    names: list[str] = []
    for record in records:
        declared = getattr(record, "metric_names", None)
        names += list(declared()) if callable(declared) else []
    return names


def optimises(sweeper_target: str) -> bool:
    """Whether the sweeper with this ``_target_`` takes a float from each job."""
    return any(name in sweeper_target.lower() for name in OPTIMISING_SWEEPERS)


def objective_value(objective: str | None, metrics: Mapping[str, float], *, sweeper: str) -> float | None:
    """What a job returns to the sweeper (``sweeper``: its ``_target_``): None without an objective, else the
    metric's value (NaN when the job has none, for a sweeper that takes no value).

    Raises:
        ObjectiveError: an optimising sweeper's job has no finite value (it failed, was only submitted, or the
            metric is NaN): the sweeper records a failed trial (Optuna stops past ``hydra.sweeper.max_failure_rate``).
    """
    if objective is None:
        return None
    value = metrics.get(objective)
    number = math.nan if value is None else float(value)
    if math.isnan(number) and optimises(sweeper):
        why = "the job has none (it failed or was only submitted)" if value is None else "it is NaN for this job"
        raise ObjectiveError(
            f"objective {objective!r}: {why}, so this trial failed (hydra.sweeper.max_failure_rate=0.5 lets "
            "the study go on past failed trials)"
        )
    return number
