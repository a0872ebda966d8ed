"""``R``: Qlib's recorder facade for notebooks, scripts and the CLI edge, without Qlib's import-time global.

``R`` builds its :class:`ExpManager` on first use from :func:`app.core.settings.get_settings`
(``MLFLOW_TRACKING_URI``, ``QTRAIN_ARTIFACT_ROOT``), or uses the one given to :meth:`RecorderFacade.configure`.
Library code (``app/workflow``, models, evaluation) never touches ``R``: it is handed an ``ExpManager`` or a
``Recorder``. ::

    from app.tracking.facade import R

    with R.start(experiment_name="lgbm_csi300"):
        R.log_params(model={"kwargs": {"lr": 0.05}})
        R.log_metrics(ic=0.04, step=0)
        R.save_objects(pred=pred_frame)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from app.core.errors import ConfigError, TrackingError
from app.tracking.manager import ExpManager
from app.tracking.recorder import FINISHED, Recorder
from app.tracking.run_search import DEFAULT_ORDER

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from app.core.settings import Settings
    from app.tracking.experiment import Experiment

FIX = "fix MLFLOW_TRACKING_URI / QTRAIN_ARTIFACT_ROOT, or call R.configure(ExpManager(tracking_uri, artifact_root))"


class RecorderFacade:
    """Qlib's ``R`` over one lazily built :class:`ExpManager` (see the module docstring)."""

    def __init__(self, manager: ExpManager | None = None, settings: Callable[[], Settings] | None = None) -> None:
        self._manager = manager
        self._settings = settings
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RecorderFacade(manager={self._manager!r})"

    def configure(self, manager: ExpManager | None) -> None:
        """Use ``manager`` from now on; None goes back to building one from the settings on next use.

        Raises:
            ConfigError: a run of the current manager is still active.
        """
        with self._lock:
            if self._manager is not None and self._manager.active_recorder is not None:
                raise ConfigError(
                    f"R.configure: run {self._manager.active_recorder.id} is still active; end it (R.end_exp()) first"
                )
            self._manager = manager

    @property
    def manager(self) -> ExpManager:
        """The experiment manager, built from the settings on first use.

        Raises:
            ConfigError: the settings are invalid or MLflow refuses the tracking URI.
            TrackingError: the tracking store cannot be opened.
        """
        with self._lock:
            if self._manager is None:
                self._manager = self._build()
            return self._manager

    def _build(self) -> ExpManager:
        if self._settings is None:
            from app.core.settings import get_settings

            loader: Callable[[], Settings] = get_settings
        else:
            loader = self._settings
        try:
            settings = loader()
        except ConfigError as exc:
            raise ConfigError(f"R cannot read its settings: {exc}; {FIX}") from exc
        where = f"MLFLOW_TRACKING_URI={settings.tracking_uri!r}, QTRAIN_ARTIFACT_ROOT={str(settings.artifact_root)!r}"
        try:
            return ExpManager(settings.tracking_uri, settings.artifact_root)
        except ConfigError as exc:
            raise ConfigError(f"R cannot open the tracking store ({where}): {exc}; {FIX}") from exc
        except TrackingError as exc:
            raise TrackingError(f"R cannot open the tracking store ({where}): {exc}") from exc

    # -- runs --------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def start(
        self,
        *,
        experiment_name: str | None = None,
        recorder_name: str | None = None,
        resume: bool = False,
        run_id: str | None = None,
        task_hash: str | None = None,
    ) -> Iterator[Recorder]:
        """``with R.start(...) as recorder:`` ends the run FINISHED; FAILED with tag ``error`` and artifact
        ``traceback.txt`` on an exception; KILLED on KeyboardInterrupt. See :meth:`ExpManager.start`."""
        with self.manager.start(
            experiment_name=experiment_name,
            recorder_name=recorder_name,
            resume=resume,
            run_id=run_id,
            task_hash=task_hash,
        ) as recorder:
            yield recorder

    def start_exp(
        self,
        *,
        experiment_name: str | None = None,
        recorder_name: str | None = None,
        resume: bool = False,
        run_id: str | None = None,
        task_hash: str | None = None,
    ) -> Recorder:
        """Start a run without a ``with`` block; end it with :meth:`end_exp`."""
        return self.manager.start_exp(
            experiment_name=experiment_name,
            recorder_name=recorder_name,
            resume=resume,
            run_id=run_id,
            task_hash=task_hash,
        )

    def end_exp(self, status: str = FINISHED) -> None:
        """End the active run with ``status`` (FINISHED, FAILED or KILLED)."""
        self.manager.end_exp(status)

    def get_recorder(
        self, *, recorder_id: str | None = None, recorder_name: str | None = None, experiment_name: str | None = None
    ) -> Recorder:
        """The active recorder, the run ``recorder_id``, or the latest run ``recorder_name`` of ``experiment_name``.

        Raises:
            NoActiveRunError: nothing given and no run is active.
            RecorderNotFoundError / ExperimentNotFoundError: no such run / experiment.
        """
        if recorder_name is None and experiment_name is None:
            return self.manager.get_recorder(recorder_id)
        experiment = self.manager.get_exp(experiment_name=experiment_name, create=False)
        return experiment.get_recorder(recorder_id=recorder_id, recorder_name=recorder_name)

    # -- logging to the active run -------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, object] | None = None, /, **kwargs: object) -> None:
        """:meth:`Recorder.log_params` on the active run."""
        self.manager.get_recorder().log_params(params, **kwargs)

    def log_metrics(self, metrics: Mapping[str, float] | None = None, step: int | None = None, **kwargs: float) -> None:
        """:meth:`Recorder.log_metrics` on the active run."""
        self.manager.get_recorder().log_metrics(metrics, step, **kwargs)

    def set_tags(self, **tags: object) -> None:
        """:meth:`Recorder.set_tags` on the active run."""
        self.manager.get_recorder().set_tags(**tags)

    def save_objects(self, artifact_path: str | None = None, **objects: object) -> None:
        """:meth:`Recorder.save_objects` on the active run."""
        self.manager.get_recorder().save_objects(artifact_path, **objects)

    def load_object(self, name: str, dst_dir: Path | None = None) -> object:
        """:meth:`Recorder.load_object` on the active run."""
        return self.manager.get_recorder().load_object(name, dst_dir)

    # -- experiments -----------------------------------------------------------------------------------------

    def get_exp(self, *, experiment_name: str | None = None, create: bool = True) -> Experiment:
        """:meth:`ExpManager.get_exp`."""
        return self.manager.get_exp(experiment_name=experiment_name, create=create)

    def list_experiments(self) -> dict[str, Experiment]:
        """Active experiments by name."""
        return self.manager.list_experiments()

    def list_recorders(self, experiment_name: str | None = None) -> dict[str, Recorder]:
        """Runs of ``experiment_name`` (default: the active experiment) by run id."""
        return self.manager.get_exp(experiment_name=experiment_name, create=False).list_recorders()

    def search_records(
        self,
        experiment_names: str | Sequence[str],
        filter_string: str = "",
        order_by: Sequence[str] | None = DEFAULT_ORDER,
    ) -> pd.DataFrame:
        """:meth:`ExpManager.search_records`."""
        return self.manager.search_records(experiment_names, filter_string, order_by)

    def register_model(self, run_id: str, name: str, artifact_path: str = "model") -> int:
        """:meth:`ExpManager.register_model`."""
        return self.manager.register_model(run_id, name, artifact_path)


R = RecorderFacade()
"""The process's facade; builds nothing until first used."""
