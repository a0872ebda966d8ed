"""Benchmark-style tables of an experiment's runs: one row per run, then mean ± std per configuration."""

from __future__ import annotations

import math

import pandas as pd

# (column title, metric key) — Qlib's benchmark table columns; the last three are of the portfolio's return in
# excess of the benchmark, after trading costs, which the titles say (they are also the keys of `report --format json`)
KEY_METRICS: tuple[tuple[str, str], ...] = (
    ("IC", "IC"),
    ("ICIR", "ICIR"),
    ("Rank IC", "Rank IC"),
    ("Rank ICIR", "Rank ICIR"),
    ("Excess Return (ann., with cost)", "1day.excess_return_with_cost.annualized_return"),
    ("Information Ratio (with cost)", "1day.excess_return_with_cost.information_ratio"),
    ("Max Drawdown (excess, with cost)", "1day.excess_return_with_cost.max_drawdown"),
)
MODEL_PARAMS = ("params.model._target_", "params.model.class", "tags.model")


def run_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per run: run id, status, config, model, seed and the key metrics present."""
    rows = pd.DataFrame(index=records.index)
    rows["run_id"] = records["run_id"].str.slice(0, 8)
    rows["status"] = records["status"]
    rows["config"] = _config_labels(records)
    model = next((c for c in MODEL_PARAMS if c in records), None)
    rows["model"] = records[model].fillna("?").astype(str).str.rsplit(".", n=1).str[-1] if model else "?"
    rows["seed"] = records["params.seed"].fillna("") if "params.seed" in records else ""
    for title, key in KEY_METRICS:
        if f"metrics.{key}" in records:
            rows[title] = records[f"metrics.{key}"].astype(float)
    return rows.reset_index(drop=True)


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std (ddof 1) of the key metrics per configuration, over FINISHED runs."""
    done = rows[rows["status"] == "FINISHED"]
    metrics = [title for title, _ in KEY_METRICS if title in done]
    out = []
    for (config, model), group in done.groupby(["config", "model"], sort=True):
        entry: dict[str, object] = {"config": config, "model": model, "runs": len(group)}
        for title in metrics:
            values = group[title].dropna()
            std = values.std(ddof=1) if len(values) > 1 else float("nan")
            entry[title] = _mean_std(values.mean(), std) if len(values) else ""
        out.append(entry)
    return pd.DataFrame(out, columns=["config", "model", "runs", *metrics])


def report_document(rows: pd.DataFrame, summary: pd.DataFrame) -> dict[str, list[dict[str, object]]]:
    """``{"runs": [...], "summary": [...]}`` for JSON: a metric a run lacks is null (JSON has no NaN)."""
    return {"runs": _records(rows), "summary": _records(summary)}


def markdown(frame: pd.DataFrame) -> str:
    """``frame`` as a markdown table, a missing value as an empty cell (not ``nan``)."""
    return frame.astype(object).where(frame.notna(), None).to_markdown(index=False, floatfmt=".4f", missingval="")


def _records(frame: pd.DataFrame) -> list[dict[str, object]]:
    return [{str(k): None if _missing(v) else v for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _missing(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _mean_std(mean: float, std: float) -> str:
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f}±{std:.4f}"


def _config_labels(records: pd.DataFrame) -> pd.Series:
    """Runs whose parameters differ only in the seed (``seed``, ``model.seed``, ...) share a label (``tags.config``
    wins when set).

    A parameter a run does not have (another model's, in a mixed experiment) is left out of its key, not read as
    a value.
    """
    params = [c for c in records.columns if c.startswith("params.") and c.rsplit(".", 1)[-1] != "seed"]
    if "tags.config" in records:
        return records["tags.config"].fillna("").astype(str)
    if not params:
        return pd.Series("run", index=records.index)
    rows = records[params].to_dict(orient="records")
    keys = pd.Series(["|".join(f"{c}={v}" for c, v in row.items() if pd.notna(v)) for row in rows], index=records.index)
    codes = {key: f"c{i + 1}" for i, key in enumerate(dict.fromkeys(keys))}
    return keys.map(codes)
