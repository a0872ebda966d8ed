"""One MLflow run, in Qlib's recorder vocabulary, on ``MlflowClient`` only (no fluent global run state).

Every logging call reaches MLflow synchronously and raises :class:`TrackingError` when MLflow refuses it
(Qlib's asynchronous logger swallows such errors). Params, tags and metrics go through one
``log_batch`` per call (chunked at MLflow's per-batch limits), or, inside :meth:`Recorder.batched`, through as
few ``log_batch`` calls as the whole block needs, as it ends (each call is a database transaction, ~30 ms on
SQLite); objects are stored in open formats
(:mod:`app.tracking.artifacts`), never pickled. Inside :meth:`Recorder.deferred_artifacts` artifacts are
written to one local staging folder laid out like the run's artifact tree and uploaded in one call at the end.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import ArtifactNotFoundError, ConfigError, NoActiveRunError, TrackingError
from app.tracking.artifacts import StagedObject, candidate_names, read_artifact, stage_object
from app.tracking.backend import local_artifact_dir, mlflow_errors
from app.tracking.provenance import run_tags
from app.tracking.values import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_TAGS_PER_BATCH,
    clean_metrics,
    flatten_params,
    tag_values,
    truncate,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, Run, RunTag

log = logging.getLogger(__name__)

RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"
SCHEDULED = "SCHEDULED"  # logged but parked until a later resume (delayed training's begun tasks)
END_STATUSES = (FINISHED, FAILED, KILLED)
ERROR_TAG_LENGTH = 1000
PARAMS_ARE_WRITE_ONCE = (
    "MLflow params are write-once per run: a resumed run must log the same values. Start a new run "
    "(resume=False) for new hyper-parameters, or record changing values as tags or metrics"
)


@dataclass(frozen=True)
class MetricPoint:
    """One logged value of a metric."""

    step: int
    value: float
    timestamp: int


class Recorder:
    """One run of an experiment: params, metrics, tags and artifacts (Qlib's ``Recorder``).

    A recorder made by name has no MLflow run until :meth:`start_run`; one made from a run id or an
    MLflow ``Run`` refers to that run (and :meth:`start_run` resumes it).
    """

    def __init__(
        self,
        client: MlflowClient,
        experiment_id: str,
        *,
        name: str | None = None,
        run_id: str | None = None,
        source_dir: Path | None = None,
    ) -> None:
        self._client = client
        self._experiment_id = experiment_id
        self._name = name
        self._run_id = run_id
        self._source_dir = source_dir
        self._staging: Path | None = None  # the deferred_artifacts folder while one is open
        self._batch: _Batch | None = None  # what a batched() block logged, until it ends
        self._artifact_uri: str | None = None  # fixed for the life of a run, so read once

    @classmethod
    def from_run(cls, client: MlflowClient, run: Run, source_dir: Path | None = None) -> Recorder:
        """A recorder for an existing MLflow run."""
        return cls(
            client, run.info.experiment_id, name=run.info.run_name, run_id=run.info.run_id, source_dir=source_dir
        )

    def __repr__(self) -> str:
        return f"Recorder(id={self._run_id!r}, name={self._name!r}, experiment_id={self._experiment_id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Recorder) and self._run_id is not None and other._run_id == self._run_id

    def __hash__(self) -> int:
        return hash(self._run_id) if self._run_id is not None else id(self)

    @property
    def id(self) -> str:
        """The MLflow run id.

        Raises:
            NoActiveRunError: the recorder was made by name and never started.
        """
        if self._run_id is None:
            raise NoActiveRunError(
                f"recorder {self._name!r} of experiment {self._experiment_id} has no MLflow run yet; "
                "call start_run() (or use ExpManager.start / R.start) before logging or reading it"
            )
        return self._run_id

    @property
    def name(self) -> str | None:
        """The run name (``mlflow.runName``); MLflow picks one when started without a name."""
        return self._name

    @property
    def experiment_id(self) -> str:
        """Id of the experiment the run belongs to."""
        return self._experiment_id

    @property
    def info(self) -> dict[str, object]:
        """id, name, experiment_id, status, start_time/end_time (ms since epoch), artifact_uri (fetched now)."""
        run = self._run()
        return {
            "id": run.info.run_id,
            "name": run.info.run_name,
            "experiment_id": run.info.experiment_id,
            "status": run.info.status,
            "start_time": run.info.start_time,
            "end_time": run.info.end_time,
            "artifact_uri": run.info.artifact_uri,
        }

    @property
    def status(self) -> str:
        """RUNNING, FINISHED, FAILED, KILLED or SCHEDULED, as MLflow has it now."""
        return str(self._run().info.status)

    @property
    def artifact_uri(self) -> str:
        """Root URI of the run's artifacts (``<artifact root>/<experiment>/<run id>/artifacts``)."""
        if self._artifact_uri is None:
            self._artifact_uri = str(self._run().info.artifact_uri)
        return self._artifact_uri

    # -- lifecycle -------------------------------------------------------------------------------------

    def start_run(self, task_hash: str | None = None) -> Recorder:
        """Create the MLflow run (or resume it when it exists) and tag it with hostname, git_commit, task_hash.

        Raises:
            TrackingError: MLflow refused to create or update the run.
        """
        tags = run_tags(self._source_dir, task_hash)
        if self._run_id is None:
            with mlflow_errors(f"creating run {self._name!r} in experiment {self._experiment_id}"):
                run = self._client.create_run(self._experiment_id, tags=tags, run_name=self._name)
            self._run_id, self._name = run.info.run_id, run.info.run_name
            log.info("recorder <%s> (%s) started in experiment %s", self._run_id, self._name, self._experiment_id)
            return self
        with mlflow_errors(f"resuming run {self._run_id}", "check the run id with R.list_recorders()"):
            self._client.update_run(self._run_id, status=RUNNING)
        self.set_tags(**tags)
        log.info("recorder <%s> resumed in experiment %s", self._run_id, self._experiment_id)
        return self

    def end_run(self, status: str = FINISHED) -> None:
        """Mark the run FINISHED, FAILED or KILLED (end time set), or SCHEDULED (parked: no end time).

        Raises:
            ConfigError: another status.
            TrackingError: MLflow refused the update.
        """
        if status == SCHEDULED:
            with mlflow_errors(f"parking run {self.id} as {SCHEDULED}"):
                self._client.update_run(self.id, status=SCHEDULED)
            log.info("recorder <%s> parked: %s", self.id, SCHEDULED)
            return
        if status not in END_STATUSES:
            raise ConfigError(f"end_run(status={status!r}): use one of {', '.join((*END_STATUSES, SCHEDULED))}")
        with mlflow_errors(f"ending run {self.id} as {status}"):
            self._client.set_terminated(self.id, status=status)
        log.info("recorder <%s> ended: %s", self.id, status)

    def record_failure(self, exc: BaseException) -> None:
        """Store why the run failed: tag ``error`` (type and message, truncated) and ``traceback.txt``."""
        summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        self.set_tags(error=truncate("error", summary, ERROR_TAG_LENGTH))
        self.save_objects(traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))

    # -- params, metrics, tags ---------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, object] | None = None, /, **kwargs: object) -> None:
        """Log params; nested mappings are flattened with dots (``model.kwargs.lr``), values stringified.

        Raises:
            ConfigError: over-long or duplicate keys (see :func:`app.tracking.values.flatten_params`).
            TrackingError: MLflow refused them, e.g. a different value for an already logged param.
        """
        from mlflow.entities import Param

        flat = flatten_params({**(params or {}), **kwargs})
        items = [Param(k, v) for k, v in flat.items()]
        if self._batch is not None:
            self._batch.params += items
            return
        for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            chunk = items[start : start + MAX_PARAMS_TAGS_PER_BATCH]
            hint = PARAMS_ARE_WRITE_ONCE if start == 0 else ""
            with mlflow_errors(f"logging params {', '.join(p.key for p in chunk[:5])}... to run {self.id}", hint):
                self._client.log_batch(self.id, params=chunk)

    def log_metrics(self, metrics: Mapping[str, float] | None = None, step: int | None = None, **kwargs: float) -> None:
        """Log metrics at ``step`` (default 0) in one ``log_batch`` (chunked at 1000); NaN kept, inf skipped.

        Implements :class:`app.models.base.CurveRecorder`. Qlib's ``log_metrics(step=..., **metrics)``
        spelling works too.

        Raises:
            ConfigError: a non-numeric value, or a key given both in ``metrics`` and as a keyword.
            TrackingError: MLflow refused the batch (e.g. a key with characters MLflow does not allow).
        """
        from mlflow.entities import Metric

        merged: dict[str, object] = dict(metrics or {})
        both = sorted(set(merged) & set(kwargs))
        if both:
            raise ConfigError(f"log_metrics got {', '.join(both)} both in the mapping and as keywords; pass it once")
        merged.update(kwargs)
        clean = clean_metrics(merged)
        step_value = 0 if step is None else int(step)
        timestamp = int(time.time() * 1000)
        items = [Metric(k, v, timestamp, step_value) for k, v in clean.values.items()]
        if self._batch is not None:
            self._batch.metrics += items
            return
        for start in range(0, len(items), MAX_METRICS_PER_BATCH):
            chunk = items[start : start + MAX_METRICS_PER_BATCH]
            with mlflow_errors(f"logging {len(chunk)} metrics at step {step_value} to run {self.id}"):
                self._client.log_batch(self.id, metrics=chunk)

    def log_series(self, series: Mapping[str, Sequence[float]]) -> None:
        """Log whole curves, value i of each at step i, in as few ``log_batch`` calls as possible (1000 each).

        Implements :class:`app.models.base.CurveRecorder`; same value rules as :meth:`log_metrics`.

        Raises:
            ConfigError: a non-numeric value.
            TrackingError: MLflow refused a batch.
        """
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        steps = max((len(values) for values in series.values()), default=0)
        items = []
        for step in range(steps):
            clean = clean_metrics({k: v[step] for k, v in series.items() if step < len(v)})
            items += [Metric(k, value, timestamp, step) for k, value in clean.values.items()]
        if self._batch is not None:
            self._batch.metrics += items
            return
        for start in range(0, len(items), MAX_METRICS_PER_BATCH):
            chunk = items[start : start + MAX_METRICS_PER_BATCH]
            with mlflow_errors(f"logging {len(chunk)} curve points to run {self.id}"):
                self._client.log_batch(self.id, metrics=chunk)

    def set_tags(self, **tags: object) -> None:
        """Set tags (values stringified, truncated to MLflow's 8000 characters); later values win.

        Raises:
            TrackingError: MLflow refused them.
        """
        from mlflow.entities import RunTag

        items = [RunTag(k, v) for k, v in tag_values(tags).items()]
        if self._batch is not None:
            self._batch.tags |= {tag.key: tag for tag in items}
            return
        for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            with mlflow_errors(f"setting tags on run {self.id}"):
                self._client.log_batch(self.id, tags=items[start : start + MAX_PARAMS_TAGS_PER_BATCH])

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Params, metrics and tags logged inside the block reach MLflow together as it ends (also when it
        raises), in as few ``log_batch`` calls as MLflow's limits allow; later tag values win. Nested blocks
        join the outer one. Errors MLflow raises for them (e.g. a changed param) surface as the block ends.

        Raises:
            TrackingError: MLflow refused a batch (when the block itself raised, that error is logged and the
                block's own exception goes on).
        """
        if self._batch is not None:
            yield
            return
        self._batch = batch = _Batch()
        try:
            yield
        except BaseException:
            self._batch = None
            try:
                batch.send(self)
            except TrackingError as exc:
                log.warning("run %s: what the failed block logged was refused too: %s", self.id, exc)
            raise
        self._batch = None
        batch.send(self)

    def list_metrics(self) -> dict[str, float]:
        """Latest value of every metric (the value at the largest step)."""
        return dict(self._run().data.metrics)

    def list_params(self) -> dict[str, str]:
        """Every param as logged (flattened, stringified)."""
        return dict(self._run().data.params)

    def list_tags(self) -> dict[str, str]:
        """Every tag, MLflow's own (``mlflow.*``) included."""
        return dict(self._run().data.tags)

    def get_metric_history(self, key: str) -> list[MetricPoint]:
        """Every logged value of ``key``, by step then time (empty when never logged)."""
        with mlflow_errors(f"reading metric {key!r} of run {self.id}"):
            history = self._client.get_metric_history(self.id, key)
        points = [MetricPoint(int(m.step), float(m.value), int(m.timestamp)) for m in history]
        return sorted(points, key=lambda p: (p.step, p.timestamp))

    # -- artifacts ---------------------------------------------------------------------------------------

    def save_objects(self, artifact_path: str | None = None, **objects: object) -> None:
        """Store each object as an artifact in an open format chosen by its type, under ``artifact_path``.

        See :mod:`app.tracking.artifacts` for the formats (``pred=frame`` -> ``pred.parquet``). All objects are
        checked and written locally before anything is uploaded, so an unsupported object uploads nothing.
        An artifact of the same name in the run is replaced.

        Raises:
            UnsupportedObjectError: an object with no open format (nothing is pickled).
            ConfigError: a bad name, or an object of a supported type that cannot be written.
            TrackingError: the upload failed.
        """
        prefix = artifact_path.strip("/") if artifact_path else None
        with tempfile.TemporaryDirectory(prefix="qtrain-objects-") as tmp:
            staging = Path(tmp)
            staged = [stage_object(name, obj, staging) for name, obj in objects.items()]
            names = [s.artifact_name for s in staged]
            if len(set(names)) < len(names):
                raise ConfigError(f"save_objects: {', '.join(objects)} map to the same artifact names {names}")
            if self._staging is not None:
                _move_into(staged, self._staging / prefix if prefix else self._staging)
                return
            with mlflow_errors(f"uploading {', '.join(objects)} to run {self.id} ({self.artifact_uri})"):
                if any(not s.is_dir for s in staged):
                    self._client.log_artifacts(self.id, str(staging), prefix)
                for s in staged:
                    if s.is_dir:
                        target = posixpath.join(prefix, s.artifact_name) if prefix else s.artifact_name
                        self._client.log_artifacts(self.id, str(s.local_path), target)

    @contextmanager
    def deferred_artifacts(self) -> Iterator[None]:
        """Hold back uploads: inside the block artifacts go to one local folder, uploaded in one call at the end.

        :meth:`save_objects` and :meth:`log_artifact` write into that folder, laid out as the run's artifact
        tree (same names and paths as without the block); :meth:`load_object`, :meth:`list_artifacts` and
        :meth:`download_artifact` see the staged files first. The folder is uploaded with one
        ``log_artifacts`` call when the block ends, also when it raises (so a failed run keeps what it
        staged; an upload error is then logged and the block's own error raised). A nested block joins the
        outer one.

        Raises:
            TrackingError: the upload failed (after a block that did not raise).
        """
        if self._staging is not None:
            yield
            return
        with tempfile.TemporaryDirectory(prefix="qtrain-deferred-") as tmp:
            self._staging = Path(tmp)
            try:
                yield
            except BaseException:
                self._staging = None
                try:
                    self._upload_staged(Path(tmp))
                except TrackingError:  # never mask the block's error with the upload's
                    log.exception("could not upload the staged artifacts of run <%s>", self.id)
                raise
            self._staging = None
            self._upload_staged(Path(tmp))

    def _upload_staged(self, staging: Path) -> None:
        if not any(staging.iterdir()):
            return
        with mlflow_errors(f"uploading the staged artifacts to run {self.id} ({self.artifact_uri})"):
            self._client.log_artifacts(self.id, str(staging))

    def log_artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        """Upload a local file or folder as it is (Qlib's ``log_artifact``).

        Raises:
            ConfigError: ``local_path`` does not exist.
            TrackingError: the upload failed.
        """
        if not local_path.exists():
            raise ConfigError(f"log_artifact: {local_path} does not exist")
        if self._staging is not None:
            folder = self._staging / artifact_path.strip("/") if artifact_path else self._staging
            _copy_into(local_path, folder / local_path.name)
            return
        with mlflow_errors(f"uploading {local_path} to run {self.id}"):
            if local_path.is_dir():
                target = posixpath.join(artifact_path, local_path.name) if artifact_path else local_path.name
                self._client.log_artifacts(self.id, str(local_path), target)
            else:
                self._client.log_artifact(self.id, str(local_path), artifact_path)

    def log_pyfunc_model(self, model_dir: Path, **options: Any) -> str:
        """Log a saved-model folder as the run's MLflow model (see :func:`app.tracking.logged_model.log_pyfunc_model`
        for ``options``); returns the logged model's id."""
        from app.tracking.logged_model import log_pyfunc_model

        return log_pyfunc_model(self._client, self.id, self._experiment_id, model_dir, **options)

    def list_artifacts(self, path: str | None = None) -> list[str]:
        """Artifact paths directly under ``path`` (the root by default), folders included (staged ones too)."""
        return list(self._listing(path))

    def download_artifact(self, path: str, dst_dir: Path | None = None) -> Path:
        """Copy artifact ``path`` (file or folder) into ``dst_dir`` (default: a new temp folder); returns it."""
        target = Path(tempfile.mkdtemp(prefix="qtrain-artifact-")) if dst_dir is None else dst_dir
        target.mkdir(parents=True, exist_ok=True)
        staged = self._staged(path)
        if staged is not None and path.strip("/"):
            return _copy_into(staged, target / staged.name)
        with mlflow_errors(f"downloading artifact {path!r} of run {self.id}"):
            return Path(self._client.download_artifacts(self.id, path, str(target)))

    def load_object(self, name: str, dst_dir: Path | None = None) -> object:
        """Read back an object saved by :meth:`save_objects` (``"pred"`` or ``"pred.parquet"``, ``"sub/pred"``).

        Files are parsed by extension (parquet -> DataFrame/Series, json -> value, png/bin -> bytes,
        txt -> str). A folder (saved model) is copied to ``dst_dir`` (default: a new temp folder) and its
        local Path returned.

        Raises:
            ArtifactNotFoundError: no such artifact (the message lists what the run holds there).
            TrackingError: the name matches several artifacts (``pred.json`` and ``pred.parquet``).
        """
        chosen, is_dir = self._resolve(name)
        if is_dir:
            return self.download_artifact(chosen, dst_dir)
        staged = self._staged(chosen)
        if staged is not None:
            return read_artifact(staged)
        local = local_artifact_dir(self.artifact_uri)
        if local is not None and (local / chosen).is_file():
            return read_artifact(local / chosen)
        with tempfile.TemporaryDirectory(prefix="qtrain-load-") as tmp:
            return read_artifact(self.download_artifact(chosen, Path(tmp)))

    def _resolve(self, name: str) -> tuple[str, bool]:
        parent = posixpath.dirname(name.strip("/")) or None
        candidates = candidate_names(name.strip("/"))
        staged = self._staged_listing(parent)
        if any(c in staged for c in candidates):  # staged files replace uploaded ones, so they are enough
            return _pick(name, parent, candidates, staged, self.id)
        return _pick(name, parent, candidates, self._listing(parent), self.id)

    def _listing(self, parent: str | None) -> dict[str, bool]:
        """``{path: is_dir}`` directly under ``parent``: the uploaded artifacts, then the staged ones."""
        with mlflow_errors(f"listing artifacts of run {self.id} under {parent or '/'}"):
            listing = {info.path: info.is_dir for info in self._client.list_artifacts(self.id, parent)}
        staged = self._staged_listing(parent)
        return dict(sorted((listing | staged).items())) if staged else listing

    def _staged_listing(self, parent: str | None) -> dict[str, bool]:
        folder = self._staged(parent or "")
        if folder is None or not folder.is_dir():
            return {}
        base = parent.strip("/") if parent else ""
        return {posixpath.join(base, p.name) if base else p.name: p.is_dir() for p in folder.iterdir()}

    def _staged(self, path: str) -> Path | None:
        """The staged file or folder at artifact ``path``, if a deferred block is open and staged it."""
        if self._staging is None:
            return None
        local = self._staging / path.strip("/") if path.strip("/") else self._staging
        return local if local.exists() else None

    def _run(self) -> Run:
        with mlflow_errors(f"reading run {self.id}", "the run may have been deleted"):
            return self._client.get_run(self.id)


def _pick(
    name: str, parent: str | None, candidates: list[str], listing: Mapping[str, bool], run_id: str
) -> tuple[str, bool]:
    """The artifact ``load_object(name)`` means among ``listing`` (the entries under ``parent``)."""
    if candidates[0] in listing:
        return candidates[0], listing[candidates[0]]
    found = [c for c in candidates[1:] if c in listing]
    if len(found) == 1:
        return found[0], listing[found[0]]
    if found:
        raise TrackingError(f"load_object({name!r}) on run {run_id} matches {', '.join(found)}; pass the full name")
    held = ", ".join(sorted(listing)) or "nothing"
    raise ArtifactNotFoundError(
        f"run {run_id} has no artifact {name!r} (under {parent or 'the root'} it holds: {held}); "
        "check the name passed to save_objects, or list them with list_artifacts()"
    )


def _move_into(staged: list[StagedObject], folder: Path) -> None:
    """Put freshly staged objects into the deferred folder, replacing what is there under the same names."""
    folder.mkdir(parents=True, exist_ok=True)
    for obj in staged:
        target = folder / obj.artifact_name
        if obj.is_dir:
            _copy_into(obj.local_path, target)  # a saved-model folder belongs to the caller: copy it
            continue
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(obj.local_path, target)


def _copy_into(source: Path, target: Path) -> Path:
    """Copy a file or folder to ``target``, replacing what is there; returns ``target``."""
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)
    return target


@dataclass
class _Batch:
    """What a :meth:`Recorder.batched` block logged."""

    params: list[Param] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    tags: dict[str, RunTag] = field(default_factory=dict)

    def send(self, recorder: Recorder) -> None:
        """``log_batch`` calls of at most MLflow's limits (params and tags 100 each, 1000 entries in all)."""
        params, metrics, tags = list(self.params), list(self.metrics), list(self.tags.values())
        while params or metrics or tags:
            p, params = params[:MAX_PARAMS_TAGS_PER_BATCH], params[MAX_PARAMS_TAGS_PER_BATCH:]
            t, tags = tags[:MAX_PARAMS_TAGS_PER_BATCH], tags[MAX_PARAMS_TAGS_PER_BATCH:]
            room = MAX_METRICS_PER_BATCH - len(p) - len(t)
            m, metrics = metrics[:room], metrics[room:]
            what = f"logging {len(p)} params, {len(m)} metrics and {len(t)} tags to run {recorder.id}"
            with mlflow_errors(what, PARAMS_ARE_WRITE_ONCE if p else ""):
                recorder._client.log_batch(recorder.id, metrics=m, params=p, tags=t)
