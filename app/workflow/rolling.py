"""Merging rolling windows: the windows' test predictions become one signal, analysed in a run of its own.

The windows themselves are ordinary tasks (see :func:`app.dataset.segments.rolling_segments` for how their
segments are cut); this module only joins their results, like Qlib's ``RollingCollector`` + ``RecordUpdater``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import pandas as pd

from app.core.errors import ConfigError
from app.data.store import QlibStore
from app.evaluation.records import RecordContext
from app.tracking.manager import ExpManager
from app.workflow.spec import TaskSpec
from app.workflow.train import Record, TaskResult

log = logging.getLogger(__name__)


def merge_predictions(frames: Sequence[pd.DataFrame], run_ids: Sequence[str]) -> pd.DataFrame:
    """Concatenate the windows' ``pred`` (or ``label``) frames in date order.

    Raises:
        ConfigError: two windows predict the same (datetime, instrument), i.e. their test segments overlap.
    """
    merged = pd.concat(frames).sort_index()
    dup = merged.index.duplicated()
    if dup.any():
        where = merged.index[dup][0]
        raise ConfigError(
            f"rolling windows overlap: more than one of runs {', '.join(run_ids)} predicts {where}; "
            "their test segments must be disjoint"
        )
    return merged


def evaluate_rolling(
    manager: ExpManager,
    results: Sequence[TaskResult],
    *,
    experiment_name: str,
    store: QlibStore,
    records: Sequence[Record],
    rolling: Mapping[str, object],
) -> TaskResult:
    """Merge the windows' predictions and labels into a new run and run the analysis records on them.

    The run is tagged ``rolling=merged`` with the window runs' ids; its task hash covers the window specs'
    hashes (tag ``task_hash``) and the rolling parameters.

    Raises:
        ConfigError: a window failed, or the windows overlap.
    """
    failed = [r for r in results if r.error]
    if failed:
        raise ConfigError(f"{len(failed)} of {len(results)} rolling windows failed (first: {failed[0].error})")
    run_ids = [r.run_id for r in results]
    recorders = [manager.get_recorder(run_id) for run_id in run_ids]
    pred = merge_predictions([_frame(rec.load_object("pred")) for rec in recorders], run_ids)
    label = merge_predictions([_frame(rec.load_object("label")) for rec in recorders], run_ids)
    windows = [rec.list_tags().get("task_hash", "") for rec in recorders]
    task_hash = TaskSpec.from_mapping({"rolling": dict(rolling), "windows": windows}).hash
    # named as its first window (model-handler-seed), then what it is: lgbm-alpha158-seed1-rolling-<hash>
    window_name = (recorders[0].name or "").rpartition("-")[0]
    name = "-".join(part for part in (window_name, "rolling", task_hash[:6]) if part)
    with manager.start(experiment_name=experiment_name, recorder_name=name, task_hash=task_hash) as recorder:
        recorder.set_tags(rolling="merged", rolling_runs=",".join(run_ids), rolling_windows=str(len(run_ids)))
        recorder.log_params({f"rolling.{k}": str(v) for k, v in rolling.items()})
        recorder.save_objects(pred=pred, label=label)
        ctx = RecordContext(None, None, store, recorder)
        metrics: dict[str, float] = {}
        for record in records:
            if record.name == "signal":
                continue
            log.info("rolling record <%s> over %d windows", record.name, len(run_ids))
            metrics |= record.generate(ctx)
        return TaskResult(recorder.id, metrics)


def _frame(obj: object) -> pd.DataFrame:
    if not isinstance(obj, pd.DataFrame):
        raise ConfigError(f"expected a saved frame (pred/label parquet), got {type(obj).__name__}")
    return obj
