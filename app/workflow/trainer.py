"""Local trainers: run task specs in this process, in order, recording failures and going on.

:class:`TrainerR` trains each spec at once; :class:`DelayTrainerR` (Qlib's delayed trainer) only logs each spec
in :meth:`~DelayTrainerR.train` and trains in :meth:`~DelayTrainerR.end_train`. Both keep the same contract: one
result per input, in input order; a failure becomes that task's ``error`` unless ``fail_fast``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, TypeVar

from app.dataset.cache import FeatureCache
from app.tracking.manager import ExpManager
from app.workflow.spec import TaskSpec
from app.workflow.train import Components, TaskResult, begin_task_train, end_task_train, task_train

log = logging.getLogger(__name__)

_Item = TypeVar("_Item", TaskSpec, TaskResult)


class TrainerServices(Protocol):
    """What a process's wiring hands a trainer (:class:`app.runtime.Runtime` is one); a trainer takes what it
    needs, so building any trainer looks the same to its caller."""

    def tracking(self, *, background: bool = False) -> ExpManager: ...

    @property
    def feature_cache(self) -> FeatureCache: ...


@dataclass(frozen=True)
class RunSettings:
    """How one run goes, beside the task specs (not part of their identity)."""

    draw_plots_later: bool = False  # a task's figures are drawn while the next one trains (sweeps, workers)
    limits: Mapping[str, float] = field(default_factory=dict)  # Celery time limits (pool trainers)


@dataclass(frozen=True)
class TrainOutcome:
    """What :meth:`TrainerR.run` came to: one result per spec, in order; ``pending`` says what is left to do and
    how (runs prepared but not fitted, tasks submitted without waiting), None when every task ended."""

    results: list[TaskResult]
    pending: str | None = None


class TrainerR:
    """Qlib's ``TrainerR``: sequential, in-process; results come back in task order.

    A failing task leaves a FAILED run (traceback kept) and a :class:`TaskResult` with its error; the others
    still run unless ``fail_fast``; ``draw_plots_later`` draws each run's record figures on a background thread
    while the next task trains. ``end_train`` returns its input, so ``trainer.end_train(trainer.train(specs))``
    works for every trainer.
    """

    delayed: bool = False

    @classmethod
    def from_services(
        cls, services: TrainerServices, build: Callable[[TaskSpec], Components], *, experiment_name: str,
        run: RunSettings | None = None, **options: Any,
    ) -> Self:  # fmt: skip
        """The trainer with ``options`` (its config) on the process's ``services``: the one way every trainer is
        built by ``qtrain run``, whatever its type."""
        return cls(
            build=build, experiment_name=experiment_name, **cls._wiring(services, run or RunSettings()), **options
        )

    @classmethod
    def _wiring(cls, services: Any, run: RunSettings) -> dict[str, Any]:
        """The constructor arguments this trainer takes from the process's services and the run's settings."""
        manager = services.tracking(background=True)
        return {"manager": manager, "cache": services.feature_cache, "draw_plots_later": run.draw_plots_later}

    def run(self, specs: Sequence[TaskSpec]) -> TrainOutcome:
        """Train ``specs`` as far as this trainer is configured to: all the way, or (a delayed trainer with
        ``end=False``) only begun, with the command that finishes them."""
        results = self.train(specs)
        if self.delayed and not self.end:
            ids = " ".join(r.run_id for r in results)
            return TrainOutcome(results, f"prepared {len(results)} run(s); fit them with: qtrain end {ids}")
        return TrainOutcome(self.end_train(results))

    def __init__(
        self,
        manager: ExpManager,
        build: Callable[[TaskSpec], Components],
        *,
        experiment_name: str,
        cache: FeatureCache | None = None,
        fail_fast: bool = False,
        draw_plots_later: bool = False,
        end: bool = True,
    ) -> None:
        self.manager, self.build, self.experiment_name = manager, build, experiment_name
        self.cache, self.fail_fast, self.draw_plots_later = cache, fail_fast, draw_plots_later
        self.end = end  # a delayed trainer: False makes run() only begin the tasks (`qtrain end RUN_ID...` fits)

    def train(self, specs: Sequence[TaskSpec]) -> list[TaskResult]:
        """Train every spec; raises the first error only when ``fail_fast``."""
        return self._each(specs, self._train_one)

    def end_train(self, results: Sequence[TaskResult]) -> list[TaskResult]:
        """Nothing left to do for a trainer that is not delayed: returns ``results``."""
        return list(results)

    def _train_one(self, spec: TaskSpec) -> TaskResult:
        components = self.build(spec)
        return task_train(
            spec,
            components,
            self.manager,
            experiment_name=self.experiment_name,
            cache=self.cache,
            draw_plots_later=self.draw_plots_later,
        )

    def _each(self, items: Sequence[_Item], step: Callable[[_Item], TaskResult]) -> list[TaskResult]:
        """``step`` on every item in order; an exception becomes that item's error result (or propagates)."""
        results = []
        for i, item in enumerate(items):
            started_ms = int(time.time() * 1000)
            try:
                results.append(step(item))
            except Exception as exc:  # recorded per task; the sweep goes on unless fail_fast
                if self.fail_fast:
                    raise
                run_id = item.run_id if isinstance(item, TaskResult) else self._failed_run(item, started_ms)
                log.error("task %d/%d (run %s) failed: %s", i + 1, len(items), run_id or "none", exc)
                results.append(TaskResult(run_id, error=f"{type(exc).__name__}: {exc}"))
        return results

    def _failed_run(self, spec: TaskSpec, since_ms: int) -> str:
        # Only a run this attempt started: an older run of the same spec is not this failure's run.
        runs = self.manager.search_records(
            [self.experiment_name],
            filter_string=f"tags.task_hash = '{spec.hash}' and attributes.start_time >= {since_ms}",
            max_results=1,
        )
        return str(runs["run_id"].iloc[0]) if len(runs) else ""


class DelayTrainerR(TrainerR):
    """Qlib's ``DelayTrainerR``: ``train`` only begins each task (a SCHEDULED run holding its spec and params);
    ``end_train`` builds and trains them, in order, each in its own run.

    The split lets a sweep be logged (and inspected) before any training, and finished later, or in another
    process, from the run ids alone.
    """

    delayed: bool = True

    def train(self, specs: Sequence[TaskSpec]) -> list[TaskResult]:
        """Begin every spec; the results hold run ids and no metrics. Raises only when ``fail_fast``."""
        return self._each(specs, self._begin_one)

    def end_train(self, results: Sequence[TaskResult]) -> list[TaskResult]:
        """Train the begun tasks of ``results`` in order; results that already hold an error pass through.

        Raises:
            The first task's error, only when ``fail_fast``.
        """
        return self._each(results, self._end_one)

    def _begin_one(self, spec: TaskSpec) -> TaskResult:
        return TaskResult(begin_task_train(spec, self.manager, experiment_name=self.experiment_name))

    def _end_one(self, result: TaskResult) -> TaskResult:
        if result.error is not None:
            return result
        return end_task_train(result.run_id, self.manager, self.build, cache=self.cache)
