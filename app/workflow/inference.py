"""Predictions of a finished run on any dates of any store, made as the run made its own.

A run stores its task spec (``spec.json``) and its model (``model/``: ``model.json`` plus native files). To
predict, the spec's dataset is built again and the stored model scores it:

* dates inside the run's handler window on the run's own store: the dataset is built exactly as training built
  it (same frames, same fitted processors; from the feature cache when it holds them) and the model scores its
  rows of ``start..end``. With no dates given that is the test segment, so the run's ``pred.parquet`` comes back
  bit for bit; dates inside the test segment are scored with the whole segment and cut out, so they are the
  stored rows bit for bit too (a torch model's last bit can depend on the batch a row is scored in).
* other dates or another store: the infer processors are fitted as training fitted them (on the run's store,
  over the handler's window, their statistics from the fit window only), then applied to the features of
  ``start..end`` on the target store (for a windowed model, from ``step_len - 1`` trading days earlier).

Whatever the user got wrong (an unknown run, a run without model or spec, dates outside the store, an unknown
market) is raised before any feature is computed.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from app.core.errors import ArtifactNotFoundError, ConfigError, DateRangeError
from app.data.store import QlibStore
from app.dataset.cache import FeatureCache
from app.dataset.dataset import Dataset, TSDataset
from app.dataset.handler import DataHandler
from app.dataset.views import ProcessedViews
from app.models.base import MODEL_FILE, Model, load_model
from app.tracking.backend import local_artifact_dir
from app.tracking.manager import ExpManager
from app.tracking.recorder import Recorder
from app.workflow.spec import TaskSpec
from app.workflow.train import Components, stored_spec

log = logging.getLogger(__name__)

SEGMENT = "predict"


@dataclass(frozen=True)
class PredictionPlan:
    """A checked request: the built components, the store and dates to predict, and how."""

    components: Components
    store: QlibStore
    start: pd.Timestamp
    end: pd.Timestamp
    as_trained: bool  # True: the training dataset itself (run's store, inside its handler window)


def read_run_spec(manager: ExpManager, run_id: str) -> tuple[Recorder, TaskSpec]:
    """Run ``run_id`` and its task spec, once it is known to hold a model.

    Raises:
        RecorderNotFoundError: no such run.
        ArtifactNotFoundError: the run has no ``model`` or no ``spec`` (not trained to the end by qtrain).
        RunStatusError: the stored spec is not a task spec.
    """
    recorder = manager.get_recorder(run_id)
    held = set(recorder.list_artifacts())
    missing = [name for name, file in (("model", "model"), ("spec", "spec.json")) if file not in held]
    if missing:
        raise ArtifactNotFoundError(
            f"run {run_id} ({recorder.status}) has no {' and no '.join(missing)} artifact (it holds: "
            f"{', '.join(sorted(held)) or 'nothing'}); only a run trained to the end has a model to predict with. "
            "Pick a FINISHED run (qtrain report EXPERIMENT lists them)"
        )
    return recorder, stored_spec(recorder, recorder.status)


def model_folder(recorder: Recorder, scratch: Path) -> Path:
    """The run's saved-model folder: read in place from a local artifact store, else downloaded into ``scratch``."""
    local = local_artifact_dir(recorder.artifact_uri)
    if local is not None and (local / "model" / MODEL_FILE).is_file():
        return local / "model"
    loaded = recorder.load_object("model", dst_dir=scratch)
    assert isinstance(loaded, Path)
    return loaded


def plan_prediction(
    components: Components,
    *,
    data: Path | None = None,
    start: str | None = None,
    end: str | None = None,
) -> PredictionPlan:
    """Check a request against the stores before any feature is computed.

    ``data``: another store (default: the run's). ``start``/``end`` default to the run's test segment; with only
    ``start`` given, ``end`` defaults to the store's last day.

    Raises:
        ConfigError: no dates given and the run has no test segment.
        DateRangeError: a date outside the target store's calendar, or start after end.
        UnknownMarketError: the target store has no instruments file for the handler's market.
    """
    trained_store = components.store
    store = trained_store if data is None else QlibStore(data, freq=trained_store.freq)
    test = components.dataset.segments.get("test")
    if start is None and test is None:
        raise ConfigError(
            f"the run's dataset has no test segment (segments: {', '.join(components.dataset.segments)}); "
            "give the dates to predict with --start YYYY-MM-DD --end YYYY-MM-DD"
        )
    first = start if start is not None else str(test[0])  # type: ignore[index]
    last = end if end is not None else (str(test[1]) if start is None else None)  # type: ignore[index]
    try:
        lo, hi = store.date_slice(first, last)
    except DateRangeError as exc:
        raise DateRangeError(f"--start/--end on store {store.root}: {exc}") from None
    calendar = store.calendar()
    span = (calendar[lo], calendar[hi - 1])
    handler = components.dataset.handler
    store.instruments(handler.market)  # UnknownMarketError names the market and the store
    same_store = Path(store.root).resolve() == Path(trained_store.root).resolve()
    window = (pd.Timestamp(handler.start_time), pd.Timestamp(handler.end_time))
    as_trained = same_store and window[0] <= span[0] and span[1] <= window[1]
    return PredictionPlan(components, store, span[0], span[1], as_trained)


def predict(plan: PredictionPlan, model: Model, cache: FeatureCache | None = None) -> pd.Series:
    """Scores (named ``score``, indexed ``(datetime, instrument)``) of ``model`` on the plan's dates."""
    dataset = plan.components.dataset
    step_len = dataset.step_len
    scored = _scored_span(plan)
    segments = {SEGMENT: list(scored)}
    if plan.as_trained:  # the training dataset itself, with the run's test segment swapped for the dates asked
        built = dataset.build(plan.store, cache)
        views, fingerprint = built.views, built.fingerprint
    else:
        views, fingerprint = _views_on(dataset.handler, plan, step_len, cache), None
    ready = (
        Dataset(views, segments, cache=cache, fingerprint=fingerprint)
        if step_len is None
        else TSDataset(views, segments, step_len=step_len, cache=cache, fingerprint=fingerprint)
    )
    scores = model.predict(ready, SEGMENT)
    if scored != (plan.start, plan.end):
        dates = scores.index.get_level_values("datetime")
        scores = scores[(dates >= plan.start) & (dates <= plan.end)]
    log.info("%d predictions for %s..%s", len(scores), plan.start.date(), plan.end.date())
    return scores


def _scored_span(plan: PredictionPlan) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The dates the model scores: the run's whole test segment when the plan's dates lie inside it (a torch model
    scores rows in batches, and a row's last bit can depend on its batch: scored as the run scored them, they are
    the run's predictions bit for bit), else the plan's dates."""
    test = plan.components.dataset.segments.get("test")
    if plan.as_trained and test is not None:
        lo, hi = pd.Timestamp(test[0]), pd.Timestamp(test[1])
        if lo <= plan.start and plan.end <= hi:
            return lo, hi
    return plan.start, plan.end


def _views_on(
    handler: DataHandler, plan: PredictionPlan, step_len: int | None, cache: FeatureCache | None
) -> ProcessedViews:
    """The infer view of the plan's dates on its store, through infer processors fitted as training fitted them."""
    trained = plan.components.store
    # Fitting: the training run's raw frame, processed in order, each processor fitted on the fit window.
    fitted = ProcessedViews.build(
        handler.raw(trained, cache),
        handler.infer_processors,
        (),
        fit_start=handler.fit_start_time,
        fit_end=handler.fit_end_time,
    )
    calendar = plan.store.calendar()
    first = int(calendar.searchsorted(plan.start, side="left"))
    history = calendar[max(0, first - (step_len or 1) + 1)]  # a window model's look-back
    target = dataclasses.replace(handler, start_time=str(history.date()), end_time=str(plan.end.date()))
    raw = target.raw(plan.store, cache)
    infer = raw
    for proc in handler.infer_processors:  # fitted above; applied, not refitted
        infer = proc(infer)
    return ProcessedViews(raw=raw, infer=infer, learn=infer, fit_start=fitted.fit_start, fit_end=fitted.fit_end)


def predict_run(
    manager: ExpManager,
    run_id: str,
    build: Callable[[TaskSpec], Components],
    *,
    data: Path | None = None,
    start: str | None = None,
    end: str | None = None,
    cache: FeatureCache | None = None,
) -> pd.Series:
    """Run ``run_id``'s model on ``start..end`` of its store (or of the store at ``data``); see the module doc.

    Raises:
        RecorderNotFoundError, ArtifactNotFoundError, RunStatusError: see :func:`read_run_spec`.
        ConfigError, DataError: see :func:`plan_prediction` (all before any feature is computed).
    """
    recorder, spec = read_run_spec(manager, run_id)
    plan = plan_prediction(build(spec), data=data, start=start, end=end)
    with tempfile.TemporaryDirectory(prefix="qtrain-predict-") as tmp:
        return predict(plan, load_model(model_folder(recorder, Path(tmp))), cache)
