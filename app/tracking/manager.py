"""The experiment manager (Qlib's ``ExpManager``): experiments of one tracking store and the active run.

Built explicitly from a tracking URI and an artifact root (``ExpManager(settings.tracking_uri,
settings.artifact_root)``) and passed to whoever logs; there is no global instance. Library code uses it
(or a :class:`Recorder`) directly; the notebook-style ``R`` in :mod:`app.tracking.facade` wraps one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.credentials import mask_url
from app.core.errors import ConfigError, ExperimentNotFoundError, NoActiveRunError, RecorderNotFoundError, TrackingError
from app.tracking.backend import (
    check_tracking_location,
    default_artifact_root,
    error_code,
    experiment_artifact_location,
    make_client,
    mlflow_errors,
    prepare_tracking_store,
)
from app.tracking.experiment import Experiment
from app.tracking.recorder import FAILED, FINISHED, KILLED, SCHEDULED, Recorder
from app.tracking.registry import register_model
from app.tracking.run_search import DEFAULT_ORDER, runs_to_frame, search_all_runs

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Experiment as MlflowExperiment

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "qtrain"
# The experiment's kind as MLflow records it: the value its experiment-type selector stores for classic model
# training (MLflow 3.17's UI itself takes GenAI or model-training mode from the link: backend.UI_MODEL_TRAINING)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


class ExpManager:
    """Experiments of the tracking store at ``tracking_uri``; at most one active experiment/run at a time.

    The constructor prepares a ``sqlite:///`` store once under a file lock (see
    :func:`app.tracking.backend.prepare_tracking_store`); with ``background=True`` it does so on a thread and the
    first use of the store waits for it (and raises what opening it raised). New experiments keep their artifacts under
    ``<artifact_root>/<experiment name>`` (for SQLite without a root: ``<db dir>/mlartifacts``).

    Raises:
        ConfigError: MLflow refuses ``tracking_uri``.
        TrackingError: the SQLite DB cannot be created or is too old.
    """

    def __init__(
        self,
        tracking_uri: str,
        artifact_root: Path | str | None = None,
        *,
        source_dir: Path | None = None,
        background: bool = False,
    ) -> None:
        if not tracking_uri.strip():
            raise ConfigError("tracking URI is empty; set MLFLOW_TRACKING_URI, e.g. sqlite:///mlflow.db")
        check_tracking_location(tracking_uri)
        self._uri = tracking_uri
        self._artifact_root = default_artifact_root(tracking_uri, artifact_root)
        self._source_dir = source_dir
        self.active_experiment: Experiment | None = None
        self._opening: Future[MlflowClient] = Future()
        if background:  # importing MLflow takes ~3 s; the caller goes on (data, fit) meanwhile
            threading.Thread(target=self._open, args=(artifact_root,), name="mlflow-open", daemon=True).start()
        else:
            self._open(artifact_root)
            self._opening.result()

    def _open(self, artifact_root: Path | str | None) -> None:
        try:
            prepare_tracking_store(self._uri, artifact_root)
            self._opening.set_result(make_client(self._uri))
        except BaseException as exc:  # re-raised by the first caller that needs the client
            self._opening.set_exception(exc)

    @property
    def is_open(self) -> bool:
        """True once the tracking store is ready (or failed to open): using it no longer waits."""
        return self._opening.done()

    @property
    def _client(self) -> MlflowClient:
        return self._opening.result()

    def __repr__(self) -> str:
        return f"ExpManager(uri={mask_url(self._uri)!r}, artifact_root={self._artifact_root!r})"

    @property
    def uri(self) -> str:
        """The tracking URI."""
        return self._uri

    @property
    def artifact_root(self) -> str | None:
        """Root under which new experiments keep artifacts (None: the tracking server decides)."""
        return self._artifact_root

    @property
    def client(self) -> MlflowClient:
        """The underlying ``MlflowClient`` (tracking and registry on the same URI)."""
        return self._client

    @property
    def active_recorder(self) -> Recorder | None:
        """The run started by :meth:`start_exp`, until :meth:`end_exp`."""
        return None if self.active_experiment is None else self.active_experiment.active_recorder

    def start_exp(
        self,
        *,
        experiment_name: str | None = None,
        recorder_name: str | None = None,
        resume: bool = False,
        run_id: str | None = None,
        task_hash: str | None = None,
    ) -> Recorder:
        """Get or create the experiment and start (or resume) a recorder in it; returns the recorder.

        ``experiment_name`` defaults to the experiment of ``run_id`` when resuming by id, else ``"qtrain"``.
        See :meth:`Experiment.start` for ``recorder_name``/``resume``/``run_id``.

        Raises:
            ConfigError: a run is already active in this manager.
            RecorderNotFoundError: ``run_id`` is unknown or belongs to another experiment.
        """
        if self.active_experiment is not None:
            active = self.active_recorder
            raise ConfigError(
                f"run {active.id if active else '?'} of experiment {self.active_experiment.name!r} is still active; "
                "end it first (end_exp / leave the `with R.start(...)` block) or use a separate ExpManager"
            )
        if experiment_name is None and run_id is not None:
            experiment = self.get_exp(experiment_id=self.get_recorder(run_id).experiment_id, create=False)
        else:
            experiment = self.get_exp(experiment_name=experiment_name or DEFAULT_EXPERIMENT)
        recorder = experiment.start(recorder_name=recorder_name, resume=resume, run_id=run_id, task_hash=task_hash)
        self.active_experiment = experiment
        return recorder

    def end_exp(self, status: str = FINISHED) -> None:
        """End the active run with ``status`` (FINISHED, FAILED, KILLED, or SCHEDULED to park it); no-op when
        nothing is active."""
        if self.active_experiment is None:
            return
        experiment, self.active_experiment = self.active_experiment, None
        experiment.end(status)

    @contextlib.contextmanager
    def start(
        self,
        *,
        experiment_name: str | None = None,
        recorder_name: str | None = None,
        resume: bool = False,
        run_id: str | None = None,
        task_hash: str | None = None,
        end_status: str = FINISHED,
    ) -> Iterator[Recorder]:
        """``with manager.start(...) as recorder:`` ends the run ``end_status`` (FINISHED, or SCHEDULED to park
        it for a later resume), FAILED (storing the traceback as tag ``error`` + ``traceback.txt``) on an
        exception, KILLED on KeyboardInterrupt; errors propagate.

        Raises:
            ConfigError: ``end_status`` is neither FINISHED nor SCHEDULED (checked before the run starts).
        """
        if end_status not in (FINISHED, SCHEDULED):
            raise ConfigError(f"start(end_status={end_status!r}): use {FINISHED} or {SCHEDULED}")
        recorder = self.start_exp(
            experiment_name=experiment_name,
            recorder_name=recorder_name,
            resume=resume,
            run_id=run_id,
            task_hash=task_hash,
        )
        try:
            yield recorder
        except KeyboardInterrupt:
            self.end_exp(KILLED)
            raise
        except BaseException as exc:
            try:
                recorder.record_failure(exc)
            except Exception:  # never mask the training error with a tracking error
                log.exception("could not store the failure of run <%s>", recorder.id)
            finally:
                self.end_exp(FAILED)
            raise
        self.end_exp(end_status)

    def create_exp(self, experiment_name: str) -> Experiment:
        """Create an experiment with its artifact location under the artifact root (race-safe: when another
        process creates it at the same moment, that one is returned).

        Raises:
            TrackingError: MLflow refused the name.
        """
        from mlflow.exceptions import MlflowException

        location = experiment_artifact_location(self._artifact_root, experiment_name)
        try:
            experiment_id = self._client.create_experiment(
                experiment_name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
            )
        except MlflowException as exc:
            if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise TrackingError(f"creating experiment {experiment_name!r} failed: {exc.message}") from exc
            return self.get_exp(experiment_name=experiment_name, create=False)
        log.info("experiment <%s> created (id %s, artifacts at %s)", experiment_name, experiment_id, location)
        return Experiment(self._client, experiment_id, experiment_name, source_dir=self._source_dir)

    def get_exp(
        self, *, experiment_name: str | None = None, experiment_id: str | None = None, create: bool = True
    ) -> Experiment:
        """The experiment with ``experiment_id`` or ``experiment_name`` (created by name when ``create``);
        with neither, the active experiment. With ``create``, an experiment without the MLflow experiment-kind tag
        is tagged as model training (:data:`EXPERIMENT_KIND_TAG`), as a new one is.

        Raises:
            ExperimentNotFoundError: not found (and not created), or deleted.
            NoActiveRunError: neither given and no experiment is active.
        """
        if experiment_id is None and experiment_name is None:
            if self.active_experiment is None:
                raise NoActiveRunError("no active experiment; pass experiment_name= or experiment_id=")
            return self.active_experiment
        found = self._find(experiment_name, experiment_id)
        if found is None:
            if create and experiment_name is not None:
                return self.create_exp(experiment_name)
            what = f"id {experiment_id!r}" if experiment_id is not None else f"name {experiment_name!r}"
            known = ", ".join(sorted(self.list_experiments())) or "none"
            raise ExperimentNotFoundError(f"no experiment with {what} at {mask_url(self._uri)}; known: {known}")
        if found.lifecycle_stage == "deleted":
            raise ExperimentNotFoundError(
                f"experiment {found.name!r} (id {found.experiment_id}) at {mask_url(self._uri)} is deleted; "
                f"restore it with `mlflow experiments restore --experiment-id {found.experiment_id}` "
                "or use another name"
            )
        # made by an older qtrain or another client; a lookup that may not create (qtrain report) writes nothing
        if create and EXPERIMENT_KIND_TAG not in found.tags:
            with mlflow_errors(f"tagging experiment {found.name!r} as model training"):
                self._client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        if self.active_experiment is not None and self.active_experiment.id == found.experiment_id:
            return self.active_experiment
        return Experiment(self._client, found.experiment_id, found.name, source_dir=self._source_dir)

    def list_experiments(self) -> dict[str, Experiment]:
        """Active experiments by name."""
        with mlflow_errors(f"listing experiments at {mask_url(self._uri)}"):
            found = self._client.search_experiments()
        return {e.name: Experiment(self._client, e.experiment_id, e.name, source_dir=self._source_dir) for e in found}

    def search_records(
        self,
        experiment_names: str | Sequence[str],
        filter_string: str = "",
        order_by: Sequence[str] | None = DEFAULT_ORDER,
        max_results: int | None = None,
    ) -> pd.DataFrame:
        """Runs of the named experiments as a DataFrame: run_id, experiment_id, experiment_name, run_name,
        status, start_time, end_time, artifact_uri, then ``metrics.*``, ``params.*``, ``tags.*`` columns.

        Raises:
            ExperimentNotFoundError: an unknown experiment name.
            TrackingError: MLflow rejected the filter or order.
        """
        names = [experiment_names] if isinstance(experiment_names, str) else list(experiment_names)
        ids = {self.get_exp(experiment_name=n, create=False).id: n for n in names}
        runs = search_all_runs(self._client, list(ids), filter_string, order_by, max_results)
        return runs_to_frame(runs, ids)

    def get_recorder(self, run_id: str | None = None) -> Recorder:
        """The recorder of run ``run_id`` in any experiment, or the active recorder when None.

        Raises:
            RecorderNotFoundError: no such run.
            NoActiveRunError: ``run_id`` is None and no run is active.
        """
        if run_id is None:
            if self.active_recorder is None:
                raise NoActiveRunError("no active run; start one with start_exp()/start() or pass run_id=")
            return self.active_recorder
        from mlflow.exceptions import MlflowException

        try:
            run = self._client.get_run(run_id)
        except MlflowException as exc:
            if error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise RecorderNotFoundError(f"no run {run_id!r} at {mask_url(self._uri)}; check the run id") from exc
            raise TrackingError(f"reading run {run_id} at {mask_url(self._uri)} failed: {exc.message}") from exc
        return Recorder.from_run(self._client, run, self._source_dir)

    def register_model(self, run_id: str, name: str, artifact_path: str = "model") -> int:
        """Register the run's ``artifact_path`` folder as a new version of model ``name``; returns the version.

        See :func:`app.tracking.registry.register_model`.
        """
        return register_model(self._client, run_id, name, artifact_path)

    def _find(self, name: str | None, experiment_id: str | None) -> MlflowExperiment | None:
        from mlflow.exceptions import MlflowException

        try:
            if experiment_id is not None:
                return self._client.get_experiment(experiment_id)
            return self._client.get_experiment_by_name(str(name))
        except MlflowException as exc:
            if error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            what = name if experiment_id is None else experiment_id
            raise TrackingError(
                f"looking up experiment {what!r} at {mask_url(self._uri)} failed: {exc.message}"
            ) from exc
