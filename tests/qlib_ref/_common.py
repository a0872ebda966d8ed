"""Shared helpers for the Qlib reference scripts (run inside .qlib-venv only)."""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path


def init_qlib(data_dir: str, region: str = "cn") -> None:
    """qlib.init with every cache off, one kernel, and mlflow pointed at a temp dir.

    - expression_cache / dataset_cache = None: no DiskExpressionCache / DiskDatasetCache,
      so redis is never contacted and nothing is written next to the data.
    - kernels=1 (QLIB_REF_KERNELS to change): joblib runs the per-instrument work sequentially.
    - qlib.init always builds an MLflow experiment manager (C.register); point its
      file store at a throw-away temp dir so nothing lands in the CWD (nothing is
      written unless an experiment is started, which these scripts never do).
    """
    import qlib

    data_path = Path(data_dir).expanduser().resolve()
    if not (data_path / "calendars" / "day.txt").is_file():
        sys.exit(f"error: {data_path} is not a Qlib data dir (no calendars/day.txt)")
    mlruns = Path(tempfile.gettempdir()) / f"qlib_ref_mlruns_{os.getpid()}"
    qlib.init(
        provider_uri=str(data_path),
        region=region,
        expression_cache=None,
        dataset_cache=None,
        kernels=int(os.environ.get("QLIB_REF_KERNELS", "1")),
        logging_level=getattr(logging, os.environ.get("QLIB_REF_LOG", "WARNING").upper()),
        exp_manager={
            "class": "MLflowExpManager",
            "module_path": "qlib.workflow.expm",
            "kwargs": {"uri": mlruns.as_uri(), "default_exp_name": "qlib_ref"},
        },
    )


def write_parquet(df, out: str) -> None:
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out_path)
