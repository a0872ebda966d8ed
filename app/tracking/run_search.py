"""Run searches: every page of an MLflow search, and runs as one DataFrame (``mlflow.search_runs`` layout).

``mlflow.search_runs`` itself reads the process-global tracking URI; this module works on a given client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from app.tracking.backend import mlflow_errors

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Run

PAGE_SIZE = 1000
DEFAULT_ORDER = ("attributes.start_time DESC",)
BASE_COLUMNS = (
    "run_id",
    "experiment_id",
    "experiment_name",
    "run_name",
    "status",
    "start_time",
    "end_time",
    "artifact_uri",
)
FILTER_HINT = (
    "see https://mlflow.org/docs/latest/search-runs.html for the syntax, e.g. "
    "\"metrics.ic > 0.02 and params.`model.kwargs.lr` = '0.1' and tags.task_hash = 'abc'\""
)


def search_all_runs(
    client: MlflowClient,
    experiment_ids: Sequence[str],
    filter_string: str = "",
    order_by: Sequence[str] | None = DEFAULT_ORDER,
    max_results: int | None = None,
) -> list[Run]:
    """All active runs of the experiments matching ``filter_string``, following MLflow's page tokens.

    Raises:
        TrackingError: MLflow rejected the filter or order (the message shows the syntax).
    """
    runs: list[Run] = []
    token: str | None = None
    while True:
        size = PAGE_SIZE if max_results is None else min(PAGE_SIZE, max_results - len(runs))
        if size <= 0:
            return runs
        with mlflow_errors(f"searching runs of experiments {list(experiment_ids)} for {filter_string!r}", FILTER_HINT):
            page = client.search_runs(
                list(experiment_ids),
                filter_string=filter_string,
                max_results=size,
                order_by=list(order_by) if order_by else None,
                page_token=token,
            )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def runs_to_frame(runs: Sequence[Run], experiment_names: Mapping[str, str]) -> pd.DataFrame:
    """One row per run: the base columns, then ``metrics.<key>``, ``params.<key>``, ``tags.<key>`` columns.

    Times are UTC timestamps; a run without a metric/param/tag has NaN/None there.
    """
    import pandas as pd

    rows: list[dict[str, object]] = []
    for run in runs:
        info, data = run.info, run.data
        row: dict[str, object] = {
            "run_id": info.run_id,
            "experiment_id": info.experiment_id,
            "experiment_name": experiment_names.get(info.experiment_id),
            "run_name": info.run_name,
            "status": info.status,
            "start_time": _time(info.start_time),
            "end_time": _time(info.end_time),
            "artifact_uri": info.artifact_uri,
        }
        row.update({f"metrics.{k}": v for k, v in data.metrics.items()})
        row.update({f"params.{k}": v for k, v in data.params.items()})
        row.update({f"tags.{k}": v for k, v in data.tags.items()})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(BASE_COLUMNS)) if not rows else pd.DataFrame(rows)
    extra = sorted(c for c in frame.columns if c not in BASE_COLUMNS)
    ordered = [c for p in ("metrics.", "params.", "tags.") for c in extra if c.startswith(p)]
    return frame[[*BASE_COLUMNS, *ordered]]


def _time(millis: int | None) -> object:
    import pandas as pd

    return pd.NaT if millis is None else pd.Timestamp(millis, unit="ms", tz="UTC")
