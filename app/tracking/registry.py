"""MLflow model registry: a run's saved-model folder becomes a numbered version of a registered model."""

from __future__ import annotations

import logging
import posixpath
from typing import TYPE_CHECKING

from app.core.errors import ArtifactNotFoundError, RecorderNotFoundError, TrackingError
from app.tracking.backend import error_code, mlflow_errors

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def register_model(client: MlflowClient, run_id: str, name: str, artifact_path: str = "model") -> int:
    """Register ``<run artifacts>/<artifact_path>`` as a new version of model ``name``; returns the version.

    The registered model is created on first use (safe when several processes race to create it). The
    version's source is the run's artifact folder itself, so nothing is copied or re-serialised.

    Raises:
        RecorderNotFoundError: no run ``run_id``.
        ArtifactNotFoundError: the run has no artifact ``artifact_path`` (the message lists what it has).
        TrackingError: the registry refused the request.
    """
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RecorderNotFoundError(
                f"register_model({name!r}): no run {run_id!r} in the tracking store; check the run id"
            ) from exc
        raise TrackingError(f"register_model({name!r}): reading run {run_id} failed: {exc.message}") from exc
    path = artifact_path.strip("/")
    parent = posixpath.dirname(path) or None
    with mlflow_errors(f"listing artifacts of run {run_id}"):
        held = [info.path for info in client.list_artifacts(run_id, parent)]
    if path not in held:
        raise ArtifactNotFoundError(
            f"register_model({name!r}): run {run_id} has no artifact {path!r} "
            f"(it holds: {', '.join(held) or 'nothing'}); save the model first, "
            f"e.g. recorder.save_objects({posixpath.basename(path)}=model_dir)"
        )
    try:
        client.create_registered_model(name)
        log.info("registered model <%s> created", name)
    except MlflowException as exc:
        # Another process (or an earlier run) created it: that is the state we want.
        if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise TrackingError(f"creating registered model {name!r} failed: {exc.message}") from exc
    source = f"{run.info.artifact_uri.rstrip('/')}/{path}"
    with mlflow_errors(f"creating a version of model {name!r} from run {run_id} ({source})"):
        version = client.create_model_version(name, source, run_id=run_id)
    log.info("model <%s> version %s <- %s", name, version.version, source)
    return int(version.version)
