"""Local trainers: run task specs in this process, in order, recording failures and going on."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from app.dataset.cache import FeatureCache
from app.tracking.manager import ExpManager
from app.workflow.spec import TaskSpec
from app.workflow.train import Components, TaskResult, task_train

log = logging.getLogger(__name__)


class TrainerR:
    """Qlib's ``TrainerR``: sequential, in-process; results come back in task order.

    A failing task leaves a FAILED run (traceback kept) and a :class:`TaskResult` with its error; the others
    still run unless ``fail_fast``.
    """

    def __init__(
        self,
        manager: ExpManager,
        build: Callable[[TaskSpec], Components],
        *,
        experiment_name: str,
        cache: FeatureCache | None = None,
        fail_fast: bool = False,
    ) -> None:
        self.manager, self.build, self.experiment_name = manager, build, experiment_name
        self.cache, self.fail_fast = cache, fail_fast

    def train(self, specs: Sequence[TaskSpec]) -> list[TaskResult]:
        """Train every spec; raises the first error only when ``fail_fast``."""
        results = []
        for i, spec in enumerate(specs):
            try:
                components = self.build(spec)
                results.append(
                    task_train(spec, components, self.manager, experiment_name=self.experiment_name, cache=self.cache)
                )
            except Exception as exc:  # recorded per task; the sweep goes on unless fail_fast
                if self.fail_fast:
                    raise
                log.error("task %d/%d (%s) failed: %s", i + 1, len(specs), spec.hash[:12], exc)
                results.append(TaskResult(self._failed_run(spec), error=f"{type(exc).__name__}: {exc}"))
        return results

    def _failed_run(self, spec: TaskSpec) -> str:
        runs = self.manager.search_records(
            [self.experiment_name], filter_string=f"tags.task_hash = '{spec.hash}'", max_results=1
        )
        return str(runs["run_id"].iloc[0]) if len(runs) else ""
