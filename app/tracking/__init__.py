"""Experiment tracking: Qlib's recorder vocabulary on MLflow, with artifacts in open formats.

- :class:`ExpManager` (``manager.py``) - experiments of one tracking store, the active run, search, registry.
- :class:`Experiment` (``experiment.py``) and :class:`Recorder` (``recorder.py``) - an experiment and one run.
- ``artifacts.py`` (objects <-> parquet/JSON/PNG/model folders), ``values.py`` (params/metrics rules),
  ``store.py`` (URIs, one-time SQLite setup under a file lock), ``records.py`` (run searches as DataFrames),
  ``registry.py`` (model versions), ``provenance.py`` (hostname/git tags).
- ``facade.py`` - the notebook/CLI ``R``; library code is handed an ``ExpManager`` or ``Recorder`` instead.

Importing this package does not import MLflow (about 2 s) or pandas; they load on first use.
"""

from __future__ import annotations

from app.tracking.backend import prepare_tracking_store
from app.tracking.experiment import Experiment
from app.tracking.manager import DEFAULT_EXPERIMENT, ExpManager
from app.tracking.recorder import MetricPoint, Recorder
from app.tracking.registry import register_model

__all__ = [
    "DEFAULT_EXPERIMENT",
    "ExpManager",
    "Experiment",
    "MetricPoint",
    "Recorder",
    "prepare_tracking_store",
    "register_model",
]
