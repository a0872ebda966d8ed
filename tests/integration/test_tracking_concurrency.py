"""Four processes open a brand-new SQLite tracking DB at the same moment, create the same experiment and
log a batch each. Without the one-time, file-locked initialisation (app.tracking.backend.prepare_tracking_store)
MLflow's schema migration breaks in most of them."""

from __future__ import annotations

import multiprocessing
import queue
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

WORKERS = 4
METRICS = 200


def _worker(uri: str, root: str, barrier: object, results: object, index: int) -> None:
    try:
        import mlflow  # noqa: F401  (imported before the barrier so that all workers start together)

        from app.tracking import ExpManager

        barrier.wait(timeout=120)  # type: ignore[attr-defined]
        manager = ExpManager(uri, root)
        with manager.start(experiment_name="concurrent", recorder_name=f"worker-{index}") as rec:
            rec.log_params(worker=index)
            rec.log_metrics({f"m{i:03d}": float(i) for i in range(METRICS)}, step=index)
        results.put((index, rec.id, ""))  # type: ignore[attr-defined]
    except BaseException as exc:  # reported to the parent, which fails the test with it
        results.put((index, "", f"{type(exc).__name__}: {exc}"))  # type: ignore[attr-defined]


def test_concurrent_first_use_of_a_new_sqlite_store(tmp_path: Path) -> None:
    db = tmp_path / "new" / "mlflow.db"
    uri = f"sqlite:///{db}"
    assert not db.exists()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(uri, str(tmp_path / "arts"), barrier, results, i)) for i in range(WORKERS)
    ]
    for p in procs:
        p.start()
    outcomes = []
    try:
        for _ in procs:
            outcomes.append(results.get(timeout=240))
    except queue.Empty:
        pytest.fail(f"only {len(outcomes)} of {WORKERS} workers reported: {outcomes}")
    finally:
        for p in procs:
            p.join(timeout=60)
    errors = [(i, err) for i, _, err in outcomes if err]
    assert errors == []
    assert all(p.exitcode == 0 for p in procs)

    from app.tracking import ExpManager

    manager = ExpManager(uri, tmp_path / "arts")
    assert [name for name in manager.list_experiments() if name == "concurrent"] == ["concurrent"]
    frame = manager.search_records("concurrent")
    assert sorted(frame["run_id"]) == sorted(run_id for _, run_id, _ in outcomes)
    assert list(frame["status"]) == ["FINISHED"] * WORKERS
    assert sorted(frame["run_name"]) == [f"worker-{i}" for i in range(WORKERS)]
    metric_columns = [c for c in frame.columns if c.startswith("metrics.")]
    assert len(metric_columns) == METRICS
    assert frame[metric_columns].notna().all().all()
