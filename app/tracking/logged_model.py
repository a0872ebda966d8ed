"""A run's model as an MLflow logged model (MLflow 3's "Logged models"): a ``pyfunc`` with a signature.

The MLflow model folder holds ``MLmodel`` (flavour ``python_function`` with ``loader_module`` naming qtrain's
loader, the input/output signature), the requirements, and the model's own saved folder as its ``data``:
``model.json`` plus native files, never a pickle. It is written as ``mlflow.pyfunc.save_model`` would write it
(:func:`write_pyfunc_dir`) and uploaded to the logged model's own artifact location; the run lists it among its
outputs, so the MLflow UI shows it under the run's "Logged models" and ``mlflow.pyfunc.load_model("models:/<model
id>")`` loads it.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import ArtifactNotFoundError, RecorderNotFoundError, TrackingError
from app.tracking.backend import error_code, mlflow_errors

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModel

log = logging.getLogger(__name__)

LOGGED_MODEL_NAME = "model"
MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # mlflow.utils.mlflow_tags.MLFLOW_MODEL_VERSIONS
LOADER_MODULE = "app.models.pyfunc"  # named, not imported: tracking does not load the model libraries


def log_pyfunc_model(
    client: MlflowClient,
    run_id: str,
    experiment_id: str,
    model_dir: Path,
    *,
    feature_names: Sequence[str],
    pip_requirements: Sequence[str],
    model_config: Mapping[str, Any] | None = None,
    model_type: str | None = None,
) -> str:
    """Log the saved model in ``model_dir`` as run ``run_id``'s MLflow model; returns its model id.

    ``feature_names`` (float32 columns) with ``datetime`` and ``instrument`` make the input signature; the
    output (a ``score`` column) is left out of it, its dtype being the model's own (LightGBM float64, torch float32).

    Raises:
        TrackingError: MLflow refused to create, fill or finalise the logged model.
    """
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    columns: list[ColSpec | TensorSpec] = [ColSpec("datetime", "datetime"), ColSpec("string", "instrument")]
    inputs = Schema(columns + [ColSpec("float", str(name)) for name in feature_names])
    with mlflow_errors(f"creating the logged model of run {run_id}"):
        logged = client.create_logged_model(
            experiment_id, name=LOGGED_MODEL_NAME, source_run_id=run_id, model_type=model_type
        )
    with tempfile.TemporaryDirectory(prefix="qtrain-mlflow-model-") as tmp:
        local = Path(tmp) / LOGGED_MODEL_NAME
        meta = Model(artifact_path=logged.artifact_location, run_id=run_id, model_id=logged.model_id)
        meta.model_uuid, meta.signature = logged.model_id, ModelSignature(inputs=inputs)
        write_pyfunc_dir(local, meta, model_dir, pip_requirements, model_config)
        with mlflow_errors(f"uploading the MLflow model of run {run_id} ({logged.artifact_location})"):
            client.log_model_artifacts(logged.model_id, str(local))
    with mlflow_errors(f"linking logged model {logged.model_id} to run {run_id}"):
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    log.info("run <%s>: MLflow model %s logged", run_id, logged.model_id)
    return str(logged.model_id)


def write_pyfunc_dir(
    path: Path,
    meta: Any,
    model_dir: Path,
    pip_requirements: Sequence[str],
    model_config: Mapping[str, Any] | None,
) -> None:
    """Write an MLflow ``pyfunc`` model folder at ``path``: ``data/<model_dir name>`` (a copy of the saved model),
    ``MLmodel`` (``meta``, an ``mlflow.models.Model``, with the ``python_function`` flavour added) and the
    environment files.

    This is what ``mlflow.pyfunc.save_model(loader_module=..., data_path=..., pip_requirements=...)`` writes,
    without its check of the requirements against every installed distribution (~1 s at a process's first
    call, ~0.15 s after that: more than the rest of logging the model).
    """
    import platform

    import mlflow
    import yaml

    python = platform.python_version()
    path.mkdir(parents=True)
    shutil.copytree(model_dir, path / "data" / model_dir.name)
    # the python_function flavour as mlflow.pyfunc.add_to_model writes it (mlflow.pyfunc is not imported here: its
    # PythonModel route pickles, and tracking code never goes near it)
    flavor: dict[str, Any] = {
        "loader_module": LOADER_MODULE,
        "python_version": python,
        "data": f"data/{model_dir.name}",
        "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
        "streamable": False,
    }
    if model_config:
        flavor["config"] = dict(model_config)
    meta.add_flavor("python_function", **flavor)
    meta.model_size_bytes = sum(f.stat().st_size for f in (path / "data").rglob("*") if f.is_file())
    meta.save(str(path / "MLmodel"))
    pip = [f"mlflow=={mlflow.__version__}", *pip_requirements]
    (path / "requirements.txt").write_text("\n".join(pip) + "\n")
    env = {"python": python, "build_dependencies": ["pip"], "dependencies": ["-r requirements.txt"]}
    (path / "python_env.yaml").write_text(yaml.safe_dump(env, default_flow_style=False))
    conda = {
        "name": "mlflow-env",
        "channels": ["conda-forge"],
        "dependencies": [f"python={python}", "pip", {"pip": pip}],
    }
    (path / "conda.yaml").write_text(yaml.safe_dump(conda, default_flow_style=False))


def find_logged_model(client: MlflowClient, run_id: str) -> LoggedModel:
    """The newest READY logged model run ``run_id`` produced.

    Raises:
        RecorderNotFoundError: no run ``run_id``.
        ArtifactNotFoundError: the run logged no MLflow model (trained before models were logged, or failed).
    """
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RecorderNotFoundError(f"no run {run_id!r} in the tracking store; check the run id") from exc
        raise TrackingError(f"reading run {run_id} failed: {exc.message}") from exc
    with mlflow_errors(f"searching the logged models of run {run_id}"):
        found = client.search_logged_models(
            [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'", max_results=50
        )
    ready = sorted(
        (m for m in found if str(m.status) in ("READY", "LoggedModelStatus.READY")),
        key=lambda m: m.creation_timestamp,
    )
    if not ready:
        raise ArtifactNotFoundError(
            f"run {run_id} has no logged MLflow model (status {run.info.status}); only runs trained to the end "
            "by this qtrain log one. Train the task again with `qtrain run ...`"
        )
    return ready[-1]


def register_logged_model(client: MlflowClient, run_id: str, name: str) -> int:
    """Register run ``run_id``'s logged model as a new version of registered model ``name``; returns the version.

    Raises:
        RecorderNotFoundError, ArtifactNotFoundError: see :func:`find_logged_model`.
        TrackingError: the registry refused the request.
    """
    from mlflow.exceptions import MlflowException

    logged = find_logged_model(client, run_id)
    try:
        client.create_registered_model(name)
    except MlflowException as exc:  # created earlier, or by another process just now: what we want
        if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise TrackingError(f"creating registered model {name!r} failed: {exc.message}") from exc
    # The logged model's own folder, not models:/<id>: MLflow's SQL registry resolves that URI with a client of the
    # process-wide tracking URI, which need not be this store (and setting it changes the process's environment).
    source = logged.artifact_location
    with mlflow_errors(f"creating a version of {name!r} from logged model {logged.model_id} ({source})"):
        version = client.create_model_version(name, source, run_id=run_id, model_id=logged.model_id)
    # what mlflow.register_model adds: the logged model lists its versions (the UI links them)
    versions = [*json.loads(logged.tags.get(MODEL_VERSIONS_TAG, "[]")), {"name": name, "version": version.version}]
    with mlflow_errors(f"tagging logged model {logged.model_id} with its registry versions"):
        client.set_logged_model_tags(logged.model_id, {MODEL_VERSIONS_TAG: json.dumps(versions)})
    log.info("model <%s> version %s <- %s", name, version.version, source)
    return int(version.version)
