"""An MLflow experiment in Qlib's vocabulary: starts, finds and lists its recorders (runs)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.errors import ConfigError, NoActiveRunError, RecorderNotFoundError, TrackingError
from app.tracking.backend import error_code, mlflow_errors
from app.tracking.recorder import FINISHED, Recorder
from app.tracking.run_search import DEFAULT_ORDER, runs_to_frame, search_all_runs

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)


class Experiment:
    """One experiment and at most one active recorder (Qlib's ``Experiment``)."""

    def __init__(self, client: MlflowClient, experiment_id: str, name: str, *, source_dir: Path | None = None) -> None:
        self._client = client
        self._id = experiment_id
        self._name = name
        self._source_dir = source_dir
        self.active_recorder: Recorder | None = None

    def __repr__(self) -> str:
        return f"Experiment(id={self._id!r}, name={self._name!r})"

    @property
    def id(self) -> str:
        """MLflow experiment id."""
        return self._id

    @property
    def name(self) -> str:
        """Experiment name."""
        return self._name

    @property
    def artifact_location(self) -> str:
        """Where the runs of this experiment keep their artifacts."""
        with mlflow_errors(f"reading experiment {self._name!r} ({self._id})"):
            return str(self._client.get_experiment(self._id).artifact_location)

    @property
    def info(self) -> dict[str, object]:
        """id, name, artifact_location and the active recorder's id (None when none is active)."""
        return {
            "id": self._id,
            "name": self._name,
            "artifact_location": self.artifact_location,
            "active_recorder": None if self.active_recorder is None else self.active_recorder.id,
        }

    def start(
        self,
        *,
        recorder_name: str | None = None,
        resume: bool = False,
        run_id: str | None = None,
        task_hash: str | None = None,
    ) -> Recorder:
        """Start a recorder and make it the active one.

        ``run_id`` resumes that run. ``resume=True`` resumes the latest run named ``recorder_name`` (and
        starts a new one with that name if there is none). Otherwise a new run starts (MLflow names it
        when ``recorder_name`` is None).

        Raises:
            ConfigError: a recorder is already active, or ``resume=True`` without a name or run id.
            RecorderNotFoundError: ``run_id`` is not a run of this experiment.
        """
        if self.active_recorder is not None:
            raise ConfigError(
                f"experiment {self._name!r} already has active recorder {self.active_recorder.id}; "
                "end it first (end() / R.end_exp()) or use a separate ExpManager for concurrent runs"
            )
        if run_id is not None:
            recorder = self.get_recorder(recorder_id=run_id)
        elif resume:
            if recorder_name is None:
                raise ConfigError("resume=True needs recorder_name=<run name> or run_id=<run id> to say what to resume")
            recorder = self.get_recorder(recorder_name=recorder_name, create=True)
        else:
            recorder = self.create_recorder(recorder_name)
        recorder.start_run(task_hash=task_hash)
        self.active_recorder = recorder
        return recorder

    def end(self, status: str = FINISHED) -> None:
        """End the active recorder with ``status`` (no-op when none is active)."""
        if self.active_recorder is None:
            return
        recorder, self.active_recorder = self.active_recorder, None
        recorder.end_run(status)

    def create_recorder(self, recorder_name: str | None = None) -> Recorder:
        """A new recorder; its MLflow run is created by ``start_run``."""
        return Recorder(self._client, self._id, name=recorder_name, source_dir=self._source_dir)

    def get_recorder(
        self, recorder_id: str | None = None, recorder_name: str | None = None, create: bool = False
    ) -> Recorder:
        """The run with ``recorder_id``, else the latest run named ``recorder_name``, else the active recorder.

        With ``create=True`` a missing named recorder is created (not started).

        Raises:
            RecorderNotFoundError: no such run in this experiment (and ``create`` is False).
            NoActiveRunError: neither id nor name given and no recorder is active.
        """
        if recorder_id is not None:
            return Recorder.from_run(self._client, self._get_run(recorder_id), self._source_dir)
        if recorder_name is None:
            if self.active_recorder is None:
                raise NoActiveRunError(
                    f"experiment {self._name!r} has no active recorder; pass recorder_id= or recorder_name="
                )
            return self.active_recorder
        runs = search_all_runs(
            self._client, [self._id], f"attributes.run_name = '{_quote(recorder_name)}'", DEFAULT_ORDER, 1
        )
        if runs:
            return Recorder.from_run(self._client, runs[0], self._source_dir)
        if create:
            return self.create_recorder(recorder_name)
        raise RecorderNotFoundError(
            f"experiment {self._name!r} has no run named {recorder_name!r}; "
            f"known names: {', '.join(sorted({str(r.name) for r in self.list_recorders().values()})) or 'none'}"
        )

    def list_recorders(self, status: str | None = None, filter_string: str = "") -> dict[str, Recorder]:
        """Active (not deleted) runs by run id, newest first; ``status`` keeps only runs in that state."""
        runs = search_all_runs(self._client, [self._id], filter_string)
        return {
            r.info.run_id: Recorder.from_run(self._client, r, self._source_dir)
            for r in runs
            if status is None or r.info.status == status
        }

    def search_records(self, filter_string: str = "", order_by: Sequence[str] | None = DEFAULT_ORDER) -> pd.DataFrame:
        """This experiment's runs as a DataFrame (see :func:`app.tracking.run_search.runs_to_frame`)."""
        runs = search_all_runs(self._client, [self._id], filter_string, order_by)
        return runs_to_frame(runs, {self._id: self._name})

    def _get_run(self, run_id: str) -> Run:
        from mlflow.exceptions import MlflowException

        try:
            run = self._client.get_run(run_id)
        except MlflowException as exc:
            if error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise RecorderNotFoundError(
                    f"no run with id {run_id!r} in the tracking store (experiment {self._name!r}); "
                    "list runs with R.list_recorders() or search_records()"
                ) from exc
            raise TrackingError(f"reading run {run_id} failed: {exc.message}") from exc
        if run.info.experiment_id != self._id:
            raise RecorderNotFoundError(
                f"run {run_id} belongs to experiment id {run.info.experiment_id}, not {self._name!r} ({self._id}); "
                "start it with that experiment's name, or leave experiment_name out"
            )
        if run.info.lifecycle_stage == "deleted":
            raise RecorderNotFoundError(f"run {run_id} of experiment {self._name!r} is deleted; restore it first")
        return run


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
