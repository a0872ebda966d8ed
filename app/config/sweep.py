"""The Hydra callback behind ``qtrain run -m``: sweep progress and, at the end, the summary table.

Each job writes ``result.json`` into its output directory (``app.cli.run.train_job``); at the end of the sweep this
callback reads them back (so it works with any launcher, in-process or not) and prints one row per job and the
mean ± std of Qlib's key metrics per configuration (the jobs' overrides without ``seed``), like Qlib's benchmark
table. The tables are also saved as ``summary.md`` in the sweep directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

_state: dict[str, Any] = {"total": None, "failed": 0}


def begin(total: int | None) -> None:
    """Reset the progress counters (``total``: the number of jobs, when known)."""
    _state.update(total=total, failed=0)


def failed_jobs() -> int:
    """How many jobs of the last sweep failed (as counted by :meth:`SweepSummary.on_multirun_end`)."""
    return int(_state["failed"])


class SweepSummary(Callback):
    """Prints ``[sweep k/N]`` as jobs start and the summary table when the sweep ends."""

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode != RunMode.MULTIRUN:
            return
        total = _state["total"]
        position = f"{hydra_cfg.job.num + 1}/{total}" if total else f"{hydra_cfg.job.num + 1}"
        print(f"[sweep {position}] {' '.join(hydra_cfg.overrides.task) or '(defaults)'}", flush=True)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        results = load_results(sweep_dir)
        if not results:
            return
        text = summary_text(results)
        best = best_trial_text(sweep_dir, results, config.get("objective"))
        text += f"\n\n{best}" if best else ""
        print(text)
        (sweep_dir / "summary.md").write_text(text + "\n")
        print(f"\nsummary saved to {(sweep_dir / 'summary.md').absolute()}", flush=True)
        _state["failed"] = sum(1 for r in results if r.get("status") == "FAILED")


def job_outcome(overrides: list[str], cfg: Any, spec_hash: str, result: Any | None, **extra: Any) -> dict[str, Any]:
    """What ``result.json`` holds for one job: its overrides, task, model, seed and run outcome.

    ``result`` is a :class:`app.workflow.train.TaskResult`, or None for a job submitted but not waited for.
    """
    outcome: dict[str, Any] = {
        "overrides": list(overrides),
        "task_hash": spec_hash,
        "model": str(cfg.model.get("_target_", "?")).rsplit(".", 1)[-1],
        "seed": cfg.get("seed"),
        "run_id": result.run_id if result is not None else "",
        "status": "SUBMITTED" if result is None else ("FAILED" if result.error else "FINISHED"),
        "error": None if result is None else result.error,
        "metrics": {} if result is None else result.metrics,
    }
    return outcome | extra


def write_outcome(output_dir: Path | str, outcome: dict[str, Any]) -> None:
    """Write ``result.json`` into a job's output directory."""
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / "result.json").write_text(json.dumps(outcome, indent=1, default=str))


def load_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job's ``result.json`` under ``sweep_dir``, in job order (a job that died without one is a failure)."""
    out = []
    job_dirs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    for job_dir in sorted(job_dirs, key=lambda p: int(p.name)):
        path = job_dir / "result.json"
        if path.is_file():
            out.append(json.loads(path.read_text()))
        else:
            out.append({"overrides": [], "run_id": "", "status": "FAILED", "error": f"no result in {job_dir}"})
    return out


def summary_text(results: list[dict[str, Any]]) -> str:
    """One table row per job, then mean ± std of the key metrics per configuration (markdown)."""
    import pandas as pd

    from app.tracking.summary import KEY_METRICS, summary_table

    rows = pd.DataFrame(
        {
            "run_id": [str(r.get("run_id") or "")[:8] for r in results],
            "status": [r.get("status", "FAILED") for r in results],
            "config": _config_labels([r.get("overrides", []) for r in results]),
            "model": [r.get("model", "?") for r in results],
            "seed": [r.get("seed", "") for r in results],
        }
    )
    for title, key in KEY_METRICS:
        rows[title] = [float((r.get("metrics") or {}).get(key, float("nan"))) for r in results]
    failed = [f"- job {i}: {r.get('error')}" for i, r in enumerate(results) if r.get("status") == "FAILED"]
    pending = [
        f"- job {i}: {r.get('pending') or 'task ' + str(r.get('task_id'))}"
        for i, r in enumerate(results)
        if r.get("status") == "SUBMITTED"
    ]
    done = sum(r.get("status") == "FINISHED" for r in results)
    parts = [
        f"## sweep: {done} of {len(results)} jobs finished",
        rows.to_markdown(index=False, floatfmt=".4f"),
        "",
        "### mean ± std per configuration (finished jobs)",
        summary_table(rows).to_markdown(index=False) if done else "(none finished)",
    ]
    if failed:
        parts += ["", "### failed jobs", *failed]
    if pending:
        parts += ["", "### submitted, not finished yet", *pending]
    return "\n".join(parts)


def best_trial_text(sweep_dir: Path, results: list[dict[str, Any]], objective: str | None) -> str:
    """The best trial an optimising sweeper reported in ``optimization_results.yaml`` (Optuna's): its objective
    value, its job and run, and its parameters; "" when the sweeper wrote none."""
    from omegaconf import OmegaConf

    path = sweep_dir / "optimization_results.yaml"
    if not path.is_file():
        return ""
    found: Any = OmegaConf.to_container(OmegaConf.load(path))
    if "best_value" not in found:  # several objectives: a Pareto front
        return f"### optimisation results (several objectives): {path}"
    params = [f"{name}={value}" for name, value in (found.get("best_params") or {}).items()]
    jobs = [i for i, r in enumerate(results) if set(params) <= set(r.get("overrides", []))]
    where = f" (job {jobs[0]}, run {results[jobs[0]].get('run_id') or '?'})" if jobs else ""
    return "\n".join(
        [
            f"### best trial: {objective or 'objective'} = {float(found['best_value']):.6g}{where}",
            " ".join(params) or "(no parameters)",
            f"(saved in {path.absolute()})",
        ]
    )


def _config_labels(overrides: list[list[str]]) -> list[str]:
    """Each job's overrides minus ``seed`` and minus those every job shares: what tells configurations apart."""
    shared = set.intersection(*(set(o) for o in overrides)) if overrides else set()
    labels = []
    for job in overrides:
        kept = [o for o in job if o not in shared and o.split("=", 1)[0].lstrip("+~") != "seed"]
        labels.append(" ".join(kept) or "(defaults)")
    return labels
