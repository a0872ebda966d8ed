"""``task_train``: one task spec → one MLflow run (params, spec, curves, model, records, tags) → result.

Objects arrive already built (:class:`Components`): instantiating ``_target_`` nodes happens once, at the
edge (``app.config.build_components``), so this module knows nothing of Hydra or Celery.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from app.data.store import QlibStore
from app.dataset.cache import FeatureCache
from app.dataset.handler import DatasetSpec
from app.evaluation.records import RecordContext
from app.models.base import Model
from app.tracking.manager import ExpManager
from app.workflow.spec import TaskSpec

log = logging.getLogger(__name__)


class Record(Protocol):
    """A record template (SignalRecord, SigAnaRecord, PortAnaRecord)."""

    name: str

    def generate(self, ctx: RecordContext) -> dict[str, float]: ...


@dataclass(frozen=True)
class Components:
    """What a task spec builds: the market store, the dataset spec, an unfitted model and the records."""

    store: QlibStore
    dataset: DatasetSpec
    model: Model
    records: Sequence[Record] = ()


@dataclass(frozen=True)
class TaskResult:
    """The outcome of one task: its MLflow run and the metrics the records logged (or the error)."""

    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"run_id": self.run_id, "metrics": self.metrics, "error": self.error}


def task_train(
    spec: TaskSpec,
    components: Components,
    manager: ExpManager,
    *,
    experiment_name: str,
    cache: FeatureCache | None = None,
) -> TaskResult:
    """Run one task in its own MLflow run; the run ends FAILED (traceback kept) if anything raises.

    Raises:
        Whatever the dataset, model or records raise, after the run has been marked FAILED.
    """
    with manager.start(experiment_name=experiment_name, task_hash=spec.hash) as recorder:
        model = components.model
        recorder.log_params(spec.flat_params())
        recorder.set_tags(model=model.registry_name, queue=model.queue)
        recorder.save_objects(spec=spec.body)
        dataset = components.dataset.build(components.store, cache)
        model.fit(dataset, recorder)
        with tempfile.TemporaryDirectory(prefix="qtrain-model-") as tmp:
            model.save(Path(tmp) / "model")
            recorder.save_objects(model=Path(tmp) / "model")
        metrics: dict[str, float] = {}
        ctx = RecordContext(model, dataset, components.store, recorder)
        for record in components.records:
            log.info("record <%s>", record.name)
            metrics |= record.generate(ctx)
        return TaskResult(recorder.id, metrics)
