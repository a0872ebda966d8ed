"""``task_train``: one task spec → one MLflow run (params, spec, curves, model, records, tags) → result.

Objects arrive already built (:class:`Components`): instantiating ``_target_`` nodes happens once, at the
edge (``app.config.compose.build_components``), so this module knows nothing of Hydra or Celery.

Qlib's delayed training splits the same work in two: :func:`begin_task_train` logs the spec into a run parked
as SCHEDULED, :func:`end_task_train` later resumes that run (by id, possibly in another process) and trains.
Both halves and :func:`task_train` share :func:`_log_task` and :func:`_train_in_run`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from app import __version__
from app.core.errors import ArtifactNotFoundError, ConfigError, RunStatusError
from app.core.progress import report
from app.data.store import QlibStore
from app.dataset.cache import FeatureCache
from app.dataset.dataset import Dataset
from app.dataset.handler import DatasetSpec
from app.evaluation.records import PlotQueue, RecordContext
from app.models.base import Model
from app.tracking.manager import ExpManager
from app.tracking.recorder import FINISHED, RUNNING, SCHEDULED, Recorder
from app.workflow.spec import TaskSpec

log = logging.getLogger(__name__)

STAGE_TAG = "qtrain.stage"  # "begun": spec logged, not trained yet; "done": model and records saved
CACHE_TAG = "feature_cache"  # "hit": every dataset lookup came from the cache; "miss": one was built; "off"
TIMED_STAGES = ("data", "fit", "records")  # TaskResult.timings keys; run metrics time_<stage>_s


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
    """The outcome of one task: its MLflow run, the metrics the records logged (or the error), and the wall
    seconds of each stage (``data``, ``fit``, ``records`` incl. saving the model and the run's artifact upload)."""

    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"run_id": self.run_id, "metrics": self.metrics, "error": self.error, "timings": self.timings}


def task_train(
    spec: TaskSpec,
    components: Components,
    manager: ExpManager,
    *,
    experiment_name: str,
    cache: FeatureCache | None = None,
    on_run: Callable[[str], object] | None = None,
    draw_plots_later: bool = False,
) -> TaskResult:
    """Run one task in its own MLflow run; the run ends FAILED (traceback kept) if anything raises.

    ``on_run(run_id)`` is called as soon as the run exists (the task pool records it, so a later attempt can
    end an abandoned run KILLED). ``draw_plots_later``: the records' figures are drawn and uploaded on a
    background thread after the task returns (see :class:`app.evaluation.records.PlotQueue`).

    Raises:
        Whatever the dataset, model or records raise, after the run has been marked FAILED.
    """
    with contextlib.ExitStack() as stack:

        def open_run() -> Recorder:
            recorder = stack.enter_context(
                manager.start(experiment_name=experiment_name, recorder_name=spec.run_name, task_hash=spec.hash)
            )
            if on_run is not None:
                on_run(recorder.id)
            _log_task(recorder, spec)
            return recorder

        # with the store open and nobody to tell the run id, the run is created while the data stage goes on
        run = LazyRun(open_run, ready=lambda: manager.is_open, background=on_run is None and manager.is_open)
        plots = PlotQueue() if draw_plots_later else None
        try:
            result = _train_in_run(run, components, cache, plots)  # type: ignore[arg-type]  # a Recorder by delegation
        except BaseException:
            run.open()  # the failure is recorded in the run (FAILED, traceback) as the stack unwinds
            raise
        if plots is not None:
            plots.draw_in_background(run.open())
        return result


class LazyRun:
    """A run that is created at its first use once the tracking store is open, or on a thread at once.

    While the store is still opening (``ExpManager(background=True)``: MLflow's import alone takes ~3 s), tags and
    metrics are held back and the stages go on; the run is created, and what was held back logged, at the first
    call made once the store is ready, or at the first call that needs the run itself (artifacts, its id).
    With ``background=True`` (the store is open) the run is created and its spec logged on a thread right away,
    while the caller's data stage runs (~0.2 s of MLflow transactions off a sweep job's path); calls are held
    until it exists, then go to it in order.
    """

    HELD = frozenset({"set_tags", "log_metrics", "log_series"})
    BATCHED = "batched"  # a block while the store opens: its calls are held, then logged in one batch

    def __init__(
        self, open_run: Callable[[], Recorder], *, ready: Callable[[], bool], background: bool = False
    ) -> None:
        self._open_run, self._ready = open_run, ready
        self._recorder: Recorder | None = None
        self._held: list[tuple[str, tuple[object, ...], dict[str, object]]] = []
        self._opening: Future[Recorder] | None = None
        if background:
            self._opening = Future()
            threading.Thread(target=self._open_on_thread, name="qtrain-run-open", daemon=True).start()

    def _open_on_thread(self) -> None:
        assert self._opening is not None
        try:
            self._opening.set_result(self._open_run())
        except BaseException as exc:  # raised again by open(), on the caller's thread
            self._opening.set_exception(exc)

    def open(self) -> Recorder:
        """The run, created now if it does not exist yet (waiting for the store), with the held calls logged."""
        if self._recorder is None:
            recorder = self._open_run() if self._opening is None else self._opening.result()
            self._recorder = recorder
            with recorder.batched():
                for name, args, kwargs in self._held:
                    getattr(recorder, name)(*args, **kwargs)
            self._held.clear()
        return self._recorder

    def _holding(self) -> bool:
        if self._opening is not None:
            return not self._opening.done()
        return not self._ready()

    def __getattr__(self, name: str) -> object:
        if self._recorder is None and name in (*self.HELD, self.BATCHED) and self._holding():
            if name == self.BATCHED:
                return contextlib.nullcontext
            return lambda *args, **kwargs: self._held.append((name, args, kwargs))
        return getattr(self.open(), name)


def begin_task_train(spec: TaskSpec, manager: ExpManager, *, experiment_name: str) -> str:
    """Log ``spec`` (params, ``spec`` artifact, tags) into a new run parked as SCHEDULED; returns its run id.

    Nothing is built or trained: :func:`end_task_train` does that later, from the stored spec.

    Raises:
        ConfigError, TrackingError: MLflow refused the params, tags or artifact (the run ends FAILED).
    """
    with manager.start(
        experiment_name=experiment_name, recorder_name=spec.run_name, task_hash=spec.hash, end_status=SCHEDULED
    ) as recorder:
        _log_task(recorder, spec)
        return recorder.id


def end_task_train(
    run_id: str,
    manager: ExpManager,
    build: Callable[[TaskSpec], Components],
    *,
    cache: FeatureCache | None = None,
) -> TaskResult:
    """Resume the run ``begin_task_train`` made, build its stored spec and train it as :func:`task_train` does.

    The run must be SCHEDULED, or FAILED/KILLED (a retry: it trains again in the same run, replacing the model
    and record artifacts; params are not logged again). The spec is read back from the run before it is
    resumed, so a refused run is left untouched; ``build`` runs inside the resumed run, so a spec that cannot be
    built ends it FAILED.

    Raises:
        RecorderNotFoundError: no run ``run_id``.
        RunStatusError: the run is FINISHED (trained already) or RUNNING (being trained elsewhere), has no
            ``spec`` artifact, or its spec does not match its ``task_hash`` tag.
        Whatever ``build``, the dataset, model or records raise, after the run has been marked FAILED.
    """
    recorder = manager.get_recorder(run_id)
    status = recorder.status
    if status == FINISHED:
        raise RunStatusError(
            run_id,
            status,
            f"run {run_id} is already FINISHED (trained, tag {STAGE_TAG}={recorder.list_tags().get(STAGE_TAG)}); "
            "end_task_train trains a SCHEDULED run once. To train the task again, begin a new run with "
            "begin_task_train(spec, ...) or task_train(...)",
        )
    if status == RUNNING:
        raise RunStatusError(
            run_id,
            status,
            f"run {run_id} is RUNNING: another process may be training it. If that process died, mark the run "
            f"KILLED (manager.client.set_terminated({run_id!r}, 'KILLED')) and call end_task_train again",
        )
    spec = stored_spec(recorder, status)
    with manager.start(run_id=run_id) as resumed:
        return _train_in_run(resumed, build(spec), cache)


def _log_task(recorder: Recorder, spec: TaskSpec) -> None:
    with recorder.batched():
        recorder.log_params(spec.flat_params())
        recorder.save_objects(spec=spec.body)
        recorder.set_tags(**{STAGE_TAG: "begun"})


def stored_spec(recorder: Recorder, status: str) -> TaskSpec:
    """The task spec a run stored (its ``spec`` artifact), checked against the run's ``task_hash`` tag.

    Raises:
        RunStatusError: no spec artifact, one that is not a task spec, or one that no longer hashes to the tag.
    """
    run_id = recorder.id
    try:
        body = recorder.load_object("spec")
    except ArtifactNotFoundError as exc:
        raise RunStatusError(
            run_id,
            status,
            f"run {run_id} has no 'spec' artifact, so it was not made by begin_task_train; "
            "begin the task with begin_task_train(spec, ...) and end that run",
        ) from exc
    if not isinstance(body, dict):
        raise RunStatusError(
            run_id, status, f"run {run_id}: artifact 'spec' holds a {type(body).__name__}, not a mapping"
        )
    try:
        spec = TaskSpec.from_mapping(body)
    except ConfigError as exc:
        raise RunStatusError(run_id, status, f"run {run_id}: artifact 'spec' is not a task spec ({exc})") from exc
    tagged = recorder.list_tags().get("task_hash")
    if tagged != spec.hash:
        raise RunStatusError(
            run_id,
            status,
            f"run {run_id}: the stored spec hashes to {spec.hash[:12]} but the run's task_hash tag is "
            f"{(tagged or 'missing')[:12]}; the spec artifact or the tag was changed after begin_task_train. "
            "Begin the task again with begin_task_train",
        )
    return spec


def _train_in_run(
    recorder: Recorder, components: Components, cache: FeatureCache | None, plots: PlotQueue | None = None
) -> TaskResult:
    """Everything after the logging: dataset, fit, model artifact, records, tags, per-stage timings."""
    model = components.model
    timings: dict[str, float] = {}
    lookups = (cache.hits, cache.misses) if cache is not None else (0, 0)
    # What each stage logs reaches MLflow in one log_batch as the stage ends (every call is a transaction).
    with recorder.batched():
        recorder.set_tags(model=model.registry_name, queue=model.queue)
        with _stage(recorder, timings, "data"):
            dataset = components.dataset.build(components.store, cache)
        recorder.set_tags(**{CACHE_TAG: _cache_outcome(cache, lookups)})
    with _stage(recorder, timings, "fit") as extra:  # not batched: a torch model's epochs show as they end
        model.fit(dataset, recorder)
        parts = getattr(model, "fit_timings", None) or {}  # e.g. LightGBM's boosting alone: time_boost_s
        extra.update({f"time_{name}_s": seconds for name, seconds in parts.items()})
    metrics: dict[str, float] = {}
    # The model and every record's artifacts go up in one upload as the block ends (also when it raises).
    with recorder.batched():
        with (
            _stage(recorder, timings, "records"),
            recorder.deferred_artifacts(),
            tempfile.TemporaryDirectory(prefix="qtrain-model-") as tmp,
        ):
            model.save(Path(tmp) / "model")
            recorder.save_objects(model=Path(tmp) / "model")
            # the MLflow model (~0.1 s of MLflow transactions) is logged while the records run
            # (the run exists by now: save_objects made a LazyRun create it, so the thread only uses it)
            log_model = functools.partial(log_mlflow_model, recorder, Path(tmp) / "model", dataset, model.registry_name)
            with ThreadPoolExecutor(1, thread_name_prefix="qtrain-mlflow-model") as alongside:
                logged = alongside.submit(log_model)
                ctx = RecordContext(model, dataset, components.store, recorder, plots)
                for record in components.records:
                    log.info("record <%s>", record.name)
                    metrics |= record.generate(ctx)
            logged.result()  # what logging the model raised, raised here
        recorder.set_tags(**{STAGE_TAG: "done"})
    return TaskResult(recorder.id, metrics, timings=timings)


def log_mlflow_model(recorder: Recorder, model_dir: Path, dataset: Dataset, model_type: str) -> str:
    """Log the saved model as the run's MLflow ``pyfunc`` model, its signature the dataset's feature columns
    (the input :mod:`app.models.pyfunc` scores); returns the logged model's id."""
    step_len = getattr(dataset, "step_len", None)
    return recorder.log_pyfunc_model(
        model_dir,
        feature_names=[str(name) for name in dataset.views.infer["feature"].columns],
        pip_requirements=[f"qtrain=={__version__}"],
        model_config={"step_len": step_len} if step_len is not None else None,
        model_type=model_type,
    )


@contextmanager
def _stage(recorder: Recorder, timings: dict[str, float], name: str) -> Iterator[dict[str, float]]:
    """Times the block; its seconds (``time_<name>_s``) and the metrics the block puts in the yielded dict are
    logged as soon as it ends, so a run that fails later still shows where its time went."""
    started = time.perf_counter()
    extra: dict[str, float] = {}
    report(stage=name, step="", done=0, total=0, unit="", note="")
    yield extra
    timings[name] = time.perf_counter() - started
    recorder.log_metrics({f"time_{name}_s": timings[name], **extra})
    log.info("stage <%s> took %.2fs", name, timings[name])


def _cache_outcome(cache: FeatureCache | None, before: tuple[int, int]) -> str:
    if cache is None:
        return "off"
    if cache.misses > before[1]:
        return "miss"
    return "hit" if cache.hits > before[0] else "off"
