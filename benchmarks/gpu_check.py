"""Time-series GRU (Qlib's GRU benchmark shape) per-epoch time and peak GPU memory: CUDA with amp off/bf16/fp16
(DataLoader workers, pinned memory) and the CPU for comparison. Without CUDA only the CPU line runs.

Usage: python benchmarks/gpu_check.py [--instruments 300] [--days 1500] [--epochs 3] [--cpu-epochs 1]
                                       [--workers 4] [--cpu-threads N] [--out benchmarks/results/gpu_check.json]

Model: GRUModel(time_series, d_feat=20, hidden 64, 2 layers, lr 2e-4, batch 800), dataset: the 20 Alpha158
columns of the GRU benchmark, step_len 20, RobustZScoreNorm + Fillna / DropnaLabel + CSRankNorm, on a
synthetic market written to a temporary directory. Epoch times come from the per-epoch curve callback, so
they include validation; the first epoch also includes warm-up (cuDNN plans, worker start).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch

from app.data.store import QlibStore
from app.data.synth import SynthSpec, write_synth_market
from app.dataset.dataset import Dataset
from app.dataset.handler import DataHandler, DatasetSpec
from app.dataset.processors import CSRankNorm, DropnaLabel, Fillna, RobustZScoreNorm
from app.features.handlers import GRU20_COLUMNS, alpha158
from app.models.gru import GRUModel


class EpochClock:
    """A curve recorder that notes when each epoch ended."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ends: list[float] = []
        self.valid: list[float] = []

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.ends.append(time.perf_counter())
        self.valid.append(metrics.get("valid.loss", float("nan")))

    def epoch_seconds(self) -> list[float]:
        marks = [self.start, *self.ends]
        return [b - a for a, b in itertools.pairwise(marks)]


def build_dataset(root: Path, instruments: int, days: int) -> Dataset:
    write_synth_market(root, SynthSpec(instruments=instruments, days=days, seed=0))
    store = QlibStore(root)
    cal = store.calendar()
    n = len(cal)

    def day(i: int) -> str:
        return str(cal[i].date())

    t_end, v_end = int(n * 0.6), int(n * 0.8)
    handler = DataHandler(
        features=alpha158(columns=GRU20_COLUMNS),
        market="all",
        start_time=day(0),
        end_time=day(-1),
        fit_start_time=day(60),
        fit_end_time=day(t_end),
        infer_processors=[RobustZScoreNorm(fields_group="feature", clip_outlier=True), Fillna(fields_group="feature")],
        learn_processors=[DropnaLabel(), CSRankNorm(fields_group="label")],
    )
    segments = {
        "train": [day(60), day(t_end)],
        "valid": [day(t_end + 1), day(v_end)],
        "test": [day(v_end + 1), day(-3)],
    }
    return DatasetSpec(handler=handler, segments=segments, step_len=20).build(store)


def run(
    ds: Dataset, *, device: str, amp: Literal["off", "bf16", "fp16"], epochs: int, workers: int
) -> dict[str, object]:
    model = GRUModel(time_series=True, d_feat=20, hidden_size=64, num_layers=2, lr=2e-4, batch_size=800,
                     early_stop=10, n_epochs=epochs, device=device, amp=amp, num_workers=workers)  # fmt: skip
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    clock = EpochClock()
    model.fit(ds, clock)
    started = time.perf_counter()
    scores = model.predict(ds, "test")
    predict_s = time.perf_counter() - started
    seconds = clock.epoch_seconds()
    steady = seconds[1:] or seconds
    row: dict[str, object] = {
        "device": device,
        "amp": amp,
        "workers": workers if cuda else 0,
        "epoch_s": [round(s, 3) for s in seconds],
        "steady_epoch_s": round(statistics.median(steady), 3),
        "predict_s": round(predict_s, 3),
        "valid_loss": [round(v, 5) for v in clock.valid],
        "finite_scores": bool(scores.notna().all()),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
    }
    print(
        f"{device:7s} amp={amp:4s} workers={row['workers']}: epochs {row['epoch_s']} s "
        f"(steady {row['steady_epoch_s']} s), predict {row['predict_s']} s, "
        f"peak GPU {row['peak_gpu_mib']} MiB, valid loss {row['valid_loss']}",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=300)
    parser.add_argument("--days", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cpu-epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--cpu-threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu_check.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ds = build_dataset(Path(tmp) / "store", args.instruments, args.days)
        train_n = len(ds.prepare_ts("train", step_len=20, view="learn"))
        built = time.perf_counter() - started
        print(f"data {args.instruments}x{args.days}: {train_n} training windows, built in {built:.1f} s; "
              f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads", flush=True)  # fmt: skip
        rows = []
        if torch.cuda.is_available():
            print(f"CUDA: {torch.cuda.get_device_name(0)}, cuDNN {torch.backends.cudnn.version()}", flush=True)  # type: ignore[no-untyped-call]
            amps: tuple[Literal["off", "bf16", "fp16"], ...] = ("off", "bf16", "fp16")
            for amp in amps:
                rows.append(run(ds, device="cuda", amp=amp, epochs=args.epochs, workers=args.workers))
        else:
            print("CUDA: not available on this machine; running the CPU line only", flush=True)
        rows.append(run(ds, device="cpu", amp="off", epochs=args.cpu_epochs, workers=0))
    result = {"instruments": args.instruments, "days": args.days, "train_windows": train_n, "rows": rows,
              "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} (total {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
