"""Benchmark-style tables of an experiment's runs: one row per run, then mean ± std per configuration."""

from __future__ import annotations

import math

import pandas as pd

# (column title, metric key) — Qlib's benchmark table columns
KEY_METRICS: tuple[tuple[str, str], ...] = (
    ("IC", "IC"),
    ("ICIR", "ICIR"),
    ("Rank IC", "Rank IC"),
    ("Rank ICIR", "Rank ICIR"),
    ("Annualized Return", "1day.excess_return_with_cost.annualized_return"),
    ("Information Ratio", "1day.excess_return_with_cost.information_ratio"),
    ("Max Drawdown", "1day.excess_return_with_cost.max_drawdown"),
)
SEED_PARAMS = ("params.seed",)
MODEL_PARAMS = ("params.model._target_", "params.model.class", "tags.model")


def run_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per run: run id, status, config, model, seed and the key metrics present."""
    rows = pd.DataFrame(index=records.index)
    rows["run_id"] = records["run_id"].str.slice(0, 8)
    rows["status"] = records["status"]
    rows["config"] = _config_labels(records)
    model = next((c for c in MODEL_PARAMS if c in records), None)
    rows["model"] = records[model].astype(str).str.rsplit(".", n=1).str[-1] if model else "?"
    rows["seed"] = records.get("params.seed", "")
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


def _mean_std(mean: float, std: float) -> str:
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f}±{std:.4f}"


def _config_labels(records: pd.DataFrame) -> pd.Series:
    """Runs whose parameters differ only in the seed share a label (``tags.config`` wins when set)."""
    params = [c for c in records.columns if c.startswith("params.") and c not in SEED_PARAMS]
    if "tags.config" in records:
        return records["tags.config"].fillna("").astype(str)
    if not params:
        return pd.Series("run", index=records.index)
    keys = records[params].astype(str).agg("|".join, axis=1)
    codes = {key: f"c{i + 1}" for i, key in enumerate(dict.fromkeys(keys))}
    return keys.map(codes)
