"""What the multi-host test reads from inside its client host: the task store and the tracking server, reached only
at the infra host's address (QTRAIN_TASK_STORE, MLFLOW_TRACKING_URI in the environment). Prints one JSON document.

    python multihost_probe.py victim TIMEOUT_S     # a task training on a worker that already finished one, with a
                                                   # checkpoint on its run: {"task", "worker", "run_id", "epochs"}
    python multihost_probe.py outcome DOWNLOAD_DIR # the pool's tasks and the runs, every run's artifacts fetched
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from app.taskpool import open_pool

POOL = "qtrain"


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    found: list[str] = []
    for item in client.list_artifacts(run_id, path):
        found.extend(_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return found


def victim(timeout_s: float) -> dict[str, Any]:
    pool, client = open_pool(os.environ["QTRAIN_TASK_STORE"]), MlflowClient()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tasks = pool.list(POOL) if POOL in pool.pools() else []
        finished_by = {t.worker for t in tasks if t.status == "done"}
        for task in tasks:
            if task.status != "running" or not task.run_id or task.worker not in finished_by:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    state = client.download_artifacts(task.run_id, "checkpoint/state.json", tmp)
                except Exception:
                    continue
                epochs = json.loads(Path(state).read_text())["epochs_done"]
            return {"task": task.id, "worker": task.worker, "run_id": task.run_id, "epochs": epochs}
        time.sleep(0.3)
    raise SystemExit(f"no task trained on a worker that had finished one within {timeout_s}s")


def outcome(download_dir: str) -> dict[str, Any]:
    pool, client = open_pool(os.environ["QTRAIN_TASK_STORE"]), MlflowClient()
    tasks = [
        {"id": t.id, "hash": t.hash, "status": t.status, "attempts": t.attempts, "worker": t.worker,
         "run_id": t.result["run_id"] if t.result else None, "history": t.history}
        for t in pool.list(POOL)
    ]  # fmt: skip
    experiment = client.get_experiment_by_name("qtrain")
    runs = []
    deadline = time.monotonic() + 60  # the figures are drawn after the result is recorded
    for run in client.search_runs([experiment.experiment_id]) if experiment else []:
        run_id = run.info.run_id
        entry: dict[str, Any] = {"run_id": run_id, "status": run.info.status, "hash": run.data.tags.get("task_hash"),
                                 "artifact_uri": run.info.artifact_uri}  # fmt: skip
        if run.info.status == "FINISHED":
            names = _artifacts(client, run_id)
            while not any(p.endswith(".png") for p in names) and time.monotonic() < deadline:
                time.sleep(1)
                names = _artifacts(client, run_id)
            local = Path(client.download_artifacts(run_id, "", str(Path(download_dir) / run_id)))
            entry["artifacts"] = names
            entry["downloaded"] = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
        runs.append(entry)
    return {"tasks": tasks, "runs": runs}


if __name__ == "__main__":
    command, argument = sys.argv[1], sys.argv[2]
    result = victim(float(argument)) if command == "victim" else outcome(argument)
    print(json.dumps(result, default=str))
